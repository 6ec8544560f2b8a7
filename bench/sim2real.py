"""Sim-to-real: does what the synthesiser teaches hold on real 12-lead ECGs?

    python -m bench.sim2real                              # ../shared/real, dated report under reports/
    python -m bench.sim2real --n_train=400 --epochs=2 --ft_seeds=1 --n_stats=40 --out=/tmp/s2r   # a quick look
    python -m bench.sim2real --image_only=true --run=outputs/train/demo-stage2                  # section 2 alone

Four figures, on the real labelled recordings the kit has (../shared/real: 88 CinC-2020/2021 records, 500 Hz):
1. Signal route, zero-shot: the 1D CNN of bench/ceiling.py (100 Hz, 10 s, 0.5 Hz high-pass on both sides) trained on
   synthetic records only, scored on every real record (mean probability over its non-overlapping 10 s windows), as
   the mean of `seeds` training seeds; with --knowledge=w, mixed with a knowledge-driven classifier (gradient-boosted
   trees on the independent measurements below, fitted on synthetic records only). Per-class and macro AUROC with
   95 % bootstrap CIs (resampling records); each part is also scored alone.
2. Image route, zero-shot, with --run=<Stage II run folder(s)> (as src.infer's --run): every real record drawn by the
   kit's renderer (src.compose.make_image, seeded per record) as a scan and as a photo (--image_styles, --image_n
   pages each, at --scan_hw / --photo_hw), scored by the run's fold models through src.infer's own functions (the
   run's preprocessing, or the digitiser on the signal route) and its vote; a record's score is the mean over its
   pages. Per style and subset, AUROC with 95 % bootstrap CIs, beside the run's own synthetic scores (OOF, and the
   hidden test with --synth_score). --image_only=true runs this section alone (sim2real_image_<date>.md/.json);
   with --from_json it is added to a finished run's report.
3. Realism: the same independent measurements (neurokit2 R peaks and DWT delineation on lead II; voltages, axis and ST
   from the R-peak-aligned beats of all 12 leads; baseline-wander, high-frequency and mains power) on real and
   synthetic records, per class, each with the two-sample Kolmogorov-Smirnov distance; and a real-vs-synthetic
   discriminator (gradient-boosted trees on those measurements, 5-fold cross-validated AUROC; 0.5 = indistinguishable).
4. Synthetic pretraining on real data: k-fold over the real records (train folds fine-tune, the held-out fold scores),
   random init vs the zero-shot model's weights, several seeds; pooled out-of-fold AUROC and the paired difference,
   with bootstrap CIs.

The real set is split by a hash of the record name into halves A and B, and every real figure is given on A, B and
all: a synthesiser tuned while looking at some records should be judged on the half it was not tuned on (see the
report for which half that was). Timings on a shared machine are pessimistic.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import tempfile
import time
import warnings
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from bench.ceiling import apply_view, fit, predict
from src import synth
from src.config import LABELS, LEADS, REPO, parse_args
from src.model import make_signal_net as make_net
from src.score import binary_auroc, boot_macro_auroc, macro_auroc, per_class_auroc
from src.utils import parallel_map, seed_everything, set_threads, write_json, write_text

FS, HZ, SECONDS = 500, 100, 10.0
AUX_KEYS = ("hr", "qrs_ms", "axis_cos", "axis_sin", "rr_cv")  # what the synthesiser knows for free


@dataclasses.dataclass
class Sim2RealConfig:
    """Sim-to-real gap of the synthetic engine on the real dev set (see the module docstring)."""
    real: str = ""  # folder with labels.csv and records/ (default ../shared/real beside the repo)
    n_train: int = 2000  # synthetic training records for the zero-shot model
    epochs: int = 8  # zero-shot training epochs
    lr: float = 3e-3  # AdamW peak lr (one-cycle) for synthetic training
    seeds: int = 5  # zero-shot training seeds (the CI pools their mean prediction; each seed's macro is listed)
    aux: bool = False  # also regress HR, QRS width, axis and RR CV (auxiliary targets the synthesiser knows)
    augment: bool = True  # train-time randomisation of what recordings differ in: randomise_batch()
    highpass: float = 0.5  # Hz, on both sides (0 = off)
    real_noise: str = ""  # folder of real WFDB records not scored here (e.g. ../shared/fixtures): noise_bank()
    n_stats: int = 300  # synthetic records measured for the realism statistics
    knowledge: float = 0.5  # weight of the knowledge-driven classifier (knowledge_fit) in the zero-shot score (0: CNN)
    n_know: int = 1200  # synthetic records measured to train the knowledge-driven classifier
    folds: int = 5  # k of the fine-tuning k-fold over the real records
    ft_seeds: int = 1  # fine-tuning seeds per arm (0: skip the pretraining comparison)
    ft_epochs: int = 20  # fine-tuning epochs (an epoch is one pass over the train folds)
    ft_lr: float = 1e-3  # fine-tuning peak lr (both arms)
    boot: int = 1000  # bootstrap resamples
    seed: int = 0  # data, split and init seed
    threads: int = 2  # torch threads
    workers: int = 0  # synthesis / measurement processes (0: one per core)
    before: str = ""  # an earlier run's sim2real_<date>.json (e.g. before calibration) to compare the realism with
    variants: str = ""  # RECIPE:JSON,... other runs on the same real set: paired against this run, means per recipe
    recipe_name: str = "this"  # this run's recipe name in the variants tables
    before_recipe: str = "before"  # recipe name of the --before run in the per-recipe table
    from_json: str = ""  # re-render the report of a finished run from its JSON (with this call's --before/--variants,
    # and section 2 measured now when --run is given)
    run: str = ""  # Stage II run folder(s) for section 2, as src.infer's --run (comma list, globs); empty: not measured
    route: str = "both"  # which of those runs vote: image | signal | both (as src.infer's --route)
    vote: str = "hard_tiebreak"  # fold vote, as src.infer's --vote (the recipes' vote)
    image_styles: tuple[str, ...] = ("scan", "photo")  # page styles the real records are drawn in
    image_n: int = 1  # pages per record per style (a record's score is the mean over its pages)
    scan_hw: tuple[int, ...] = ()  # scan height, width (empty: the demo preset's, src.make_data PRESETS)
    photo_hw: tuple[int, ...] = ()  # photo height, width (empty: the demo preset's)
    synth_score: str = ""  # src.score JSON of the run on its synthetic hidden test, shown beside the real figures
    image_only: bool = False  # run section 2 alone (needs --run): sim2real_image_<date>.md/.json
    out: str = ""  # report folder (default reports/); files sim2real_<date>.md/.json/*.png


# ----------------------------------------------------------------------------------------------------------------
# Data: real records and synthetic sets, both as [N, 12, 1000] model inputs at 100 Hz
# ----------------------------------------------------------------------------------------------------------------
def real_root(cfg: Sim2RealConfig) -> Path:
    root = Path(cfg.real) if cfg.real else REPO.parent / "shared" / "real"
    if not (root / "labels.csv").is_file():
        raise SystemExit(f"{root / 'labels.csv'} not found: pass --real=<folder with labels.csv and records/> "
                         f"(the kit's dev set is ../shared/real beside the repository)")
    return root


def read_real(root: Path) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """-> record names, signals [12, n] in mV at 500 Hz in LEADS order, labels [N, 5]."""
    import pandas as pd
    import wfdb
    df = pd.read_csv(root / "labels.csv")
    names, sigs = [], []
    want = [k.upper() for k in LEADS]
    for rec, fs in zip(df["record"], df["fs"]):
        path = root / "records" / rec
        if not path.with_suffix(".hea").is_file():
            raise SystemExit(f"{path}.hea listed in {root / 'labels.csv'} but missing: restore the record or drop "
                             f"its row")
        r = wfdb.rdrecord(str(path))
        have = [s.upper() for s in r.sig_name]
        x = np.nan_to_num(r.p_signal.T[[have.index(k) for k in want]]).astype(np.float32)
        if int(fs) != FS:
            raise SystemExit(f"{path}: {fs} Hz; this bench reads 500 Hz records")
        names.append(rec)
        sigs.append(x)
    return names, sigs, df[list(LABELS)].to_numpy(np.float32)


def real_set(root: Path) -> tuple[list[str], list[np.ndarray], np.ndarray, np.ndarray]:
    """read_real and each record's half."""
    names, sigs, y = read_real(root)
    return names, sigs, y, np.array([half_of(n) for n in names])


