"""The ablation report: every table, verdict and sentence of reports/ablation.md, computed from the arms' result JSONs
that bench/ablation.py (the runner) writes under <workdir>/results, and the statistics the verdicts weigh (bootstraps
over the shared test images combined with the seed spread).

    python -m bench.ablation --preset=tiny --workdir=/tmp/abl --experiments=ceiling   # rewrites the report from results

The functions take the runner's `kit` (its preset `kit.p`, work folder `kit.work`, data paths and config `kit.cfg`)
and read nothing else; no sentence states a conclusion its numbers do not decide (tests/test_ablation.py changes
numbers and checks that the text follows).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import shlex
import time
from pathlib import Path

import numpy as np
import pandas as pd

from src import config as kit_config
from src.config import LABELS
from src.score import boot_macro_auroc
from src.run import RunFolder
from src.utils import write_text

EXPERIMENTS = ("backbone", "stages", "preprocess", "fraction", "vote", "shift", "ceiling")
# The paper's hidden-test macro-AUROC where we have the number (Table 7 and the final result). Tables 5 and 6 are
# compared by their direction only: their values are not in our notes, and we do not quote numbers we cannot check.
PAPER = {"preprocess": {"raw": 0.753, "roi_clahe": 0.868, "full": 0.834}, "final": 0.9677}


def scored(sub: str | Path, solution: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(truth, probabilities) of a submission, rows in the solution's id order, columns the LABELS it holds."""
    t = pd.read_csv(solution, dtype={"id": str})
    s = pd.read_csv(sub, dtype={"id": str})
    labels = [c for c in LABELS if c in t.columns]
    m = t[["id", *labels]].merge(s[["id", *labels]], on="id", suffixes=("", "_p"))
    return m[labels].to_numpy(float), m[[f"{c}_p" for c in labels]].to_numpy(float)


def bootstrap_sd(sub: Path, solution: Path, n: int, seed: int = 0) -> float:
    """sd of the macro-AUROC over test-set resamples: the noise a single seed carries from the test set alone."""
    y, p = scored(sub, solution)
    vals = boot_macro_auroc(y, p, np.random.default_rng(seed).integers(0, len(y), (n, len(y))))
    vals = vals[~np.isnan(vals)]
    return float(np.std(vals)) if len(vals) > 1 else float("nan")


def fold_agreement(sub: str | Path) -> float | None:
    """How alike an ensemble's members are: the Pearson r between two fold models' test probabilities, averaged over
    labels and fold pairs, from the per-fold file src.infer writes beside a submission."""
    f = Path(sub).with_name(Path(sub).stem + "_folds.csv")
    if not f.is_file():
        return None
    df = pd.read_csv(f, dtype={"id": str})
    df = df[df["status"] == "ok"] if "status" in df else df
    probs = [g.sort_values("id")[list(LABELS)].to_numpy(float) for _, g in df.groupby("fold")]
    rs = [np.corrcoef(a[:, j], b[:, j])[0, 1] for a, b in itertools.combinations(probs, 2) for j in range(len(LABELS))
          if a.shape == b.shape and a[:, j].std() > 0 and b[:, j].std() > 0]
    return float(np.mean(rs)) if rs else None


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def fmt(vals, digits: int = 3) -> str:
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    return f"{np.mean(v):.{digits}f}" if len(v) == 1 else f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def mean_or_none(vals):
    v = [float(x) for x in vals if x is not None]
    return float(np.mean(v)) if v else None


ARM_ORDER = ["none", "none-matched", "scans", "scans+extra", "raw", "roi_clahe", "full", "trace", "fold 0 alone",
             "hard", "hard_tiebreak", "soft", "rank", "one setting|none", "one setting|none-matched",
             "one setting|scans", "one setting|scans+extra", "diverse|scans"]


def _arm_key(kit, arm: str):
    if arm in kit.p["backbones"]:
        return (0, kit.p["backbones"].index(arm), "")
    if arm in ARM_ORDER:
        return (1, ARM_ORDER.index(arm), "")
    head, _, tail = arm.partition("|")
    if ":" in head and tail.isdigit():  # ceiling arms "full:38|400": full before 3x4, finer first, then size
        kind, _, hz = head.partition(":")
        return (4, (kind != "full", -float(hz), int(tail)), "")
    try:  # fraction arms "0.05|scans"
        return (2, float(head), tail)
    except ValueError:
        return (3, 0, arm)


def collect(kit, exp: str, failures: list[dict]) -> dict[str, list[dict]]:
    by_arm: dict[str, list[dict]] = {}
    for f in sorted((kit.work / "results" / exp).glob("*.json")):
        r = json.loads(f.read_text())
        by_arm.setdefault(r["arm"], []).append(r)
    for r in failures:
        if r["exp"] == exp:
            by_arm.setdefault(r["arm"], []).append(r)
    return {a: by_arm[a] for a in sorted(by_arm, key=lambda a: _arm_key(kit, a))}


def _cells(rs: list[dict], key: str = "test_auroc") -> tuple[str, str, str, str]:
    ok = [r for r in rs if "error" not in r]
    err = [r for r in rs if "error" in r]
    main = fmt([r.get(key) for r in ok]) + (f" ({len(err)} failed: {err[0]['error'][:80]})" if err else "")
    return main, str(len(ok)), fmt([r.get("test_boot_sd") for r in ok]), fmt([r.get("seconds") for r in ok], 0)


INIT_NAME = {"none": "single-stage (random init)", "none-matched": "single-stage, Stage I's compute and lr",
             "scans": "Stage I scans -> Stage II",
             "scans+extra": "Stage I scans + photos -> Stage II"}


