"""Score a submission the way the competition does: macro-AUROC (mean of the per-class ROC AUCs); and digitised
signals the way the PhysioNet/CinC 2024 challenge did (snr_db).

    python -m src.score --submission submissions/submission.csv --solution input/ecg-synth-comp-solution/solution.csv
    python -m src.score --submission S --solution T --out outputs/score/metrics.json --threshold 0.5

Prints macro-AUROC, each class's AUROC and the thresholded macro-F1 (PhysioNet/CinC 2024 style) for every `Usage`
value in the solution (Public/Private, as on the leaderboard) and overall.

Metric conventions (the API below is the canonical one; training validation and tests use it too):
- `macro_auroc` is the plain mean of per-class AUROCs, identical to sklearn's `roc_auc_score(average="macro")`. The
  AUROC is computed from average ranks (Mann-Whitney U), which equals the trapezoidal ROC area including ties.
- A class whose truth has one value only has no AUROC. By default that is an error naming the class (sklearn raises
  too; a leaderboard would be meaningless). `skip_degenerate=True` (used for fold validation, where sources may have
  unknown labels) masks NaN truths per class, skips single-valued classes and averages the rest (NaN if none is left).
- F1 per class = 2TP / (2TP + FP + FN) at a threshold (0.5, or one per class); a class with no positives and no
  predicted positives has an undefined F1 and is left out of the mean, as in the CinC 2024 scoring code.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import parse_args
from .utils import write_json

USAGE = "Usage"  # solution column that splits rows into leaderboard parts (Kaggle convention)


class SubmissionError(ValueError):
    """A submission or solution file that cannot be scored; the message names the file and what to fix."""


# ----------------------------------------------------------------------------------------------------------------
# Metrics (pure functions over arrays)
# ----------------------------------------------------------------------------------------------------------------
def binary_auroc(y_true, y_score) -> float:
    """Area under the ROC curve of one class. Raises ValueError when y_true holds one value only."""
    from scipy.stats import rankdata
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if np.isnan(y).any() or np.isnan(s).any():
        raise ValueError("NaN in y_true or y_score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("only one class present in y_true; ROC AUC is not defined in that case")
    # Mann-Whitney: P(score_pos > score_neg) + 0.5 P(tie) = (sum of positive ranks - n_pos(n_pos+1)/2) / (n_pos n_neg)
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _as_2d(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.ndim == 1:
        y, s = y[:, None], s.reshape(-1, 1)
    if y.shape != s.shape:
        raise ValueError(f"y_true shape {y.shape} != y_score shape {s.shape}")
    return y, s


def per_class_auroc(y_true, y_score, labels: Sequence[str] | None = None,
                    skip_degenerate: bool = False) -> dict[str, float]:
    """{label: AUROC} over the columns of [N, C] arrays. See the module docstring for `skip_degenerate`."""
    y, s = _as_2d(y_true, y_score)
    labels = list(labels) if labels is not None else [str(i) for i in range(y.shape[1])]
    if len(labels) != y.shape[1]:
        raise ValueError(f"{len(labels)} labels for {y.shape[1]} columns")
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        yj, sj = y[:, j], s[:, j]
        if skip_degenerate:
            keep = ~np.isnan(yj)
            yj, sj = yj[keep], sj[keep]
            if np.isnan(sj).any():
                raise ValueError(f"class {name}: NaN scores")
            if yj.size == 0 or yj.min() == yj.max():
                out[name] = float("nan")
                continue
        try:
            out[name] = binary_auroc(yj, sj)
        except ValueError as e:
            raise ValueError(f"class {name}: {e}") from None
    return out


def macro_auroc(y_true, y_score, labels: Sequence[str] | None = None, skip_degenerate: bool = False) -> float:
    """THE competition metric: the mean of per-class AUROCs (== sklearn roc_auc_score(average='macro'))."""
    vals = [v for v in per_class_auroc(y_true, y_score, labels, skip_degenerate).values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def boot_macro_auroc(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Macro-AUROC of every bootstrap resample (rows of idx) at once: per label the Mann-Whitney statistic on average
    ranks (ties count half, as in sklearn), labels without both outcomes in a resample skipped."""
    from scipy.stats import rankdata
    per = []
    for j in range(y.shape[1]):
        yy, r = y[idx, j], rankdata(p[idx, j], axis=1)
        n1 = yy.sum(1)
        n0 = yy.shape[1] - n1
        with np.errstate(invalid="ignore", divide="ignore"):
            a = ((r * yy).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
        per.append(np.where((n1 > 0) & (n0 > 0), a, np.nan))
    per = np.stack(per, 1)
    defined = (~np.isnan(per)).sum(1)
    return np.where(defined > 0, np.nansum(per, 1) / np.maximum(defined, 1), np.nan)  # NaN: no label defined


def per_class_f1(y_true, y_score, thresholds: float | Sequence[float] = 0.5,
                 labels: Sequence[str] | None = None) -> dict[str, float]:
    """{label: F1} with `score >= threshold` as positive; NaN where a class has no positives and no predictions."""
    y, s = _as_2d(y_true, y_score)
    labels = list(labels) if labels is not None else [str(i) for i in range(y.shape[1])]
    thr = np.broadcast_to(np.asarray(thresholds, dtype=float), (y.shape[1],))
    out = {}
    for j, name in enumerate(labels):
        keep = ~np.isnan(y[:, j])
        t, p = y[keep, j] == 1, s[keep, j] >= thr[j]
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        out[name] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return out


def macro_f1(y_true, y_score, thresholds: float | Sequence[float] = 0.5,
             labels: Sequence[str] | None = None) -> float:
    vals = [v for v in per_class_f1(y_true, y_score, thresholds, labels).values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def snr_db(true, pred, fs: float, max_shift_s: float = 0.2) -> np.ndarray:
    """Digitisation SNR per lead (dB): signal power over error power, the PhysioNet/CinC 2024 digitisation score.

    true, pred: [L, n] (or [n]) mV at the same `fs`; pred is cut or zero-padded to true's length. As the 2024
    evaluation code does (physionetchallenges/evaluation-2024, helper_code.compute_snr), samples where the truth is not
    finite (not shown on the page) are left out, and NaN in the prediction (a lead or span not read) counts as 0 mV,
    so a missing lead scores about 0 dB. Before the ratio the error is aligned as the challenge's 2025 Kaggle rerun
    allows: the prediction shifted by up to `max_shift_s` (whole samples, the shift that minimises the error) and a
    constant offset removed (the error's mean); the 2024 code itself aligns nothing. A lead whose truth is empty or
    all zero has no SNR (NaN); an exact match is +inf. Average leads and records with np.nanmean.
    """
    t = np.atleast_2d(np.asarray(true, np.float64))
    p = np.atleast_2d(np.asarray(pred, np.float64))
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"true has {t.shape[0]} leads but pred has {p.shape[0]}")
    n = t.shape[1]
    q = np.zeros_like(t)
    m = min(n, p.shape[1])
    q[:, :m] = np.nan_to_num(p[:, :m], nan=0.0, posinf=0.0, neginf=0.0)
    s_max = max(0, int(round(max_shift_s * fs)))
    out = np.full(t.shape[0], np.nan)
    for j in range(t.shape[0]):
        keep = np.isfinite(t[j])
        power = float(np.sum(t[j, keep] ** 2))
        if power <= 0:
            continue
        padded = np.r_[np.zeros(s_max), q[j], np.zeros(s_max)]
        best = np.inf
        for s in range(-s_max, s_max + 1):  # shifted[i] = q[i - s]
            e = padded[s_max - s: s_max - s + n][keep] - t[j, keep]
            best = min(best, float(np.sum((e - e.mean()) ** 2)))
        out[j] = 10 * np.log10(power / best) if best > 0 else np.inf
    return out


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def read_table(path: str | Path, what: str, id_col: str | None = None):
    """A CSV with ids as text (keeps leading zeros); the id column is `id_col`, else the file's first column."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{what} {path} does not exist")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        id_col = id_col or (header[0] if header else "id")
        if id_col not in header:
            raise SubmissionError(f"{what} {path}: no {id_col!r} column (columns: {header}); the first column must "
                                  f"be {id_col!r} as in sample_submission.csv")
        df = pd.read_csv(path, dtype={id_col: str})
    except SubmissionError:
        raise
    except Exception as e:  # pandas raises several parser errors; all mean the same to the user
        raise SubmissionError(f"{what} {path}: not a readable CSV ({e})") from None
    dup = df[id_col][df[id_col].duplicated()].unique().tolist()
    if dup:
        raise SubmissionError(f"{what} {path}: {len(dup)} duplicate id(s), e.g. {dup[:5]}; each id must appear once")
    return df


def align(sub, sol, sub_name: str = "submission", sol_name: str = "solution"):
    """Checks a submission against a solution; returns (label columns, scores [N, C], truth [N, C]) in solution order.

    The solution's first column is the id; its label columns are the others but Usage (the competition decides them,
    not LABELS).
    """
    import pandas as pd
    id_col = sol.columns[0]
    labels = [c for c in sol.columns[1:] if c != USAGE]
    if not labels:
        raise SubmissionError(f"{sol_name}: no label columns besides {id_col}/{USAGE}")
    if id_col not in sub.columns:
        raise SubmissionError(f"{sub_name}: no {id_col!r} column (columns: {list(sub.columns)})")
    missing_cols = [c for c in labels if c not in sub.columns]
    extra_cols = [c for c in sub.columns if c != id_col and c not in labels]
    if missing_cols or extra_cols:
        raise SubmissionError(f"{sub_name}: columns must be {id_col} + {labels} (as in sample_submission.csv); "
                              f"missing {missing_cols}, unexpected {extra_cols}")
    sub_ids, sol_ids = set(sub[id_col]), set(sol[id_col])
    missing = sorted(sol_ids - sub_ids)
    if missing:
        raise SubmissionError(f"{sub_name}: {len(missing)} id(s) of the solution are missing, e.g. {missing[:5]}; "
                              f"the submission needs one row per test image")
    extra = sorted(sub_ids - sol_ids)
    if extra:
        raise SubmissionError(f"{sub_name}: {len(extra)} id(s) not in the solution, e.g. {extra[:5]}; "
                              f"remove them (or score against the right solution file)")
    sub = sub.set_index(id_col).loc[sol[id_col]]
    for c in labels:
        col = pd.to_numeric(sub[c], errors="coerce")
        bad = sub.index[~np.isfinite(col.to_numpy(dtype=float))].tolist()  # NaN, inf, -inf, text
        if bad:
            raise SubmissionError(f"{sub_name}: column {c} has {len(bad)} NaN, infinite or non-numeric score(s), e.g. "
                                  f"ids {bad[:5]}; every cell needs a finite number")
        sub[c] = col
    truth = sol[labels].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if np.isnan(truth).any() or not np.isin(truth, (0, 1)).all():
        raise SubmissionError(f"{sol_name}: labels must all be 0/1 (found missing or other values)")
    return labels, sub[labels].to_numpy(dtype=float), truth


def score_frames(sub, sol, thresholds: float | Sequence[float] = 0.5, skip_degenerate: bool = False,
                 sub_name: str = "submission", sol_name: str = "solution") -> dict:
    """{part: {"n", "macro_auroc", "auroc": {label: v}, "macro_f1", "f1": {label: v}}} for each Usage value + overall."""
    labels, scores, truth = align(sub, sol, sub_name, sol_name)
    parts = {"overall": np.ones(len(sol), bool)}
    if USAGE in sol.columns:
        for u in sorted(sol[USAGE].astype(str).unique()):
            parts[u] = (sol[USAGE].astype(str) == u).to_numpy()
    out = {}
    for part, m in parts.items():
        try:
            auc = per_class_auroc(truth[m], scores[m], labels, skip_degenerate)
        except ValueError as e:
            raise SubmissionError(f"{sol_name} ({part} rows): {e}; the metric is undefined. Use "
                                  f"--skip_degenerate=true to average over the other classes") from None
        f1 = per_class_f1(truth[m], scores[m], thresholds, labels)
        vals = [v for v in auc.values() if not math.isnan(v)]
        fvals = [v for v in f1.values() if not math.isnan(v)]
        out[part] = {"n": int(m.sum()), "macro_auroc": float(np.mean(vals)) if vals else float("nan"), "auroc": auc,
                     "macro_f1": float(np.mean(fvals)) if fvals else float("nan"), "f1": f1}
    return out


def format_report(res: dict) -> str:
    parts = list(res)
    labels = list(res[parts[0]]["auroc"])
    w = max(10, *(len(p) + 2 for p in parts))
    lines = ["metric".ljust(12) + "".join(p.rjust(w) for p in parts),
             "n".ljust(12) + "".join(str(res[p]["n"]).rjust(w) for p in parts),
             "macro-AUROC".ljust(12) + "".join(f"{res[p]['macro_auroc']:.4f}".rjust(w) for p in parts)]
    lines += [f"  AUROC {c}".ljust(12) + "".join(f"{res[p]['auroc'][c]:.4f}".rjust(w) for p in parts) for c in labels]
    lines += ["macro-F1".ljust(12) + "".join(f"{res[p]['macro_f1']:.4f}".rjust(w) for p in parts)]
    lines += [f"  F1 {c}".ljust(12) + "".join(f"{res[p]['f1'][c]:.4f}".rjust(w) for p in parts) for c in labels]
    return "\n".join(lines)


@dataclasses.dataclass
class ScoreConfig:
    submission: Path  # submission CSV to score (id + one score column per class)
    solution: Path  # solution CSV with true 0/1 labels (id, labels..., optional Usage Public/Private)
    threshold: float = 0.5  # score >= threshold counts as positive for the F1 (hard-vote scores are fractions)
    thresholds: Path | None = None  # optional JSON {label: threshold} overriding --threshold per class
    skip_degenerate: bool = False  # skip classes with one truth value (else error: AUROC undefined, as sklearn)
    out: Path | None = None  # also write the metrics as JSON here


def _nan_to_none(o):
    """Strict JSON has no NaN; an undefined metric is written as null."""
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return None if isinstance(o, float) and math.isnan(o) else o


def main(argv=None) -> dict:
    import json
    cfg = parse_args(ScoreConfig, argv)
    try:
        sol = read_table(cfg.solution, "solution")
        sub = read_table(cfg.submission, "submission", id_col=sol.columns[0])
        labels = [c for c in sol.columns[1:] if c != USAGE]
        thr: float | list[float] = cfg.threshold
        if cfg.thresholds is not None:
            per = json.loads(Path(cfg.thresholds).read_text())
            per = per.get("thresholds", per)  # a fold's thresholds.json may nest them
            thr = [float(per.get(c, cfg.threshold)) for c in labels]
        res = score_frames(sub, sol, thr, cfg.skip_degenerate, f"submission {cfg.submission}",
                           f"solution {cfg.solution}")
    except SubmissionError as e:
        raise SystemExit(f"error: {e}") from None
    print(format_report(res))
    if cfg.out is not None:
        write_json(cfg.out, _nan_to_none({"submission": str(cfg.submission), "solution": str(cfg.solution),
                                          "threshold": thr, **res}))
        print(f"metrics written to {cfg.out}")
    return res


if __name__ == "__main__":
    main()