def out_dir(cfg: Sim2RealConfig) -> Path:
    return Path(cfg.out) if cfg.out else REPO / "reports"


def half_of(name: str) -> str:
    """'A' or 'B': a fixed split of the real records by a hash of the name (independent of any seed)."""
    return "AB"[int(hashlib.md5(name.encode()).hexdigest()[:8], 16) % 2]


def highpass(x: np.ndarray, fs: float, hz: float) -> np.ndarray:
    """Zero-phase 2nd-order Butterworth high-pass along the last axis (hz <= 0: unchanged)."""
    if hz <= 0:
        return x
    from scipy.signal import butter, sosfiltfilt
    return sosfiltfilt(butter(2, hz, "highpass", fs=fs, output="sos"), x, axis=-1).astype(np.float32)


def model_input(sig500: np.ndarray, hp: float) -> np.ndarray:
    """[12, n] at 500 Hz -> [k, 12, 1000]: 100 Hz, high-passed over the whole record, then cut into k non-overlapping
    10 s windows (a record shorter than 10 s is padded with zeros)."""
    x = highpass(apply_view(sig500[None], f"full:{HZ}")[0], HZ, hp)
    m = int(SECONDS * HZ)
    if x.shape[1] < m:
        x = np.pad(x, ((0, 0), (0, m - x.shape[1])))
    k = x.shape[1] // m
    return np.clip(x[:, :k * m].reshape(12, k, m).transpose(1, 0, 2), -5, 5)


def noise_bank(folder: str) -> list[np.ndarray]:
    """Real noise: every 500 Hz WFDB record under `folder` with a regular rhythm (lead-II RR CV <= 0.1, so no AF
    f-waves), minus its median beat placed at each R peak (-250..+550 ms): what is left is baseline wander, muscle and
    mains noise and beat-to-beat variation, [12, 5000] each. Use records that are not scored (e.g.
    ../shared/fixtures)."""
    import neurokit2 as nk
    import wfdb
    bank = []
    heas = sorted(Path(folder).rglob("*.hea"))
    for hea in heas:
        r = wfdb.rdrecord(str(hea.with_suffix("")))
        have = [n.upper() for n in r.sig_name]
        if r.fs != FS or r.sig_len < SECONDS * FS or not all(k.upper() in have for k in LEADS):
            continue
        x = np.nan_to_num(r.p_signal.T[[have.index(k.upper()) for k in LEADS], :int(SECONDS * FS)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = nk.ecg_peaks(nk.ecg_clean(x[1], sampling_rate=FS), sampling_rate=FS)
        pk = np.asarray(info["ECG_R_Peaks"], int)
        rr = np.diff(pk)
        if len(pk) < 4 or rr.std() / rr.mean() > 0.1:
            continue
        a, b = int(0.25 * FS), int(0.55 * FS)
        inner = pk[(pk >= a) & (pk + b <= x.shape[1])]
        tpl = np.median(np.stack([x[:, p - a:p + b] for p in inner]), 0)
        res = x.copy()
        for p in pk:
            lo, hi = max(0, p - a), min(x.shape[1], p + b)
            res[:, lo:hi] -= tpl[:, lo - (p - a):hi - (p - a)]
        bank.append(res.astype(np.float32))
    if not bank:
        raise SystemExit(f"--real_noise={folder}: no 500 Hz, >= 10 s, regular-rhythm 12-lead WFDB record found "
                         f"({len(heas)} headers)")
    return bank


def _synth_one(i: int, seed: int, hp: float, bank: list | None = None
               ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 95, i])  # a stream apart from make_data and ceiling
    mix = bool(bank) and rng.random() < 0.5
    sig, meta = synth.synthesize(rng, noise=0.0 if mix else 1.0)
    if mix:  # a real residual, circularly shifted and scaled, instead of the synthesiser's noise
        res = bank[int(rng.integers(len(bank)))]
        sig = sig + np.roll(res, int(rng.integers(res.shape[1])), 1) * np.float32(rng.uniform(0.5, 1.5))
    y = np.array([meta["labels"][k] for k in LABELS], np.float32)
    a = np.deg2rad(meta["axis_deg"])
    aux = np.array([meta["hr"], meta["qrs_ms"], np.cos(a), np.sin(a), meta["rr_cv"]], np.float32)
    return i, model_input(sig, hp)[0], y, aux


def synth_set(n: int, seed: int, hp: float, workers: int, bank: list | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n synthetic records as model inputs, labels and standardised auxiliary targets (AUX_KEYS); with a noise bank,
    half the records carry real noise instead of synthetic noise."""
    out = sorted(parallel_map(partial(_synth_one, seed=seed, hp=hp, bank=bank), range(n), workers=workers,
                              desc=f"synth {n}", chunksize=16), key=lambda o: o[0])
    aux = np.stack([o[3] for o in out])
    aux = (aux - aux.mean(0)) / np.maximum(aux.std(0), 1e-6)
    return np.stack([o[1] for o in out]), np.stack([o[2] for o in out]), aux


def randomise_batch(x, g):
    """What a real recording differs in besides the heart, drawn per sample of a [B, 12, n] batch (torch): overall
    amplitude (x exp N(0, 0.2)) and per-lead gain (x exp N(0, 0.12): electrode contact and placement, device
    calibration), a flat lead (5 % per lead: a lost electrode) and white noise of 5-50 uV RMS (log-uniform)."""
    import torch
    b, c, _ = x.shape
    gain = torch.exp(0.2 * torch.randn(b, 1, 1, generator=g) + 0.12 * torch.randn(b, c, 1, generator=g))
    keep = (torch.rand(b, c, 1, generator=g) > 0.05).float()
    sd = torch.exp(torch.empty(b, 1, 1).uniform_(np.log(0.005), np.log(0.05), generator=g))
    return (x * gain + sd * torch.randn(x.shape, generator=g)) * keep


def predict_records(net, windows: list[np.ndarray]) -> np.ndarray:
    """Mean probability over each record's windows -> [N, 5]."""
    flat = np.concatenate(windows)
    p = predict(net, flat, len(LABELS))
    edges = np.cumsum([0] + [len(w) for w in windows])
    return np.stack([p[a:b].mean(0) for a, b in zip(edges[:-1], edges[1:])])


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap AUROC
# ----------------------------------------------------------------------------------------------------------------
def _percentile_ci(draws: np.ndarray) -> tuple[float, float]:
    d = draws[~np.isnan(draws)]
    return (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))) if len(d) else (float("nan"), float("nan"))


def boot_auroc(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, labels=LABELS) -> dict:
    """Per-class and macro AUROC with 95 % percentile bootstrap CIs (records resampled; a resample where a class has
    one value only is skipped for that class, and the macro of a resample averages the classes it defines)."""
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))
    point = per_class_auroc(y, p, labels, skip_degenerate=True)
    out = {}
    for j, k in enumerate(labels):
        lo, hi = _percentile_ci(boot_macro_auroc(y[:, [j]], p[:, [j]], idx))
        out[k] = {"auroc": point[k], "lo": lo, "hi": hi, "n_pos": int(y[:, j].sum())}
    defined = [v for v in point.values() if not np.isnan(v)]
    lo, hi = _percentile_ci(boot_macro_auroc(y, p, idx))
    out["macro"] = {"auroc": float(np.mean(defined)) if defined else float("nan"), "lo": lo, "hi": hi,
                    "n_pos": int(len(y))}
    return out


def by_half(y: np.ndarray, p: np.ndarray, half: np.ndarray, n_boot: int, seed: int) -> dict:
    """boot_auroc on all records and on halves A and B (half_of)."""
    out = {"all": boot_auroc(y, p, n_boot, seed)}
    for h in "AB":
        out[f"half {h}"] = boot_auroc(y[half == h], p[half == h], n_boot, seed)
    return out


def boot_macro_diff(y: np.ndarray, p1: np.ndarray, p0: np.ndarray, n_boot: int, seed: int) -> dict:
    """Paired bootstrap of macro-AUROC(p1) - macro-AUROC(p0) on the same resamples."""
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))
    d = boot_macro_auroc(y, p1, idx) - boot_macro_auroc(y, p0, idx)
    d = d[~np.isnan(d)]
    all_ = np.arange(len(y))[None]
    return {"diff": float((boot_macro_auroc(y, p1, all_) - boot_macro_auroc(y, p0, all_))[0]),
            "lo": float(np.percentile(d, 2.5)), "hi": float(np.percentile(d, 97.5)), "p_le_0": float((d <= 0).mean())}