def table(exp: str, by_arm: dict[str, list[dict]], kit) -> list[str]:
    L = []
    if exp == "backbone":
        L += ["| backbone | params (M) | hidden-test macro-AUROC | seeds | test bootstrap sd | fold-0 val AUROC | s/arm | "
              "paper (Table 5) |", "|---|---|---|---|---|---|---|---|"]
        for arm, rs in by_arm.items():
            m, n, b, s = _cells(rs)
            par = next((r.get("params_m") for r in rs if r.get("params_m")), "")
            paper = ("the paper's choice" if arm.startswith("convnext") else
                     "not in the paper (the kit's CPU net)" if arm == "ecgka_tracenet" else "compared, not chosen")
            L.append(f"| {arm} | {par} | {m} | {n} | {b} | {fmt([r.get('val_auroc') for r in rs])} | {s} | {paper} |")
    elif exp == "stages":
        base = mean_or_none([r.get("test_auroc") for r in by_arm.get("none", []) if "error" not in r])
        L += ["| training | hidden-test macro-AUROC | Δ vs single-stage | seeds | test bootstrap sd | fold-0 val AUROC "
              "| s/arm | paper (Table 6) |", "|---|---|---|---|---|---|---|---|"]
        for arm, rs in by_arm.items():
            m, n, b, s = _cells(rs)
            mu = mean_or_none([r.get("test_auroc") for r in rs if "error" not in r])
            d = f"{mu - base:+.3f}" if mu is not None and base is not None else "n/a"
            paper = {"none": "baseline", "none-matched": "not in the paper (a control)",
                     "scans": "above baseline (direction)",
                     "scans+extra": "best, multi-source (direction)"}.get(arm, "")
            L.append(f"| {INIT_NAME.get(arm, arm)} | {m} | {d} | {n} | {b} | "
                     f"{fmt([r.get('val_auroc') for r in rs])} | {s} | {paper} |")
    elif exp == "preprocess":
        L += ["| preprocessing | hidden-test macro-AUROC | seeds | test bootstrap sd | fold-0 val AUROC | s/arm | "
              "paper (Table 7, hidden AUROC) |", "|---|---|---|---|---|---|---|"]
        for arm, rs in by_arm.items():
            m, n, b, s = _cells(rs)
            L.append(f"| {arm} | {m} | {n} | {b} | {fmt([r.get('val_auroc') for r in rs])} | {s} | "
                     f"{PAPER['preprocess'].get(arm, 'not in the paper')} |")
    elif exp == "fraction":
        L += ["| share of target train | images | single-stage | Stage I -> Stage II | gain from Stage I |",
              "|---|---|---|---|---|"]
        fracs = sorted({float(a.split("|")[0]) for a in by_arm})
        for f in fracs:
            a, b = by_arm.get(f"{f:g}|none", []), by_arm.get(f"{f:g}|scans", [])
            ma = mean_or_none([r.get("test_auroc") for r in a if "error" not in r])
            mb = mean_or_none([r.get("test_auroc") for r in b if "error" not in r])
            n = next((r.get("n_train") for r in a + b if r.get("n_train")), "")
            g = f"{mb - ma:+.3f}" if ma is not None and mb is not None else "n/a"
            L.append(f"| {f:.0%} | {n} | {_cells(a)[0] if a else 'n/a'} | {_cells(b)[0] if b else 'n/a'} | {g} |")
    elif exp == "vote":
        L += ["| ensemble | hidden-test macro-AUROC | seeds | test bootstrap sd | 5-fold OOF AUROC | paper |",
              "|---|---|---|---|---|---|"]
        for arm, rs in by_arm.items():
            m, n, b, _ = _cells(rs)
            paper = f"{PAPER['final']} (final, hard vote, ConvNeXt-Base, BHF)" if arm == "hard" else ""
            L.append(f"| {arm} | {m} | {n} | {b} | {fmt([r.get('oof_auroc') for r in rs])} | {paper} |")
        agree = [a for r in by_arm.get("soft", []) if r.get("submission") and (a := fold_agreement(r["submission"]))
                 is not None]
        if agree:
            L += ["", f"Agreement of the fold models: their hidden-test probabilities correlate at r = "
                  f"{fmt(agree)} (Pearson, mean over labels and fold pairs; {len(agree)} seed(s)). A vote can only "
                  "beat its members where they disagree: near-copies (r close to 1, e.g. every fold a short "
                  "fine-tune of one Stage I checkpoint) leave it nothing to add."]
    elif exp == "ceiling":
        L += ["| view (signal, samples/s) | training records | macro-AUROC | " + " | ".join(LABELS) + " | seeds |",
              "|---|---|---|" + "---|" * len(LABELS) + "---|"]
        for arm, rs in by_arm.items():
            ok = [r for r in rs if "error" not in r]
            view, _, n = arm.partition("|")
            per = [fmt([r.get("test_per_class", {}).get(k) for r in ok]) for k in LABELS]
            L.append(f"| {view} | {n} | {_cells(rs)[0]} | " + " | ".join(per) + f" | {len(ok)} |")
    elif exp == "shift":
        L += ["| Stage II trained on | init | same-setting test AUROC | diverse test AUROC | gap (same − diverse) | "
              "seeds | diverse-test bootstrap sd |", "|---|---|---|---|---|---|---|"]
        for arm, rs in by_arm.items():
            ok = [r for r in rs if "error" not in r]
            train, init = arm.split("|")
            m, n, b, _ = _cells(rs)
            L.append(f"| {train} | {INIT_NAME.get(init, init)} | {fmt([r.get('in_dist') for r in ok])} | {m} | "
                     f"{fmt([r.get('gap') for r in ok])} | {n} | {b} |")
    return L