# ----------------------------------------------------------------------------------------------------------------
# Section 2: the image route zero-shot (the real records drawn by the kit's renderer, scored by a Stage II run)
# ----------------------------------------------------------------------------------------------------------------
def page_sizes(cfg: Sim2RealConfig) -> dict[str, tuple[int, int]]:
    """{style: (H, W)} for --image_styles: --scan_hw / --photo_hw, else the demo preset's (what run_all trains on)."""
    from src.compose import STYLES
    from src.make_data import PRESETS
    sizes = {"scan": tuple(cfg.scan_hw) or PRESETS["demo"]["scan_hw"],
             "photo": tuple(cfg.photo_hw) or PRESETS["demo"]["photo_hw"]}
    for style in cfg.image_styles:
        if style not in STYLES:
            raise SystemExit(f"--image_styles={','.join(cfg.image_styles)}: {style!r} is not one of {', '.join(STYLES)}")
        if len(sizes[style]) != 2 or min(sizes[style]) < 32:
            raise SystemExit(f"--{style}_hw={','.join(map(str, sizes[style]))}: give height,width in pixels")
    if cfg.image_n < 1:
        raise SystemExit(f"--image_n={cfg.image_n}: at least one page per record and style")
    return {style: sizes[style] for style in cfg.image_styles}


def _draw_real(item: tuple, names: list[str], sigs: list[np.ndarray], folder: Path, seed: int) -> tuple:
    from src.compose import STYLES, make_image
    from src.utils import imwrite
    i, style, hw, k = item
    img, _ = make_image(sigs[i], FS, np.random.default_rng([seed, zlib.crc32(names[i].encode()), STYLES.index(style),
                                                            k]), style, hw)
    path = folder / style / f"{names[i].replace('/', '_')}_{k}.png"
    imwrite(path, img)
    return i, style, k, str(path)


def draw_real(names: list[str], sigs: list[np.ndarray], sizes: dict, n: int, folder: Path, seed: int, workers: int
              ) -> dict[str, list[str]]:
    """Every real record drawn `n` times per style by src.compose.make_image (its first 10 s, page and camera
    parameters from the stream [seed, crc32(name), style, k]) -> {style: PNG paths, record i's at i*n..i*n+n-1}."""
    items = [(i, style, hw, k) for style, hw in sizes.items() for i in range(len(names)) for k in range(n)]
    done = {o[:3]: o[3] for o in parallel_map(partial(_draw_real, names=names, sigs=sigs, folder=folder, seed=seed),
                                              items, workers=workers, desc="draw real records")}
    return {style: [done[(i, style, k)] for i in range(len(names)) for k in range(n)] for style in sizes}


def synthetic_scores(runs: list, score_json: str) -> dict:
    """What the run scores on synthetic data: each run folder's OOF macro-AUROC (its training photos) and, given a
    src.score JSON (--synth_score), its hidden test's."""
    out: dict = {"oof_macro": {str(r): r.metric("macro_auroc") for r in runs}}
    if score_json:
        path = Path(score_json)
        if not path.is_file():
            raise SystemExit(f"--synth_score={score_json}: not found; pass the src.score JSON of the run's hidden test "
                             f"(run_all writes outputs/score/<name>.json)")
        d = json.loads(path.read_text())["overall"]
        out["hidden_test"] = {"file": str(path), "n": d["n"], "macro": d["macro_auroc"], "auroc": d["auroc"]}
    return out


def image_route_plan(cfg: Sim2RealConfig) -> dict:
    """Section 2's inputs, checked before any long step: page sizes, the --run folders of --route (src.infer's
    select_runs), their preprocessing and fold checkpoints (run_checkpoints) and their synthetic scores."""
    from src import infer
    if cfg.vote not in infer.VOTES:
        raise SystemExit(f"--vote={cfg.vote}: choose one of {', '.join(infer.VOTES)}")
    sizes = page_sizes(cfg)
    runs = infer.select_runs(cfg.run, cfg.route)
    pcfg, ckpts = infer.run_checkpoints(runs)
    return {"sizes": sizes, "runs": runs, "pcfg": pcfg, "ckpts": ckpts,
            "synthetic": synthetic_scores(runs, cfg.synth_score)}


def image_route(cfg: Sim2RealConfig, plan: dict, names: list[str], sigs: list[np.ndarray], y: np.ndarray,
                half: np.ndarray, out: Path) -> dict:
    """Section 2: the real records drawn per style (draw_real, in a temporary folder under `out`), scored by the
    plan's folds exactly as src.infer scores test photos (its load_folds, TestImages, predict, vote_scores); per
    style, AUROC with CIs on all records and halves A/B."""
    from types import SimpleNamespace
    from src import infer
    from src.engine import setup_runtime
    runs, pcfg, ckpts = plan["runs"], plan["pcfg"], plan["ckpts"]
    styles = {}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".sim2real_pages.") as tmp:
        files = draw_real(names, sigs, plan["sizes"], cfg.image_n, Path(tmp), cfg.seed, cfg.workers)
        rt = setup_runtime(SimpleNamespace(threads=cfg.threads, amp="auto"))  # after the pool: see run()
        folds = infer.load_folds(ckpts, pcfg, list(LABELS), rt.device)
        for style, fs in files.items():
            r = infer.predict(folds, infer.TestImages(fs, [Path(f).stem for f in fs], pcfg, "signal" in ckpts), rt)
            bad = np.array([bool(e) for e in r["errors"]])
            scores, unread, _ = infer.vote_scores(r["probs"], bad, folds, runs, list(LABELS), cfg.vote)
            p = scores.reshape(len(names), cfg.image_n, len(LABELS)).mean(1)
            styles[style] = {"hw": list(plan["sizes"][style]), "n_pages": len(fs), "unreadable": int(bad.sum()),
                             "not_digitised": int(unread.any(0).sum()), "errors": [e for e in r["errors"] if e][:5],
                             "by_subset": by_half(y, p, half, cfg.boot, cfg.seed), "real_pred": p.tolist()}
            print(f"[sim2real] image route, {style}: macro-AUROC all {_ci(styles[style]['by_subset']['all']['macro'])}",
                  flush=True)
    return {"runs": [str(r) for r in runs], "routes": sorted({f.route for f in folds}), "folds": [f.name for f in folds],
            "arch": ", ".join(sorted({f.arch for f in folds})), "vote": cfg.vote,
            "preprocess": f"{pcfg.strategy} {pcfg.size[0]}x{pcfg.size[1]}" if pcfg else None, "image_n": cfg.image_n,
            "boot": cfg.boot, "synthetic": plan["synthetic"], "styles": styles}


# ----------------------------------------------------------------------------------------------------------------
# Realism: independent measurements of one record (500 Hz, [12, n] mV)
# ----------------------------------------------------------------------------------------------------------------
SUMMARY = ("hr", "rr_cv", "pr_ms", "qrs_ms", "qt_ms", "axis_deg", "R_II", "R_V5", "S_V1", "ST_V2", "ST_V5", "bw_uv",
           "hf_uv", "mains_uv")


def measure(sig: np.ndarray, fs: int = FS) -> dict:
    """HR, RR CV, RR irregularity (median |successive RR difference| / mean RR: high in AF's irregularly irregular
    rhythm, low in sinus rhythm with at most an occasional ectopic beat), PR/QRS/QT (neurokit2 DWT on lead II), frontal axis, R and S voltage, ST
    level (R peak + 120 ms, about J + 60 ms for a narrow QRS) and T amplitude (the largest deviation R + 150 ms ..
    R + min(450 ms, 0.7 RR), signed) per lead against the PR baseline (R - 80..-60 ms), and noise: baseline-wander RMS
    (< 0.7 Hz), high-frequency RMS (> 40 Hz, outside +-100 ms of each R peak) and 50/60 Hz mains RMS, all on lead II,
    in uV. Values a record does not allow are NaN. The first 10 s are measured."""
    import neurokit2 as nk
    from scipy.signal import butter, sosfiltfilt, welch
    x = sig[:, :int(SECONDS * fs)].astype(np.float64)
    f = {k: float("nan") for k in ("hr", "rr_cv", "rr_irr", "pr_ms", "qrs_ms", "qt_ms", "axis_deg")}
    ii = x[LEADS.index("II")]
    low = sosfiltfilt(butter(2, 0.7, "lowpass", fs=fs, output="sos"), ii - ii.mean())
    f["bw_uv"] = 1000 * float(np.sqrt(np.mean(low ** 2)))
    hf = sosfiltfilt(butter(4, 40, "highpass", fs=fs, output="sos"), ii)
    fr, pw = welch(ii, fs=fs, nperseg=min(len(ii), 2 * fs))
    band = ((fr > 48) & (fr < 52)) | ((fr > 58) & (fr < 62))
    f["mains_uv"] = 1000 * float(np.sqrt(pw[band].sum() * (fr[1] - fr[0])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clean = nk.ecg_clean(ii, sampling_rate=fs)
            _, info = nk.ecg_peaks(clean, sampling_rate=fs)
            r = np.asarray(info["ECG_R_Peaks"], int)
        except Exception:  # noqa: BLE001 - neurokit2 raises many kinds on flat or odd signals
            r = np.zeros(0, int)
    mask = np.ones(len(ii), bool)
    for p in r:
        mask[max(0, p - fs // 10):p + fs // 10] = False
    f["hf_uv"] = 1000 * float(np.sqrt(np.mean(hf[mask] ** 2))) if mask.sum() > fs else float("nan")
    r = r[(r > int(0.1 * fs)) & (r < x.shape[1] - int(0.14 * fs))]
    for name in LEADS:
        f[f"R_{name}"] = f[f"S_{name}"] = f[f"ST_{name}"] = f[f"T_{name}"] = float("nan")
    if len(r) < 3:
        return f
    rr = np.diff(r) / fs
    f["hr"], f["rr_cv"] = 60.0 / float(rr.mean()), float(rr.std() / rr.mean())
    f["rr_irr"] = float(np.median(np.abs(np.diff(rr))) / rr.mean()) if len(rr) > 2 else float("nan")
    base = np.stack([x[:, p - int(0.08 * fs):p - int(0.06 * fs)].mean(1) for p in r])
    qrs = np.stack([x[:, p - int(0.06 * fs):p + int(0.06 * fs)] for p in r]) - base[:, :, None]
    rv, sv = np.median(qrs.max(2), 0), np.median(-qrs.min(2), 0)
    st = np.median(np.stack([x[:, p + int(0.12 * fs)] for p in r]) - base, 0)
    t_end = int(min(0.45, 0.7 * float(np.median(rr))) * fs)
    r_t = r[r + t_end < x.shape[1]]
    tw = np.stack([x[:, p + int(0.15 * fs):p + max(t_end, int(0.2 * fs))] for p in r_t]) - base[np.isin(r, r_t), :, None] \
        if len(r_t) else np.full((1, 12, 1), np.nan)
    tw = np.median(tw, 0)
    t_amp = tw[np.arange(12), np.abs(tw).argmax(1)]
    net = np.median(qrs.sum(2), 0)
    f["axis_deg"] = float(np.degrees(np.arctan2(net[LEADS.index("aVF")] * 2 / np.sqrt(3), net[LEADS.index("I")])))
    for j, name in enumerate(LEADS):
        f[f"R_{name}"], f[f"S_{name}"], f[f"ST_{name}"], f[f"T_{name}"] = (float(rv[j]), float(sv[j]), float(st[j]),
                                                                        float(t_amp[j]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, w = nk.ecg_delineate(clean, r, sampling_rate=fs, method="dwt")

            def med(a, b):
                d = np.array(w[b], float) - np.array(w[a], float)
                d = d[np.isfinite(d) & (d > 0)]
                return 1000 * float(np.median(d)) / fs if len(d) else float("nan")
            f["pr_ms"], f["qrs_ms"] = med("ECG_P_Onsets", "ECG_R_Onsets"), med("ECG_R_Onsets", "ECG_R_Offsets")
            f["qt_ms"] = med("ECG_R_Onsets", "ECG_T_Offsets")
        except Exception:  # noqa: BLE001
            pass
    return f


KNOW_SKIP = ("bw_uv", "hf_uv", "mains_uv")  # recording noise, not the heart: left out of the knowledge-driven model


def knowledge_fit(feats: list[dict], y: np.ndarray, seed: int) -> tuple[list[str], list]:
    """The knowledge-driven zero-shot classifier: per label, gradient-boosted trees on the independent measurements of
    measure() (rhythm, intervals, axis, R/S/ST/T per lead; noise levels left out) of synthetic records only. A label
    with one class in `y` gets its prevalence as a constant. -> (keys, one model or constant per label)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    keys = [k for k in feats[0] if k not in KNOW_SKIP]
    X = np.array([[d[k] for k in keys] for d in feats])
    models = [HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                             random_state=seed).fit(X, y[:, j])
              if 0 < y[:, j].sum() < len(y) else float(y[:, j].mean()) for j in range(y.shape[1])]
    return keys, models


def knowledge_predict(model: tuple[list[str], list], feats: list[dict]) -> np.ndarray:
    keys, models = model
    X = np.array([[d[k] for k in keys] for d in feats])
    return np.stack([np.full(len(X), m) if isinstance(m, float) else m.predict_proba(X)[:, 1] for m in models], 1)


def _measure_synth(i: int, seed: int) -> tuple[int, dict, np.ndarray]:
    sig, meta = synth.synthesize(np.random.default_rng([seed, 96, i]))
    return i, measure(sig), np.array([meta["labels"][k] for k in LABELS], np.float32)


def _measure_real(i: int, sigs: list[np.ndarray]) -> tuple[int, dict]:
    return i, measure(sigs[i])


def groups(y: np.ndarray) -> dict[str, np.ndarray]:
    """Record masks per class, plus 'none' (no label of the five) and 'all'."""
    g = {"all": np.ones(len(y), bool), "none": y.sum(1) == 0}
    g.update({k: y[:, j] > 0 for j, k in enumerate(LABELS)})
    return g


def realism(real_f: list[dict], real_y: np.ndarray, syn_f: list[dict], syn_y: np.ndarray, seed: int) -> dict:
    """Per group and measurement: medians, n and KS distance; and the cross-validated discriminator AUROC."""
    from scipy.stats import ks_2samp
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    keys = list(real_f[0])
    R = np.array([[d[k] for k in keys] for d in real_f])
    Sy = np.array([[d[k] for k in keys] for d in syn_f])
    table = {}
    for gname, (gr, gs) in {k: (groups(real_y)[k], groups(syn_y)[k]) for k in groups(real_y)}.items():
        rows = {}
        for j, k in enumerate(keys):
            a, b = R[gr, j], Sy[gs, j]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            ks = float(ks_2samp(a, b).statistic) if len(a) >= 3 and len(b) >= 3 else float("nan")
            rows[k] = {"real_median": float(np.median(a)) if len(a) else float("nan"),
                       "synth_median": float(np.median(b)) if len(b) else float("nan"),
                       "real_iqr": [float(v) for v in np.percentile(a, [25, 75])] if len(a) else None,
                       "synth_iqr": [float(v) for v in np.percentile(b, [25, 75])] if len(b) else None,
                       "n_real": int(len(a)), "n_synth": int(len(b)), "ks": ks}
        table[gname] = rows
    X = np.concatenate([R, Sy])
    t = np.concatenate([np.ones(len(R)), np.zeros(len(Sy))])
    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=15, random_state=seed,
                                         class_weight="balanced")
    p = cross_val_predict(clf, X, t, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                          method="predict_proba")[:, 1]
    single = {}
    for j, k in enumerate(keys):  # how well each measurement alone tells real from synthetic (NaN ranks lowest)
        col = np.nan_to_num(X[:, j], nan=np.nanmin(X[:, j]) - 1 if np.isfinite(X[:, j]).any() else 0)
        a = binary_auroc(t, col)
        single[k] = max(a, 1 - a)
    return {"groups": table, "discriminator_auroc": binary_auroc(t, p),
            "single_feature_auroc": dict(sorted(single.items(), key=lambda kv: -kv[1])), "keys": keys,
            "real_values": R.tolist(), "synth_values": Sy.tolist()}


# ----------------------------------------------------------------------------------------------------------------
# Pretraining comparison: k-fold over the real records
# ----------------------------------------------------------------------------------------------------------------
def kfold_ids(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7]).permutation(n) % k


def finetune_oof(windows: list[np.ndarray], y: np.ndarray, init_state: dict | None, cfg: Sim2RealConfig,
                 seed: int) -> np.ndarray:
    """Out-of-fold probabilities [N, 5]: for each fold, a net (random init, or init_state) fine-tuned on the other
    folds' windows (every window of a record carries its labels) and scored on the held-out records."""
    fold = kfold_ids(len(y), cfg.folds, cfg.seed + seed)
    oof = np.zeros_like(y)
    for f in range(cfg.folds):
        tr = np.flatnonzero(fold != f)
        xtr = np.concatenate([windows[i] for i in tr])
        ytr = np.concatenate([np.repeat(y[i:i + 1], len(windows[i]), 0) for i in tr])
        seed_everything(1000 * seed + f)
        net = make_net(len(LABELS) + (len(AUX_KEYS) if cfg.aux else 0))
        if init_state is not None:
            net.load_state_dict(init_state)
        net = _with_label_head(net) if cfg.aux else net
        fit(net, xtr, ytr, cfg.ft_epochs, cfg.ft_lr, 1000 * seed + f, batch=32, min_epoch=len(xtr),
            desc=f"fine-tune fold {f}")
        te = np.flatnonzero(fold == f)
        oof[te] = predict_records(net, [windows[i] for i in te])
    return oof


def _with_label_head(net):
    """Keep the first len(LABELS) outputs of the final linear layer (drops auxiliary heads for fine-tuning)."""
    import torch
    lin = net[-1]
    new = torch.nn.Linear(lin.in_features, len(LABELS))
    with torch.no_grad():
        new.weight.copy_(lin.weight[:len(LABELS)])
        new.bias.copy_(lin.bias[:len(LABELS)])
    net[-1] = new
    return net


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def _ci(d: dict) -> str:
    return f"{d['auroc']:.3f} [{d['lo']:.2f}, {d['hi']:.2f}]"


def _plots(out: Path, stem: str, res: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from src.utils import atomic_path
    files = []
    # zero-shot per class with CIs, per half
    fig, ax = plt.subplots(figsize=(7, 3.2))
    subsets = list(res["zero_shot"]["by_subset"])
    for s_i, sub in enumerate(subsets):
        r = res["zero_shot"]["by_subset"][sub]
        xs = np.arange(len(LABELS) + 1) + (s_i - 1) * 0.25
        keys = [*LABELS, "macro"]
        v = np.array([r[k]["auroc"] for k in keys])
        lo, hi = np.array([r[k]["lo"] for k in keys]), np.array([r[k]["hi"] for k in keys])
        ax.errorbar(xs, v, yerr=[v - lo, hi - v], fmt="o", capsize=3, label=f"{sub} (n={r['macro']['n_pos']})")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(LABELS) + 1), [*LABELS, "macro"])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("AUROC (95 % bootstrap CI)")
    ax.set_title("Zero-shot: trained on synthetic signals, scored on real records")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    files.append(f"{stem}_zeroshot.png")
    with atomic_path(out / files[-1]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    # realism: distributions of the summary measurements, real vs synthetic
    rz = res["realism"]
    keys = rz["keys"]
    R, S = np.array(rz["real_values"]), np.array(rz["synth_values"])
    fig, axes = plt.subplots(2, 7, figsize=(15, 4.6))
    for ax, k in zip(axes.ravel(), SUMMARY):
        j = keys.index(k)
        a, b = R[:, j][np.isfinite(R[:, j])], S[:, j][np.isfinite(S[:, j])]
        if not (len(a) and len(b)):
            ax.set_title(f"{k}: no data", fontsize=8)
            continue
        lo, hi = np.percentile(np.concatenate([a, b]), [1, 99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25)
        ax.hist(np.clip(b, lo, hi), bins, density=True, alpha=0.5, label="synthetic")
        ax.hist(np.clip(a, lo, hi), bins, density=True, alpha=0.5, label="real")
        ax.set_title(f"{k}  KS {rz['groups']['all'][k]['ks']:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Realism (all records): real vs synthetic; discriminator AUROC {rz['discriminator_auroc']:.3f}",
                 fontsize=9)
    fig.tight_layout()
    files.append(f"{stem}_realism.png")
    with atomic_path(out / files[-1]) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return files


def verdict_zero_shot(m: dict, target: float = 0.80) -> str:
    if m["lo"] >= target:
        return f"reaches the issue's target of {target:.2f} (the whole 95 % CI is above it)"
    if m["auroc"] >= target:
        return f"reaches {target:.2f} as a point estimate, but the 95 % CI reaches down to {m['lo']:.2f}"
    if m["hi"] >= target:
        return f"falls short of {target:.2f} as a point estimate; the CI does not rule {target:.2f} out"
    return f"falls short of the issue's target of {target:.2f} (the whole 95 % CI is below it)"


def verdict_pretrain(d: dict, what: str = "synthetic pretraining") -> str:
    if d["lo"] > 0:
        return f"{what} helps (the 95 % CI of the paired difference is above 0)"
    if d["hi"] < 0:
        return f"{what} hurts (the 95 % CI of the paired difference is below 0)"
    return ("the difference is not resolved on this dev set (the 95 % CI of the paired difference contains 0; "
            f"point estimate {d['diff']:+.3f})")


def _component_lines(zs: dict, cfg: dict) -> list[str]:
    """The zero-shot score's parts (CNN ensemble, knowledge-driven classifier) scored alone, per subset."""
    if not zs.get("by_component"):
        return []
    w = cfg["knowledge"]
    L = ["", f"The score above is {1 - w:g} x the CNN ensemble + {w:g} x the knowledge-driven classifier (per label, "
         f"gradient-boosted trees on the `measure()` features of {cfg['n_know']} synthetic records; the weight was "
         "fixed before scoring). Each part alone:", "",
         "| part | subset | " + " | ".join(LABELS) + " | macro |", "|---" * (len(LABELS) + 3) + "|"]
    for comp, subs in zs["by_component"].items():
        for sub, r in subs.items():
            L.append(f"| {comp} | {sub} | " + " | ".join(_ci(r[k]) for k in LABELS) + f" | **{_ci(r['macro'])}** |")
    return L


def _real_data(res: dict) -> str:
    return (f"Real data: {res['n_real']} labelled 12-lead records from `{res['real_root']}` (CinC-2020/2021 training "
            f"data, 500 Hz); halves A/B by a hash of the record name (A: {res['n_half']['A']}, B: {res['n_half']['B']}).")


def render_image_report(res: dict) -> str:
    """The report of --image_only: section 2 alone."""
    return "\n".join([f"# Sim-to-real, image route ({res['date']})", "",
                      f"`python -m bench.sim2real {res['argv']}` — {res['wall_s']:.0f} s wall on this machine "
                      f"({res['config']['threads']} torch threads; the 2 cores were shared with other jobs).", "",
                      _real_data(res), "", *image_route_lines(res["image_route"])])


def image_route_lines(ir: dict | None) -> list[str]:
    """Section 2 of the report (image_route's result; None: why it was not measured)."""
    L = ["## 2. Image route, zero-shot", ""]
    if ir is None:
        return L + ["Not measured: pass `--run=<Stage II run folder(s)>` (as src.infer's --run) to draw the real "
                    "records with the kit's renderer and score them with that run (`--image_only=true` runs this "
                    "section alone; with `--from_json` it is added to a finished run's report).", ""]
    syn = ir["synthetic"]
    oof = ", ".join(f"{Path(r).name} {'unknown' if v is None else f'{v:.3f}'}" for r, v in syn["oof_macro"].items())
    ht = syn.get("hidden_test")
    L += [f"Run(s) {', '.join(f'`{r}`' for r in ir['runs'])}: route {' + '.join(ir['routes'])}, folds "
          f"{', '.join(ir['folds'])} ({ir['arch']}), vote {ir['vote']}"
          + (f", preprocessing {ir['preprocess']}" if ir["preprocess"] else "") + ". Every real record's first 10 s "
          f"drawn by src.compose.make_image ({ir['image_n']} page(s) per style, seeded by the record name), scored "
          "as src.infer scores test photos (the run's preprocessing, or the digitiser on the signal route; its vote "
          "at each fold's thresholds); a record's score is the mean over its pages. AUROC with 95 % bootstrap CI "
          f"({ir['boot']} resamples of records); n = positives.", "",
          f"The same run on synthetic data: OOF macro-AUROC {oof} (its training photos)"
          + (f"; hidden test {ht['macro']:.3f} (n={ht['n']}, `{ht['file']}`)." if ht else
             "; hidden test not given (--synth_score)."), "",
          "| style (H x W) | subset | " + " | ".join(LABELS) + " | macro |", "|---" * (len(LABELS) + 3) + "|"]
    for style, r in ir["styles"].items():
        for sub, b in r["by_subset"].items():
            L.append(f"| {style} ({r['hw'][0]}x{r['hw'][1]}) | {sub} | "
                     + " | ".join(f"{_ci(b[k])} (n={b[k]['n_pos']})" for k in LABELS) + f" | **{_ci(b['macro'])}** |")
    lost = [f"{style}: {r['unreadable']} unreadable, {r['not_digitised']} not digitised of {r['n_pages']}"
            for style, r in ir["styles"].items() if r["unreadable"] or r["not_digitised"]]
    L += ["", ("Pages scored as the training prevalence (as src.infer does): " + "; ".join(lost) + "."
               if lost else "Every page was read."), ""]
    return L


def render_report(res: dict, files: list[str]) -> str:
    cfg = res["config"]
    zs = res["zero_shot"]
    L = [f"# Sim-to-real on the real dev set ({res['date']})", "",
         f"`python -m bench.sim2real {res['argv']}` — {res['wall_s']:.0f} s wall on this machine "
         f"({cfg['threads']} torch threads; the 2 cores were shared with other jobs, so the wall time is pessimistic)"
         + (f", {res['cpu_s']:.0f} CPU s (process + workers)." if res.get("cpu_s") else "."),
         "",
         f"{_real_data(res)} {res['tuning_note']}", "",
         "## 1. Signal route, zero-shot", "",
         f"1D CNN (bench/ceiling.py `make_net`) trained on {cfg['n_train']} synthetic records for {cfg['epochs']} epochs "
         f"(100 Hz, 10 s, {cfg['highpass']} Hz high-pass on both sides{', auxiliary targets ' + '/'.join(AUX_KEYS) if cfg['aux'] else ''}"
         f"{', batches randomised by `randomise_batch()`' if cfg.get('augment') else ''}), "
         f"{cfg['seeds']} seed(s), mean probability of the seeds; real records scored as the mean over their 10 s "
         f"windows. AUROC with 95 % bootstrap CI ({cfg['boot']} resamples of records); n = positives.", "",
         "| subset | " + " | ".join(LABELS) + " | macro |", "|---" * (len(LABELS) + 2) + "|"]
    for sub, r in zs["by_subset"].items():
        L.append(f"| {sub} | " + " | ".join(f"{_ci(r[k])} (n={r[k]['n_pos']})" for k in LABELS)
                 + f" | **{_ci(r['macro'])}** |")
    L += ["", "Per-seed macro-AUROC on all records: " + ", ".join(f"{v:.3f}" for v in zs["per_seed_macro"])
          + f". Synthetic held-out macro-AUROC (same model, {zs['n_synth_test']} records): {zs['synth_test_macro']:.3f}.",
          *_component_lines(zs, cfg),
          "", f"Verdict (all records): the zero-shot macro-AUROC {_ci(zs['by_subset']['all']['macro'])} "
          f"{verdict_zero_shot(zs['by_subset']['all']['macro'])}.",
          f"Reference, one hand-made feature: RR-interval CV of lead II (neurokit2) as the AF score gives AUROC "
          f"{_ci(zs['rr_cv_af'])} on all records."]
    om = res.get("old_mi")
    if om:
        L += ["", f"Label check: {om['n_excluded']} records carry SNOMED {OLD_MI} (old myocardial infarction) but "
              f"are MI=0 in labels.csv. Their mean MI probability is {om['mean_p_mi_excluded']:.3f} (MI-positive "
              f"records {om['mean_p_mi_pos']:.3f}, other negatives {om['mean_p_mi_neg']:.3f}); without them MI AUROC "
              f"is {_ci(om)}."]
    L += ["", f"![zero-shot]({files[0]})", "",
          *image_route_lines(res.get("image_route")),
          "## 3. Realism: synthetic vs real, by an independent delineator", ""]
    rz = res["realism"]
    L += [f"Measured by `measure()` (neurokit2 peaks + DWT delineation on lead II; 12-lead voltages/ST from the "
          f"R-aligned beats; noise on lead II) on {res['n_real']} real and {cfg['n_stats']} synthetic records "
          "(default prevalences, noise on). KS = two-sample Kolmogorov-Smirnov distance (0 = same distribution, 1 = "
          "disjoint); groups with < 3 values on a side give nan.", "",
          f"**Real-vs-synthetic discriminator** (gradient-boosted trees on all {len(rz['keys'])} measurements, 5-fold CV): "
          f"AUROC **{rz['discriminator_auroc']:.3f}** (0.5 = indistinguishable).", "",
          "Measurements that alone best tell real from synthetic (AUROC of the single measurement, folded to >= 0.5): "
          + ", ".join(f"{k} {v:.2f}" for k, v in list(rz["single_feature_auroc"].items())[:10]) + ".", "",
          "Median real / median synthetic (KS) per group:", "",
          "| measurement | " + " | ".join(rz["groups"]) + " |", "|---" * (len(rz["groups"]) + 1) + "|"]
    for k in SUMMARY:
        cells = []
        for g, rows in rz["groups"].items():
            r = rows[k]
            cells.append(f"{r['real_median']:.3g} / {r['synth_median']:.3g} ({r['ks']:.2f})")
        L.append(f"| {k} | " + " | ".join(cells) + " |")
    L += ["", "Group sizes (real / synthetic): " + ", ".join(
        f"{g} {rows['hr']['n_real']}/{rows['hr']['n_synth']}" for g, rows in rz["groups"].items())
          + " (counts of records where HR was measurable).", "", f"![realism]({files[1]})", ""]
    if res.get("before"):
        b = res["before"]
        n_keys = len(rz["keys"])
        L += ["### Which gaps closed (this run vs the --before run)", "",
              f"Before: {b['what']}. Zero-shot macro-AUROC (all) {b['macro_all']:.3f} → "
              f"{zs['by_subset']['all']['macro']['auroc']:.3f}; discriminator AUROC {b['disc']:.3f} → "
              f"{rz['discriminator_auroc']:.3f}"
              + (f" (on {b['n_keys']} → {n_keys} measurements: not like for like)." if b.get("n_keys", n_keys) != n_keys
                 else ".")]
        now = zs["by_subset"]["all"]["macro"]
        if "macro_ci" in b:
            overlap = b["macro_ci"][0] <= now["hi"] and now["lo"] <= b["macro_ci"][1]
            L.append(f"The zero-shot 95 % CIs, [{b['macro_ci'][0]:.2f}, {b['macro_ci'][1]:.2f}] before and "
                     f"[{now['lo']:.2f}, {now['hi']:.2f}] now, {'overlap' if overlap else 'do not overlap'} "
                     f"({b.get('seeds', 1)} and {cfg['seeds']} training seed(s); the variants below show how much the "
                     "score moves between training recipes).")
        L += ["", "| measurement (all records) | KS before | KS now | |", "|---|---|---|---|"]
        for k in SUMMARY:
            k0, k1 = b["ks"].get(k, float("nan")), rz["groups"]["all"][k]["ks"]
            tag = "closer" if k1 < k0 - 0.05 else "further" if k1 > k0 + 0.05 else "about the same"
            L.append(f"| {k} | {k0:.2f} | {k1:.2f} | {tag} |")
        L.append("")
    if res.get("variants"):
        L += ["### Variants: robust-learning tricks, each against this run", "",
              "Same real records; the difference is paired (same bootstrap resamples of records). Its CI covers the "
              "choice of records only, not training noise: compare it with the same recipe under another training seed "
              "(rows with this run's recipe) before calling a variant better.", "",
              "| recipe | variant (command) | macro-AUROC (all) | variant − this run | verdict |", "|---|---|---|---|---|"]
        for v in res["variants"]:
            d = v["diff"]
            side = ("above 0" if d["lo"] > 0 else "below 0" if d["hi"] < 0 else "contains 0")
            L.append(f"| {v['recipe']} | `{v['argv']}` | {_ci(v['macro'])} | {d['diff']:+.3f} [{d['lo']:+.3f}, "
                     f"{d['hi']:+.3f}] | records CI {side} |")
        runs: dict[str, list[float]] = {res["recipe"]: [zs["by_subset"]["all"]["macro"]["auroc"]]}
        if res.get("before"):
            runs[res["before_recipe"]] = [res["before"]["macro_all"]]
        for v in res["variants"]:
            runs.setdefault(v["recipe"], []).append(v["macro"]["auroc"])
        L += ["", f"Zero-shot macro-AUROC per recipe over its runs (training seeds; this run is '{res['recipe']}'):", "",
              "| recipe | runs | mean | min | max |", "|---|---|---|---|---|"]
        L += [f"| {r} | {len(m)} | {np.mean(m):.3f} | {min(m):.3f} | {max(m):.3f} |" for r, m in runs.items()]
        mine = runs[res["recipe"]]
        if len(mine) > 1:
            spread = max(mine) - min(mine)
            best = max(runs, key=lambda r: np.mean(runs[r]))
            gap = np.mean(runs[best]) - np.mean(mine)
            L += ["", f"Training seeds alone move this recipe's score by {spread:.3f}. The best recipe by mean is "
                  f"'{best}' ({gap:+.3f} over '{res['recipe']}'), "
                  + ("a gap larger than that seed spread." if gap > spread else
                     "a gap within that seed spread: no recipe is shown better on this dev set.")]
        L.append("")
    pt = res["pretrain"]
    if pt is None:
        return "\n".join(L + ["## 4. Synthetic pretraining on real data", "", "Not run (`--ft_seeds=0`).", ""])
    L += ["## 4. Synthetic pretraining on real data (k-fold over the real records)", "",
          f"{cfg['folds']}-fold over all {res['n_real']} real records; for each of {cfg['ft_seeds']} seeds (each its own "
          f"fold split), a net is fine-tuned on the train folds ({cfg['ft_epochs']} epochs, lr {cfg['ft_lr']}, every "
          "10 s window a sample) from random init or from the zero-shot model's weights (seed 0), and the held-out "
          "fold is scored. Out-of-fold probabilities are averaged over seeds; CIs bootstrap records, the difference is "
          "paired (same resamples).", "",
          "| arm | " + " | ".join(LABELS) + " | macro | per-seed macro |", "|---" * (len(LABELS) + 3) + "|"]
    for arm in ("random_init", "synthetic_pretrained", "zero_shot"):
        r = pt[arm]
        L.append(f"| {arm} | " + " | ".join(_ci(r[k]) for k in LABELS) + f" | **{_ci(r['macro'])}** | "
                 + ", ".join(f"{v:.3f}" for v in pt["per_seed"].get(arm, [])) + " |")
    d = pt["diff"]
    L += ["", f"Pretrained − random init, macro-AUROC: {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] "
          f"(share of resamples <= 0: {d['p_le_0']:.2f}). Verdict: {verdict_pretrain(d)}.", ""]
    return "\n".join(L)


def before_summary(path: Path) -> dict:
    """What the report compares with, from an earlier run's JSON."""
    if not path.is_file():
        raise SystemExit(f"--before={path}: not found; pass the sim2real_<date>.json of an earlier run")
    b = json.loads(path.read_text())
    return {"what": f"{path.name} ({b['date']}, `{b['argv']}`)",
            "macro_all": b["zero_shot"]["by_subset"]["all"]["macro"]["auroc"],
            "macro_ci": [b["zero_shot"]["by_subset"]["all"]["macro"][k] for k in ("lo", "hi")],
            "disc": b["realism"]["discriminator_auroc"], "n_keys": len(b["realism"]["keys"]),
            "seeds": b["config"]["seeds"], "ks": {k: v["ks"] for k, v in b["realism"]["groups"]["all"].items()}}


# ----------------------------------------------------------------------------------------------------------------
def run(cfg: Sim2RealConfig, argv_text: str = "") -> dict:
    t0 = time.time()
    root = real_root(cfg)
    plan = image_route_plan(cfg) if cfg.run else None
    names, sigs, y, half = real_set(root)
    real_w = [model_input(s, cfg.highpass) for s in sigs]
    print(f"[sim2real] {len(names)} real records ({(half == 'A').sum()} A / {(half == 'B').sum()} B)", flush=True)
    bank = noise_bank(cfg.real_noise) if cfg.real_noise else None
    xtr, ytr, aux = synth_set(cfg.n_train, cfg.seed, cfg.highpass, cfg.workers, bank)
    xte, yte, _ = synth_set(max(200, cfg.n_train // 5), cfg.seed + 1, cfg.highpass, cfg.workers)
    real_f = [d for _, d in sorted(parallel_map(partial(_measure_real, sigs=sigs), range(len(sigs)),
                                                workers=cfg.workers, desc="measure real"), key=lambda o: o[0])]
    n_meas = max(cfg.n_stats, cfg.n_know if cfg.knowledge > 0 else 0)
    ms = sorted(parallel_map(partial(_measure_synth, seed=cfg.seed), range(n_meas), workers=cfg.workers,
                             desc="measure synth", chunksize=4), key=lambda o: o[0])
    syn_f, syn_y = [o[1] for o in ms], np.stack([o[2] for o in ms])
    image = image_route(cfg, plan, names, sigs, y, half, out_dir(cfg)) if plan else None  # its pool before torch's
    set_threads(cfg.threads)  # after the pools (forking after torch threads start can hang workers)

    n_out = len(LABELS) + (len(AUX_KEYS) if cfg.aux else 0)
    preds, syn_preds, per_seed, state0 = [], [], [], None
    for s in range(cfg.seeds):
        seed_everything(cfg.seed + s)
        net = fit(make_net(n_out), xtr, ytr, cfg.epochs, cfg.lr, cfg.seed + s, min_epoch=cfg.n_train,
                  aux=aux if cfg.aux else None, desc=f"synthetic seed {s}",
                  augment=randomise_batch if cfg.augment else None)
        state0 = state0 or {k: v.clone() for k, v in net.state_dict().items()}
        preds.append(predict_records(net, real_w))
        syn_preds.append(predict(net, xte, len(LABELS)))
        per_seed.append(macro_auroc(y, preds[-1], LABELS, skip_degenerate=True))
        print(f"[sim2real] zero-shot seed {s}: real macro-AUROC {per_seed[-1]:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    p = components = np.mean(preds, 0)
    if cfg.knowledge > 0:
        pk = knowledge_predict(knowledge_fit(syn_f, syn_y, cfg.seed), real_f)
        components = {"CNN": p, "knowledge": pk}
        p = (1 - cfg.knowledge) * p + cfg.knowledge * pk

    def subsets(q):
        return by_half(y, q, half, cfg.boot, cfg.seed)
    by_subset = subsets(p)
    rr = np.array([d["rr_cv"] for d in real_f])
    rr_ref = boot_auroc(y[:, [LABELS.index("AF")]], np.nan_to_num(rr, nan=0.0)[:, None], cfg.boot, cfg.seed, ["AF"])
    zero = {"by_subset": by_subset, "per_seed_macro": per_seed, "rr_cv_af": rr_ref["AF"],
            "synth_test_macro": macro_auroc(yte, np.mean(syn_preds, 0), LABELS, skip_degenerate=True),
            "n_synth_test": len(yte), "real_pred": p.tolist(), "labels": y.tolist()}
    if isinstance(components, dict):
        zero["by_component"] = {k: subsets(q) for k, q in components.items()}
    print(f"[sim2real] zero-shot macro-AUROC all {_ci(by_subset['all']['macro'])}; "
          + "; ".join(f"{k} {_ci(v['macro'])}" for k, v in by_subset.items() if k != "all"), flush=True)

    rz = realism(real_f, y, syn_f[:cfg.n_stats], syn_y[:cfg.n_stats], cfg.seed)
    print(f"[sim2real] discriminator AUROC {rz['discriminator_auroc']:.3f} ({time.time() - t0:.0f} s)", flush=True)

    return {"config": dataclasses.asdict(cfg), "argv": argv_text, "real_root": str(root), "n_real": len(names),
            "n_half": {h: int((half == h).sum()) for h in "AB"}, "records": names, "zero_shot": zero,
            "image_route": image,
            "realism": rz, "pretrain": pretrain(real_w, y, state0, by_subset["all"], cfg, t0) if cfg.ft_seeds else None,
            "wall_s": time.time() - t0, "cpu_s": cpu_seconds()}


def cpu_seconds() -> float:
    """CPU seconds used by this process and its finished workers (user + system)."""
    import resource
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def pretrain(real_w: list[np.ndarray], y: np.ndarray, state0: dict, zero_shot: dict, cfg: Sim2RealConfig,
             t0: float) -> dict:
    """Section 4: out-of-fold AUROC of both arms over ft_seeds, with CIs and the paired difference."""
    oof = {"random_init": [], "synthetic_pretrained": []}
    for s in range(cfg.ft_seeds):
        oof["random_init"].append(finetune_oof(real_w, y, None, cfg, s))
        oof["synthetic_pretrained"].append(finetune_oof(real_w, y, state0, cfg, s))
        print(f"[sim2real] fine-tune seed {s} done ({time.time() - t0:.0f} s)", flush=True)
    pt = {arm: boot_auroc(y, np.mean(v, 0), cfg.boot, cfg.seed) for arm, v in oof.items()}
    pt["zero_shot"] = zero_shot
    pt["per_seed"] = {arm: [macro_auroc(y, q, LABELS, skip_degenerate=True) for q in v] for arm, v in oof.items()}
    pt["diff"] = boot_macro_diff(y, np.mean(oof["synthetic_pretrained"], 0), np.mean(oof["random_init"], 0),
                                 cfg.boot, cfg.seed)
    print(f"[sim2real] pretrained - random init: {pt['diff']['diff']:+.3f} "
          f"[{pt['diff']['lo']:+.3f}, {pt['diff']['hi']:+.3f}]", flush=True)
    return pt


TUNING_NOTE = ("Honesty: the synthesiser's first calibration (src/synth.py) tied its ranges to published figures (PTB-XL "
               "statement counts, 4th UDMI, AHA/ACC/HRS 2009, Macfarlane normal limits) and, for noise levels, chest "
               "voltages, RR variability and the normal V2-V3 ST lift, to medians this bench delineated on all 88 "
               "records. The second round (issue 24) read the label codes of all 88 records and the per-record "
               "zero-shot scores of half A only (CD, AF, HYP, MI) to find failure modes: records of paroxysmal VT and "
               "frequent ventricular ectopy scored as AF and CD, real AF with clearly irregular RR scored low, CD mostly "
               "RBBB and first-degree AV block. Its changes are each tied to a published figure (CinC-2021 label counts "
               "for the CD and HYP subtype mix, Romhilt-Estes and AHA 2009 atrial-abnormality criteria, the fine/coarse "
               "f-wave definition, the NSVT definition; the share of ventricular runs among PVC records is a robustness "
               "choice, not a prevalence) and the knowledge-driven classifier's measurement set was chosen on half A; "
               "the knowledge weight (0.5) and the seed count were fixed without looking at scores. Half B and all "
               "records were printed beside half A in every try, so neither is a clean hold-out and every real figure "
               "is optimistic for unseen data.")
OLD_MI = "164867002"  # SNOMED 'old myocardial infarction' (CinC OldMI): not one of labels.csv's MI codes


def variant_summary(recipe: str, path: Path, res: dict) -> dict:
    """Another run's zero-shot macro-AUROC and its paired bootstrap difference against this run."""
    if not path.is_file():
        raise SystemExit(f"--variants: {path} not found; pass sim2real_<date>.json files of earlier runs")
    v = json.loads(path.read_text())
    if v["records"] != res["records"] or "real_pred" not in v["zero_shot"]:
        raise SystemExit(f"--variants: {path} was run on other real records (or by an older bench without "
                         f"predictions); rerun it on the same --real")
    y = np.array(res["zero_shot"]["labels"], np.float32)
    mine, theirs = np.array(res["zero_shot"]["real_pred"]), np.array(v["zero_shot"]["real_pred"])
    return {"recipe": recipe, "argv": v["argv"], "macro": v["zero_shot"]["by_subset"]["all"]["macro"],
            "diff": boot_macro_diff(y, theirs, mine, res["config"]["boot"], res["config"]["seed"])}


def old_mi_check(res: dict) -> dict | None:
    """MI AUROC without the records whose raw labels carry OLD_MI (labelled MI=0 by the dev set's map, yet MI to a
    reader): how much of the MI figure is that label choice."""
    import pandas as pd
    if "real_pred" not in res["zero_shot"]:
        return None
    df = pd.read_csv(Path(res["real_root"]) / "labels.csv").set_index("record").loc[res["records"]]
    old = df["raw_labels"].astype(str).str.contains(OLD_MI).to_numpy() & (df["MI"].to_numpy() == 0)
    if not old.any():
        return None
    y, p = np.array(res["zero_shot"]["labels"]), np.array(res["zero_shot"]["real_pred"])
    j = [LABELS.index("MI")]
    r = boot_auroc(y[~old][:, j], p[~old][:, j], res["config"]["boot"], res["config"]["seed"], ["MI"])["MI"]
    return {"n_excluded": int(old.sum()), "mean_p_mi_excluded": float(p[old, j[0]].mean()),
            "mean_p_mi_pos": float(p[y[:, j[0]] > 0, j[0]].mean()), "mean_p_mi_neg": float(p[(y[:, j[0]] == 0)
                                                                                            & ~old, j[0]].mean()), **r}


def image_only(cfg: Sim2RealConfig, argv_text: str, out: Path) -> dict:
    """--image_only: section 2 alone -> <out>/sim2real_image_<date>.md/.json."""
    t0 = time.time()
    if not cfg.run:
        raise SystemExit("--image_only=true scores the real records with a Stage II run: pass --run=<run folder(s)>")
    plan = image_route_plan(cfg)
    root = real_root(cfg)
    names, sigs, y, half = real_set(root)
    res = {"config": dataclasses.asdict(cfg), "argv": argv_text, "date": datetime.date.today().isoformat(),
           "real_root": str(root), "n_real": len(names), "n_half": {h: int((half == h).sum()) for h in "AB"},
           "records": names, "labels": y.tolist(), "image_route": image_route(cfg, plan, names, sigs, y, half, out)}
    res.update(wall_s=time.time() - t0, cpu_s=cpu_seconds())
    stem = f"sim2real_image_{res['date']}"
    write_json(out / f"{stem}.json", res)
    write_text(out / f"{stem}.md", render_image_report(res))
    print(f"[sim2real] report -> {out / (stem + '.md')} ({res['wall_s']:.0f} s)")
    return res


def main(argv=None):
    import sys
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(Sim2RealConfig, argv)
    out = out_dir(cfg)
    if cfg.image_only:
        return image_only(cfg, " ".join(argv), out)
    if cfg.from_json:
        res = json.loads(Path(cfg.from_json).read_text())
        if cfg.run:  # section 2 measured now, on the same real records
            plan = image_route_plan(cfg)
            names, sigs, y, half = real_set(Path(res["real_root"]))
            if names != res["records"]:
                raise SystemExit(f"{res['real_root']} no longer holds the records of {cfg.from_json}; rerun the bench")
            res["image_route"] = image_route(cfg, plan, names, sigs, y, half, out)
    else:
        res = run(cfg, " ".join(argv))
        res["date"] = datetime.date.today().isoformat()
    res["tuning_note"] = TUNING_NOTE
    res["old_mi"] = old_mi_check(res)
    res["recipe"], res["before_recipe"] = cfg.recipe_name, cfg.before_recipe
    if cfg.variants:
        items = [v.split(":", 1) for v in cfg.variants.split(",") if v]
        if any(len(i) != 2 for i in items):
            raise SystemExit(f"--variants={cfg.variants}: expected RECIPE:path.json,RECIPE:path.json,...")
        res["variants"] = [variant_summary(r, Path(p), res) for r, p in items]
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sim2real_{res['date']}"
    if cfg.before:
        res["before"] = before_summary(Path(cfg.before))
    files = _plots(out, stem, res)
    write_json(out / f"{stem}.json", res)
    write_text(out / f"{stem}.md", render_report(res, files))
    print(f"[sim2real] report -> {out / (stem + '.md')} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