def plot_fraction(kit, by_arm: dict, png: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = False
    for init, style in (("none", "o--"), ("scans", "s-")):
        pts = []
        for arm, rs in by_arm.items():
            if arm.endswith(f"|{init}"):
                v = [r["test_auroc"] for r in rs if r.get("test_auroc") is not None]
                if v:
                    pts.append((float(arm.split("|")[0]), np.mean(v), np.std(v) if len(v) > 1 else 0.0))
        if pts:
            pts.sort()
            x, y, e = map(np.array, zip(*pts))
            ax.errorbar(x * 100, y, yerr=e, fmt=style, capsize=3, label=INIT_NAME[init])
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("% of the target training images (fold 0's training part)")
    ax.set_ylabel("hidden-test macro-AUROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def plot_roc(kit, results: dict[str, dict[str, list[dict]]], png: Path) -> bool:
    """Per-class ROC curves of seed-0 submissions: the `stages` arms (or whatever ran) plus the hard vote."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve
    curves = []
    for exp, arms in (("stages", ("none", "scans", "scans+extra")), ("vote", ("hard", "soft"))):
        for arm in arms:
            r = next((r for r in results.get(exp, {}).get(arm, []) if r.get("submission")), None)
            if r and Path(r["submission"]).is_file():
                name = f"{INIT_NAME.get(arm, arm)}" if exp == "stages" else f"5-fold {arm} vote"
                curves.append((name, r))
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(LABELS), figsize=(3.1 * len(LABELS), 3.3))
    for name, r in curves:
        sub = pd.read_csv(r["submission"], dtype={"id": str})
        sol = pd.read_csv(r["solution"], dtype={"id": str})
        m = sol.merge(sub, on="id", suffixes=("", "_p"))
        for ax, lb in zip(axes, LABELS):
            y = m[lb].to_numpy(int)
            if y.min() == y.max():
                continue
            fpr, tpr, _ = roc_curve(y, m[f"{lb}_p"].to_numpy(float))
            ax.plot(fpr, tpr, lw=1.2, label=name)
    for ax, lb in zip(axes, LABELS):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(lb)
        ax.set_xlabel("FPR")
    axes[0].set_ylabel("TPR")
    axes[-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def _stat(rs: list[dict], key: str = "test_auroc", boot: str = "test_boot_sd") -> tuple[float, float] | None:
    """(mean, noise sd) of an arm. The noise combines the sd over seeds (2+ seeds) with the test-set bootstrap sd of
    one model: seeds vary Stage II only (Stage I is trained once and shared), so their sd alone can be far below what
    another test set would move the figure by."""
    ok = [r for r in rs if "error" not in r and r.get(key) is not None]
    if not ok:
        return None
    v = [float(r[key]) for r in ok]
    b = [float(r[boot]) for r in ok if r.get(boot) is not None]
    boot_sd = float(np.mean(b)) if b else float("nan")
    if len(v) > 1:
        seed_sd = float(np.std(v, ddof=1))
        return float(np.mean(v)), math.hypot(seed_sd, boot_sd) if b else seed_sd
    return v[0], boot_sd


def paired_sd(terms: list[tuple[list[dict], float]], n_boot: int = 500) -> float | None:
    """Test-set noise of a contrast between arms (sum of weight x arm's mean AUROC over seeds), by a *paired*
    bootstrap: every arm is scored on the same resampled test images, so what the arms share (the test set) cancels.
    None when a submission is missing or the arms have no seed in common."""
    seeds = set.intersection(*[{r["seed"] for r in rs if "error" not in r and r.get("submission")} for rs, _ in terms])
    if not seeds:
        return None
    total, idx = 0.0, None
    for seed in sorted(seeds):
        for rs, w in terms:
            r = next(r for r in rs if r["seed"] == seed and "error" not in r and r.get("submission"))
            if not (Path(r["submission"]).is_file() and Path(r.get("solution", "")).is_file()):
                return None
            y, p = scored(r["submission"], r["solution"])
            if idx is None:  # one set of resamples for every arm and seed: the pairing
                idx = np.random.default_rng(0).integers(0, len(y), (n_boot, len(y)))
            if idx.shape[1] != len(y):
                return None
            total = total + w * boot_macro_auroc(y, p, idx) / len(seeds)
    return float(np.nanstd(total, ddof=1))


def contrast_noise(terms: list[tuple[list[dict], float]], key: str = "test_auroc") -> float | None:
    """σ of a contrast: the paired test-set bootstrap sd combined with the sd over seeds of the per-seed contrast
    (not divided by √seeds: Stage I is shared by all seeds, so the seed spread stands in for training noise)."""
    tb = paired_sd(terms) if key == "test_auroc" else None
    return None if tb is None else math.hypot(tb, seed_contrast_sd(terms, key))


def seed_contrast_sd(terms: list[tuple[list[dict], float]], key: str) -> float:
    """sd over the seeds the arms share of the per-seed contrast (sum of weight x the arm's `key`); 0 with one."""
    seeds = set.intersection(*[{r["seed"] for r in rs if "error" not in r and r.get(key) is not None}
                               for rs, _ in terms])
    def value(rs, seed):
        return next(float(r[key]) for r in rs if r["seed"] == seed and "error" not in r and r.get(key) is not None)
    per_seed = [sum(w * value(rs, s) for rs, w in terms) for s in sorted(seeds)]
    return float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0


def gap_contrast_noise(a: list[dict], b: list[dict]) -> float | None:
    """σ of (gap of shift arm a) − (gap of arm b), a gap being the one-setting-test minus the diverse-test AUROC: a
    paired bootstrap on each test set (independent sets, so the variances add) combined with the sd over seeds of
    the per-seed difference. None when a submission is missing."""
    def in_dist(rs):
        return [{**r, "submission": r.get("in_dist_submission"), "solution": r.get("in_dist_solution")} for r in rs]
    ind, ood = paired_sd([(in_dist(a), 1.0), (in_dist(b), -1.0)]), paired_sd([(a, 1.0), (b, -1.0)])
    if ind is None or ood is None:
        return None
    return math.sqrt(ind ** 2 + ood ** 2 + seed_contrast_sd([(a, 1.0), (b, -1.0)], "gap") ** 2)


def verdict(diff: float, noise: float) -> str:
    """Is a claimed `diff > 0` seen? Within 2 noise sds it is not resolved either way."""
    if math.isnan(noise):
        return "reproduces (no noise estimate)" if diff > 0 else "does not reproduce (no noise estimate)"
    if abs(diff) <= 2 * noise:
        return f"not resolved (Δ within ±2σ = ±{2 * noise:.3f})"
    return "reproduces" if diff > 0 else "does not reproduce (opposite, beyond 2σ)"


def claims(kit, results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """One row per claim of the paper (or of Nonaka & Seita) that our arms can test."""
    rows = []

    def cmp(claim: str, exp: str, a: str, b: str, key="test_auroc", boot="test_boot_sd", is_claim=True):
        ra, rb = results[exp].get(a, []), results[exp].get(b, [])
        sa, sb = _stat(ra, key, boot), _stat(rb, key, boot)
        if sa and sb:
            d = sa[0] - sb[0]
            n = contrast_noise([(ra, 1.0), (rb, -1.0)], key)
            n = math.hypot(sa[1], sb[1]) if n is None else n  # no submissions: the arms' own noise, as if independent
            v = verdict(d, n)
            if not is_claim:
                v = "no claim: " + ("within noise" if v.startswith("not resolved") else
                                    f"{a} {'higher' if d > 0 else 'lower'}")
            rows.append(f"| {claim} | {sa[0]:.3f} vs {sb[0]:.3f} (Δ {d:+.3f}, σ {n:.3f}) | {v} |")
    bb, arch = kit.p["backbones"], kit.p["arch"]
    convnext = next((b for b in bb if b.startswith("convnext")), None)
    if convnext:
        for other in bb:
            if other not in (convnext, arch):
                cmp(f"ConvNeXt beats {other} at equal budget (Table 5)", "backbone", convnext, other)
        if arch in bb and arch != convnext:
            cmp(f"{arch} beats {convnext} at this budget (the kit's choice; no paper number)", "backbone", arch,
                convnext)
    cmp("Stage I on scans beats single-stage (Table 6)", "stages", "scans", "none")
    cmp("the gain is the scans' knowledge, not Stage I's extra compute: Stage I -> Stage II beats a single stage "
        "given Stage I's images-seen and lr on the target photos", "stages", "scans", "none-matched")
    cmp("adding a second Stage I source helps further (Table 6)", "stages", "scans+extra", "scans")
    cmp("ROI + CLAHE beats raw (Table 7: 0.868 vs 0.753)", "preprocess", "roi_clahe", "raw")
    cmp("ROI + CLAHE beats full rectification (Table 7: 0.868 vs 0.834)", "preprocess", "roi_clahe", "full")
    cmp("full rectification beats raw (Table 7: 0.834 vs 0.753)", "preprocess", "full", "raw")
    cmp("trace beats roi_clahe on this CPU budget (the kit's claim; no paper number)", "preprocess", "trace",
        "roi_clahe")
    fr = results["fraction"]
    fracs = sorted({float(a.split("|")[0]) for a in fr})
    if len(fracs) >= 2:
        lo, hi = fracs[0], fracs[-1]
        arms = [fr.get(f"{f:g}|{i}", []) for f in (lo, hi) for i in ("scans", "none")]
        st = [_stat(rs) for rs in arms]
        if all(st):
            g_lo, g_hi = st[0][0] - st[1][0], st[2][0] - st[3][0]
            n = contrast_noise(list(zip(arms, (1.0, -1.0, -1.0, 1.0))))
            n = math.sqrt(sum(x[1] ** 2 for x in st)) if n is None else n
            rows.append(f"| Stage I gain is largest with scarce target data (Nonaka & Seita) | gain {g_lo:+.3f} at "
                        f"{lo:.0%} vs {g_hi:+.3f} at {hi:.0%} (σ {n:.3f}) | {verdict(g_lo - g_hi, n)} |")
    cmp("the 5-fold hard vote beats one fold model", "vote", "hard", "fold 0 alone")
    cmp("soft vote vs hard vote (the paper submits hard)", "vote", "soft", "hard", is_claim=False)
    cmp("hard vote, ties ordered by mean probability, vs the pure hard vote", "vote", "hard_tiebreak", "hard",
        is_claim=False)
    sh = results["shift"]
    _, floor = _chance_floor(results)
    for init in ("none", "none-matched", "scans", "scans+extra"):
        ok = [r for r in sh.get(f"one setting|{init}", []) if "error" not in r and r.get("gap") is not None]
        if not ok:
            continue
        claim = f"single-source training loses accuracy on other render settings ({INIT_NAME[init]})"
        if np.mean([r["in_dist"] for r in ok]) <= floor:  # a model at chance on its own setting has no gap to show
            rows.append(f"| {claim} | {np.mean([r['in_dist'] for r in ok]):.3f} on its own setting | untestable: "
                        f"at chance on its own setting |")
            continue
        gaps = [float(r["gap"]) for r in ok]
        boot = math.hypot(float(np.mean([r.get("in_dist_boot_sd") or math.nan for r in ok])),
                          float(np.mean([r.get("test_boot_sd") or math.nan for r in ok])))
        noise = math.hypot(float(np.std(gaps, ddof=1)), boot) if len(gaps) > 1 else boot
        g = float(np.mean(gaps))
        rows.append(f"| {claim} | gap (same − diverse) {g:+.3f} | {verdict(g, noise)} |")
    ok = {k: [r for r in sh.get(f"one setting|{k}", []) if "error" not in r and r.get("gap") is not None]
          for k in ("none-matched", "scans")}
    if all(ok.values()):
        claim = ("Stage I on diverse scans shrinks the single-source gap (against a single stage given Stage I's "
                 "compute)")
        own = {k: float(np.mean([r["in_dist"] for r in v])) for k, v in ok.items()}
        if min(own.values()) <= floor:
            rows.append(f"| {claim} | {own['none-matched']:.3f} / {own['scans']:.3f} on their own setting | "
                        f"untestable: an arm is at chance on its own setting |")
        else:
            g = {k: float(np.mean([r["gap"] for r in v])) for k, v in ok.items()}
            n = gap_contrast_noise(ok["none-matched"], ok["scans"])
            d = g["none-matched"] - g["scans"]
            rows.append(f"| {claim} | gap {g['none-matched']:+.3f} -> {g['scans']:+.3f} (Δ {d:+.3f}, "
                        + (f"σ {n:.3f}) | {verdict(d, n)} |" if n is not None else "no noise estimate) | "
                           f"{verdict(d, math.nan)} |"))
    cmp("diverse Stage I recovers diverse-test accuracy of single-setting training", "shift", "one setting|scans",
        "one setting|none")
    cmp("... and beats a single stage given Stage I's compute on the one-setting photos", "shift",
        "one setting|scans", "one setting|none-matched")
    cmp("Stage I with diverse photo-like pages recovers more than scans alone", "shift", "one setting|scans+extra",
        "one setting|scans")
    if not rows:
        return []
    return ["| claim | ours (hidden test) | verdict |", "|---|---|---|", *rows]


def _chance_floor(results: dict[str, dict[str, list[dict]]]) -> tuple[float, float]:
    """(median test bootstrap sd of one model, the AUROC an arm must pass to be clearly above chance: 4 such sds
    over 0.5, with 0.03 standing in for the sd when no bootstrap ran)."""
    noise = [r.get("test_boot_sd") for exp in EXPERIMENTS if exp != "ceiling" for rs in results[exp].values()
             for r in rs if r.get("test_boot_sd")]
    sd = float(np.median(noise)) if noise else math.nan
    return sd, 0.5 + 4 * (sd if not math.isnan(sd) else 0.03)


def analysis(kit, results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Why a claim comes out as it does, read off the arms (each point is written only when its condition holds in
    the numbers, so the text cannot disagree with the tables)."""
    _, floor = _chance_floor(results)
    st = {(exp, arm): _stat(rs) for exp in results for arm, rs in results[exp].items()}
    m = {k: v[0] for k, v in st.items() if v}
    pts = []
    bb = {a: m[("backbone", a)] for a in kit.p["backbones"] if ("backbone", a) in m}
    if len(bb) >= 2:
        def stage1_val(arch):  # Stage I's best validation macro-AUROC (its own 10 % of the scans)
            v = RunFolder(kit.work / "runs" / "pretrain" / f"{arch}-{kit.p['strategy']}-scans").metric("best_metric")
            return math.nan if v is None else float(v)
        s1 = {a: stage1_val(a) for a in bb}
        flat = [a for a in bb if s1[a] <= floor]
        txt = ("**Backbone.** After Stage I -> Stage II: " + ", ".join(
            f"{a} {v:.3f} (" + (f"its Stage I: {s1[a]:.3f} on held-out scans)" if s1[a] == s1[a] else "no Stage I "
                                "validation score)") for a, v in sorted(bb.items(), key=lambda t: -t[1])) + ".")
        if flat:
            txt += (f" {', '.join(flat)} {'does' if len(flat) == 1 else 'do'} not leave chance even in Stage I: from "
                    f"random weights, {kit.p['epochs1']} epochs over {kit.p['n_scans']} scans at lr "
                    f"{kit.p['lr1']:g} do not train {'it' if len(flat) == 1 else 'them'}, so Stage II starts from "
                    f"noise. The paper's backbones started from ImageNet weights, which this offline run does not "
                    f"have (the kit loads them from a file the user names: --pretrained). So Table 5 ranks "
                    f"pretrained models, and this table ranks what each architecture learns from scratch on little "
                    f"data; a ranking here does not contradict the paper's.")
        pts.append(txt)
    fr = {a: v for (e, a), v in m.items() if e == "fraction"}
    fracs = sorted({float(a.split("|")[0]) for a in fr})
    none = [fr[f"{f:g}|none"] for f in fracs if f"{f:g}|none" in fr]
    scans = {f: fr[f"{f:g}|scans"] for f in fracs if f"{f:g}|scans" in fr}
    if none and len(scans) >= 2 and max(none) <= floor:
        lo, hi = min(scans), max(scans)
        n_lo = next((r.get("n_train") for r in results["fraction"][f"{lo:g}|scans"] if r.get("n_train")), "?")
        pts.append(f"**Data fraction.** Single-stage never leaves chance at any fraction (best {max(none):.3f}): from "
                   f"random weights, {kit.p['epochs2']} epoch{'s' * (kit.p['epochs2'] != 1)} at the fine-tune lr "
                   f"({kit.p['lr2']:g}) learn nothing "
                   f"even from all the target photos. The Stage I gain at each fraction is then the Stage I arm's own "
                   f"accuracy minus chance, which cannot grow as data shrinks, so the claim that the gain is largest "
                   f"when data is scarce is not testable with this baseline. What the curve does show: with Stage I, "
                   f"{lo:.0%} of the target photos ({n_lo} images) gives {scans[lo]:.3f} against {scans[hi]:.3f} "
                   f"with {hi:.0%}, so "
                   f"almost all of the accuracy comes from Stage I and the target data adds "
                   f"{scans[hi] - scans[lo]:+.3f}.")
    if ("stages", "none-matched") in m and ("stages", "scans") in m:
        a, b, c = m[("stages", "none-matched")], m[("stages", "scans")], m.get(("stages", "none"), math.nan)
        share = min(1.0, max(0.0, (a - c) / (b - c))) if b > c else math.nan
        rs_m, rs_s = results["stages"]["none-matched"], results["stages"]["scans"]
        n = contrast_noise([(rs_s, 1.0), (rs_m, -1.0)])
        per_seed = ", ".join(f"{r['test_auroc']:.3f}" for r in sorted(rs_m, key=lambda r: r["seed"])
                             if "error" not in r and r.get("test_auroc") is not None)
        verdict_txt = ("but the Stage I arm does not leave chance either, so the control says nothing at this size"
                       if b <= floor else
                       "so at this size the same compute spent on the target photos is worth as much as Stage I"
                       if a >= b else
                       f"so compute alone closes {share:.0%} of the gap from the fine-tune recipe to Stage I, and "
                       f"the rest ({b - a:+.3f}) is what the scans teach"
                       if n is None or b - a > 2 * n else
                       f"compute alone would close {share:.0%} of the gap from the fine-tune recipe to Stage I, but "
                       f"the rest ({b - a:+.3f}, σ {n:.3f}) is not beyond noise: the control's seeds give {per_seed} "
                       f"(many epochs at a high lr from random weights land far apart), so whether the scans teach "
                       f"more than their compute is not settled with these seeds")
        pts.append(f"**Knowledge or compute?** Given Stage I's lr and as many training images as Stage I sees "
                   f"({kit.matched_epochs()} epochs over a fold's photos), single-stage reaches {a:.3f}, against "
                   f"{b:.3f} after Stage I on scans and {c:.3f} with the fine-tune recipe; {verdict_txt}.")
    if all(("vote", k) in m for k in ("hard", "soft", "fold 0 alone")) and m[("vote", "hard")] < m[("vote", "soft")]:
        hard, soft, one = m[("vote", "hard")], m[("vote", "soft")], m[("vote", "fold 0 alone")]
        tb = m.get(("vote", "hard_tiebreak"))
        pts.append(f"**Hard vote.** A hard vote gives each image one of {kit.cfg.n_folds + 1} scores per label (how "
                   f"many folds say yes), so AUROC cannot order the images within a score: the hard vote scores "
                   f"{hard:.3f} against {soft:.3f} for the soft vote over the same models"
                   + (f", and ordering ties by the mean probability gives {tb:.3f}" if tb is not None else "")
                   + f". One fold model alone scores {one:.3f}: "
                   + ("the folds are near-copies (see their agreement under the table), so no vote beats a member."
                      if max(soft, tb or 0) <= one + 0.01 else "voting helps once ties are ordered."))
    pre = {a: v for (e, a), v in m.items() if e == "preprocess"}
    if len(pre) >= 2:
        order = " > ".join(f"{a} {v:.3f}" for a, v in sorted(pre.items(), key=lambda t: -t[1]))
        txt = (f"**Preprocessing.** Ours: {order}; the paper: roi_clahe {PAPER['preprocess']['roi_clahe']} > full "
               f"{PAPER['preprocess']['full']} > raw {PAPER['preprocess']['raw']}.")
        if "raw" in pre and max(pre.get("roi_clahe", 0), pre.get("full", 0)) > pre["raw"]:
            txt += (" Cropping to the ECG (roi_clahe, full) scores above the whole photo (raw), the paper's direction; "
                    "the verdicts say whether that is beyond the noise.")
        h, w = kit.p["size"]
        rect = {}
        for what in ("abl-comp", "scans"):
            f = kit.work / "cache" / f"{what}-full-{h}x{w}" / "index.csv"
            if f.is_file():
                idx = pd.read_csv(f, dtype=str, keep_default_na=False)
                ok = idx[idx["status"] == "ok"]
                rect[what] = float((ok["fallback"] == "").mean()) if len(ok) else math.nan
        if len(rect) == 2:
            txt += rectified_sentence(rect["abl-comp"], rect["scans"])
        if "trace" in pre and pre["trace"] == max(pre.values()):
            txt += (f" `trace` (grid and lighting removed) leaves the {h}x{w} pixels to the traces alone, which at "
                    f"this resolution matters most; the paper worked at 512x768 from ImageNet weights.")
        pts.append(txt)

    def shift_pair(arm):  # (mean AUROC on the one-setting test, on the diverse test) of a shift arm
        rs = [r for r in results.get("shift", {}).get(arm, []) if "error" not in r and r.get("in_dist") is not None]
        return (float(np.mean([r["in_dist"] for r in rs])), float(np.mean([r["test_auroc"] for r in rs]))) if rs \
            else None
    ref = shift_pair("diverse|scans")
    parts = []
    for init in ("none", "none-matched", "scans", "scans+extra"):
        sp = shift_pair(f"one setting|{init}")
        if sp is None:
            continue
        if sp[0] <= floor:
            parts.append(f"from {INIT_NAME[init].split(' -> ')[0].lower()}, one-setting training stays near chance "
                         f"even on its own setting ({sp[0]:.3f}), so it has no gap to show")
        else:
            parts.append(f"from {INIT_NAME[init].split(' -> ')[0]}, one-setting training scores {sp[0]:.3f} on its "
                         f"own setting and {sp[1]:.3f} on the diverse test (gap {sp[0] - sp[1]:+.3f})")
    mt, sc = shift_pair("one setting|none-matched"), shift_pair("one setting|scans")
    if mt is not None and sc is not None and min(mt[0], sc[0]) > floor:
        parts.append(f"so against the single stage given Stage I's compute, Stage I on diverse scans changes the gap "
                     f"by {(sc[0] - sc[1]) - (mt[0] - mt[1]):+.3f} and the diverse-test score by {sc[1] - mt[1]:+.3f}: "
                     + ("the single stage fits its one setting better but carries less of it to other pages"
                        if mt[0] > sc[0] and sc[1] > mt[1] else "see the verdicts for whether that is beyond noise"))
    if parts:
        txt = "**Single source.** " + "; ".join(parts)[0].upper() + "; ".join(parts)[1:] + "."
        if ref is not None:
            txt += (f" The same recipe trained on the diverse photos scores {ref[0]:.3f} / {ref[1]:.3f} (gap "
                    f"{ref[0] - ref[1]:+.3f}), so the one-setting test set is about that much easier and the rest of a "
                    f"gap is the single source. Each gap compares two test sets of {kit.p['n_shift_test']} and "
                    f"{kit.p['n_test']} images, whose bootstrap noise is what the verdicts weigh it against.")
        txt += stronger_start_sentence(m.get(("stages", "scans")), m.get(("stages", "scans+extra")))
        pts.append(txt)
    return ["## Why the results come out as they do", "", *[f"- {t}" for t in pts], ""] if pts else []


def rectified_sentence(comp: float, scans: float) -> str:
    """How often `full` found and rectified the page on the competition photos vs the Stage I scans, and what that
    means for what each stage learns from, worded by the two shares."""
    txt = f" `full` rectifies {comp:.0%} of the competition photos and {scans:.0%} of the Stage I scans"
    if abs(comp - scans) < 0.1:
        return txt + ": both stages see pages framed alike."
    fewer, many = ("scans", "photos") if scans < comp else ("photos", "scans")
    crops = 1 - min(comp, scans)
    return (txt + f" (on the other {crops:.0%} of the {fewer} the page finder found no outline and fell back to the "
            f"ROI crop), so one stage learns {'mostly' if crops > 0.5 else 'partly'} from crops while the {many} it "
            f"meets in the other are mostly rectified pages.")


def stronger_start_sentence(scans: float | None, scans_extra: float | None) -> str:
    """Whether the Stage I that also saw diverse photo-like pages scored higher in the stages experiment (section 2),
    which decides how a higher diverse-test score of that start may be read in the single-source point."""
    if scans is None or scans_extra is None:
        return ""
    if scans_extra > scans:
        return (f" A Stage I that also saw diverse photo-like pages scores higher overall in section 2 ({scans_extra:.3f}"
                f" vs {scans:.3f}), so its higher diverse-test score mixes 'closes the gap' with 'is a better start'.")
    return (f" A Stage I that also saw diverse photo-like pages does not score higher in section 2 ({scans_extra:.3f} vs "
            f"{scans:.3f}), so a smaller gap from it is not explained by a better start.")


def reading(kit, results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """A data-driven paragraph on what this run can show: how many image arms left chance, and how far the best got
    against the signal ceiling."""
    image = [(exp, arm, r["test_auroc"]) for exp in EXPERIMENTS if exp != "ceiling"
             for arm, rs in results[exp].items() for r in rs if "error" not in r and r.get("test_auroc") is not None]
    ceil = {arm: _stat(rs) for arm, rs in results["ceiling"].items()}
    if not image:
        return []
    best = max(image, key=lambda t: t[2])
    sd, floor = _chance_floor(results)
    means = [st[0] for exp in EXPERIMENTS if exp != "ceiling" for rs in results[exp].values() if (st := _stat(rs))]
    above = sum(m > floor for m in means)
    L = [f"Best image arm: {best[2]:.3f} ({best[0]} / {best[1]}); median test bootstrap sd of one model {sd:.3f}; "
         f"chance is 0.5; {above} of {len(means)} image arms are clearly above chance (mean > {floor:.3f}, 4 sd)."]
    page = [(a, v) for a, v in ceil.items() if v and a.startswith("3x4:")]
    page.sort(key=lambda t: int(t[0].split("|")[1]))
    if page:
        (a0, v0), (a1, v1) = page[0], page[-1]
        L.append(f"The signal ceiling in the page's own view ({a0.split('|')[0]}) is {v0[0]:.3f} with "
                 f"{a0.split('|')[1]} training records (the image arms' size)"
                 + (f" and {v1[0]:.3f} with {a1.split('|')[1]}" if a1 != a0 else "") + "; "
                 + ("the labels are learnable from what a page of this resolution shows, given enough examples."
                    if v1[0] >= 0.85 else "at this resolution and size even the signal is hard to learn."))
    if not above:
        L.append("So the image models have not learned the task at this preset and the comparisons between image "
                 "arms measure noise: a claim marked *not resolved* is untested here, not refuted; more epochs or "
                 "images (--budget), or the `full` preset on a GPU, are needed to decide them."
                 + (" The ceiling above puts the bottleneck in the image model's sample efficiency, not in the data."
                    if page and page[-1][1][0] >= 0.85 else ""))
    else:
        L.append("Comparisons among the arms above chance can be read from the verdicts; one involving an arm at "
                 "chance says only that that arm did not learn on this budget.")
        if page and v0[0] > 0.5:
            L.append(f"The best arm covers {(best[2] - 0.5) / (v0[0] - 0.5):.0%} of the way from chance to the "
                     f"page-view ceiling at the image arms' size (Stage I arms also learned from "
                     f"{kit.p['n_scans']} scans, so more than 100 % is possible).")
    return ["## Reading these results", "", " ".join(L), ""]


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cores} cores ({cpu or 'unknown CPU'}), GPU: {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


TITLES = {"backbone": "1. Backbone (paper Table 5)", "stages": "2. Knowledge augmentation (paper Table 6)",
          "preprocess": "3. Preprocessing (paper Table 7)",
          "fraction": "4. Target-data fraction, with and without Stage I (Nonaka & Seita)",
          "vote": "5. Ensembling the five folds", "shift": "6. Cross-generator shift (single-source limitation)",
          "ceiling": "7. Signal-level ceiling: what the image route could reach"}
WHAT = {
    "backbone": "Stage I (scans, seed 0) then Stage II fold 0 on the main strategy's caches, same epochs, batch, "
                "image size, lr and augmentation for each. `ecgka_tracenet` is the kit's own small CNN for trace "
                "maps (src/model.py), not one of the paper's; the others are timm models. Stage I starts from the "
                "weights the recipe's `pretrained` names (random in recipes/cpu.yaml, ImageNet in recipes/paper.yaml).",
    "stages": "Stage II fold 0 from random init, from Stage I on scans, and from Stage I on scans + diverse "
              "photo-like pages of other signals (two sources, each epoch drawing every image once), all on the "
              "main strategy's caches. A control the paper does not have: single-stage from random init trained "
              "with Stage I's lr for as many images as Stage I sees (epochs x scans / a fold's training photos), "
              "so a Stage I gain cannot be just more training.",
    "preprocess": "The whole pipeline per strategy, as the paper's Table 7 compares it: Stage I on scans, then Stage "
                  "II fold 0 from it, both on caches built with that strategy; the recipe's augmentation and "
                  "everything else the same. ROI by "
                  "src.roi's OpenCV detector (no YOLO weights trained here). Test images get the same strategy via "
                  "infer. `trace` is the kit's CPU choice (grid and lighting removed), not in the paper.",
    "fraction": "Fold 0 validates on all its images; Stage II trains on a nested random share of the other folds.",
    "vote": "One Stage I -> Stage II run, all five folds, each test image scored by every fold model, then voted; "
            "hard votes at each fold's OOF F1 thresholds (src.train).",
    "shift": "Stage II (fold 0 of its own 5-fold split) on photos of ONE page setting (3x4 + II rhythm, red grid, "
             "letter, no paper artefacts; camera still varies), scored on a test set of that setting and on the "
             "diverse competition test set. The single-stage control with Stage I's compute and lr is run here too "
             "(epochs x scans / a fold's one-setting photos), so a gap can be read without any Stage I. The last "
             "row is the same recipe trained on the diverse photos.",
    "ceiling": "A small 1D CNN (bench/ceiling.py) trained from scratch on synthetic *signals* drawn like the "
               "competition's, scored on held-out signals. `full:100` is the whole 10 s record at 100 samples/s; "
               "`full:N` resamples to the N samples/s a cache-width ROI crop keeps of a 25 mm/s row; `3x4:N` also "
               "blanks each lead outside its 2.5 s column of a 3x4 page (lead II whole, the rhythm strip). A high "
               "figure here beside a low image figure above means the labels are in the data and the image model "
               "is the bottleneck (sample efficiency from random init), not the synthesiser or the resolution.",
}


def past_invocations(kit) -> list[str]:
    """The tables pool every result in the work folder, possibly from several invocations (e.g. more seeds later,
    or two at once): list each one that trained something, so the report says how its numbers were made. Each
    invocation logs its start and every finished experiment, so one that was stopped by hand is listed too."""
    f = kit.work / "invocations.jsonl"
    if not f.is_file():
        return []
    runs: dict[str, dict] = {}
    for i, line in enumerate(f.read_text().splitlines()):
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r.get("id", f"legacy{i}"), {}).update(r)  # later events (progress, end) update the start
    shown = [r for r in runs.values() if r.get("new_arms", 1)]  # legacy records have no count: shown
    L = [f"  - `python -m bench.ablation {' '.join(shlex.quote(a) for a in r['argv'])}` — started {r['started']}, "
         + (f"{r['wall_min']:.1f} min" if r.get("event", "end") == "end" else
            f"stopped or still running; {r.get('wall_min', 0):.1f} min at its last finished experiment")
         + (f", {r['new_arms']} new arm results" if "new_arms" in r else "") for r in shown]
    skipped = len(runs) - len(shown)
    return (["- Invocations whose results the tables pool:"] + L
            + ([f"  - and {skipped} that only rewrote this report from existing results"] if skipped else []))


def write_report(kit, path: Path, failures: list[dict], wall: float, argv: list[str]) -> None:
    cfg, p = kit.cfg, kit.p
    results = {exp: collect(kit, exp, failures) for exp in EXPERIMENTS}
    L = ["# Ablations of the ecgka recipe (issue 9)", "",
         f"Generated by `bench/ablation.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
         "Metric: macro-AUROC on the synthetic competition's hidden test set (`solution.csv`, Public + Private), "
         "classes without both outcomes skipped. `mean ± sd` is over Stage II seeds; with one seed only the mean is "
         "shown, and the *test bootstrap sd* column (resampling test images, one model) is the noise floor to judge "
         "differences by.", "",
         "## Setup", "",
         f"- Latest invocation: `python -m bench.ablation {' '.join(shlex.quote(a) for a in argv)}`",
         f"- Preset `{cfg.preset}` (budget {cfg.budget:g}): {p['n_train']} train / {p['n_test']} test competition "
         f"photos ({p['photo_hw'][1]}x{p['photo_hw'][0]}), {p['n_scans']} Stage I scans, {p['n_extra']} extra "
         f"photo-like Stage I images, shift set {p['n_shift']} / {p['n_shift_test']}; caches {p['size'][0]}x"
         f"{p['size'][1]}; Stage I {p['epochs1']} epochs at lr {p['lr1']:g}, Stage II {p['epochs2']} epochs at lr "
         f"{p['lr2']:g}, batch {p['batch']}, augmentation {p['aug']}, the rest recipe `{p['recipe']}` (src/config.py "
         f"\"Recipes\"); main strategy `{p['strategy']}`, main arch `{p['arch']}`; "
         f"seeds {list(cfg.seeds)}.",
         "- Protocol: every arm but `vote` trains fold 0 only (the other four folds train, fold 0 validates) and is "
         "scored on the hidden test set with that one model's probabilities. Stage I checkpoints are trained once "
         "(seed 0) per variant, arch and strategy and shared by all seeds. Paper numbers are from the BHF hidden test "
         "(real photos, ConvNeXt-Base, 30-50 epochs at 512x768), ours from a small synthetic task: compare "
         "directions, not values.",
         f"- Machine: {machine()}.",
         f"- Wall time of this invocation: {wall / 60:.1f} min; arm times (s/arm) include the Stage I runs and "
         f"caches an arm was the first to need. Work folder: `{kit.work}`; every stage command it ran: "
         f"`{kit.commands}`.", *past_invocations(kit), ""]
    verdicts = claims(kit, results)
    if verdicts:
        L += ["## Verdicts", "", "Each claim against our arms. σ is the noise of the difference: a paired "
              "bootstrap over the test images (every arm scored on the same resamples, so the shared test set "
              "cancels) combined with the sd of the per-seed difference over Stage II seeds (Stage I is trained "
              "once per variant, so that spread stands in for training noise); *reproduces* needs Δ > 2σ.", "",
              *verdicts, ""]
    L += reading(kit, results)
    L += analysis(kit, results)
    for exp in EXPERIMENTS:
        by_arm = results[exp]
        L += [f"## {TITLES[exp]}", "", WHAT[exp], ""]
        if not by_arm:
            L += ["Not run in this invocation (or no result yet). Run it with "
                  f"`python -m bench.ablation --preset={cfg.preset} --experiments={exp} --seeds=0,1,2`.", ""]
            continue
        L += table(exp, by_arm, kit) + [""]
        if exp == "fraction" and plot_fraction(kit, by_arm, path.parent / "ablation_fraction.png"):
            L += ["![data-fraction curve](ablation_fraction.png)", ""]
    if plot_roc(kit, results, path.parent / "ablation_roc.png"):
        L += ["## ROC curves (seed 0, hidden test set)", "", "![ROC curves](ablation_roc.png)", ""]
    if kit.commands.is_file():
        cmds = kit.commands.read_text().splitlines()
        # the work folder as $W: the stages need absolute paths (they join a relative --name under outputs/), and
        # one variable keeps the commands exact here and portable to another checkout. A log begun by an older
        # runner may hold it relative to the repository: that form maps to $W too, so no command appears twice.
        forms = [re.escape(str(kit.work))]
        if kit.work.is_relative_to(kit_config.REPO):
            forms.append(re.escape(str(kit.work.relative_to(kit_config.REPO))))
        work_re = re.compile(r"(?<![\w/.])(?:" + "|".join(forms) + r")(?![\w.-])")
        uniq = list(dict.fromkeys(work_re.sub("$W", c) for c in cmds))
        L += ["## Exact commands", "", f"<details><summary>{len(uniq)} distinct stage commands (in order, from the "
              "repository root; re-running one is a no-op when its output exists)</summary>", "", "```bash",
              f"W={shlex.quote(str(kit.work))}  # the work folder (--workdir, made absolute)", *uniq, "```", "",
              "</details>", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(L) + "\n")
