"""Stage II: k-fold fine-tuning on the target competition's (photo-like) training images.

    # all folds in one process, starting from the Stage I checkpoint (paper: 30 epochs, lr 1e-4, batch 32)
    python -m src.train --fold=all --cache=ecg-synth-comp-roi_clahe-512x768 --train_csv=ecg-synth-comp/train.csv \
        --folds_csv=ecg-synth-comp-folds/folds.csv --init=outputs/pretrain/stage1/best.pt --name=stage2
    # one fold (e.g. one Kaggle session per fold), or ImageNet weights / random init (the single-stage baseline):
    # --pretrained=hub downloads timm's (needs HF_HUB_OFFLINE=0), a path loads a local file; --init wins over both
    python -m src.train --fold=2 ... --pretrained=weights/convnext_base_22k.pth --name=baseline
    # 2 GPUs (Kaggle T4 x2); several machines: torchrun --nnodes=N --node_rank=i --rdzv_backend=c10d \
    #   --rdzv_endpoint=HOST:29500 --nproc_per_node=G -m src.train ...
    torchrun --standalone --nproc_per_node=2 -m src.train --fold=all ... --name=stage2
    # an interrupted fold continues exactly from its last.pt; finished folds are skipped
    python -m src.train --fold=all ... --name=stage2 --resume
    # the signal route: the training photos digitised once (python -m src.digitize --images=ecg-synth-comp/train
    # --out=input/ecg-synth-comp-digitised), the same folds, from the signal Stage I
    python -m src.train --recipe=signal --fold=all --cache=ecg-synth-comp-digitised \
        --train_csv=ecg-synth-comp/train.csv --folds_csv=ecg-synth-comp-folds/folds.csv \
        --init=outputs/pretrain/sig-stage1/best.pt --name=sig-stage2

Each fold k trains on the other folds' images and validates on fold k (early stopping on its macro-AUROC), in
outputs/train/<name>/fold<k>/: config.yaml, git.txt, log.csv, log.jsonl, learning_curve.png, best.pt, last.pt,
oof.csv (id, fold, labels, pred_<label> of best.pt on fold k), thresholds.json and done.json (finished; such a fold
is skipped when run again). The run folder itself gets config.yaml, preprocess.yaml (copied from the cache: the
preprocessing src.infer must re-apply to test images; none on the signal route, whose test photos src.infer
digitises), oof.csv over every finished fold and oof_metrics.json; the OOF macro-AUROC over all folds is printed at
the end. The layout is src.run's (RunFolder).

Thresholds (thresholds.json, used by the hard vote in src.infer): per class, chosen on that fold's OOF predictions;
`f1` (default) takes the score cut maximising F1 (predict positive when score >= threshold: the thresholded F1
is what the hard vote turns into a score), `youden` maximises TPR - FPR. A class without both outcomes in the fold
gets 0.5. Format: {"method", "labels", "thresholds": {label: t}, "score": {label: F1 or J at t}, "n": {label: n}}.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .config import find_input, parse_args, run_dir
from .data import build_dataset, build_signal_dataset, join_cache, join_signals, read_competition_table
from .engine import run_stage, FitConfig, barrier, check_route, fit, setup_runtime
from .model import check_pretrained, create_model, init_from_checkpoint, load_checkpoint
from .run import RunFolder, input_record, select_folds
from .score import macro_auroc, per_class_auroc
from .sources import require_valid_competition
from .utils import imread, seed_everything, write_json


@dataclasses.dataclass(kw_only=True)
class TrainConfig(FitConfig):
    """Stage II: fine-tuning per fold on the target competition (paper: 30 epochs, lr 1e-4, batch 32)."""
    cache: str  # preprocessed cache of the training images (src.preprocess; its preprocess.yaml is copied here), or
    # on the signal route the folder of their digitised records (python -m src.digitize --out=...)
    train_csv: str  # competition train.csv (id, labels..., patient_id); label columns follow sample_submission.csv
    folds_csv: str  # folds.csv (id, fold) from `python -m src.folds`
    fold: str = "all"  # folds to train: all | k | comma list such as 0,3
    init: str = ""  # Stage I best.pt (outputs/pretrain/<name>/); used instead of --pretrained; new head if labels differ
    name: str = "stage2"  # run folder outputs/train/<name>
    threshold: str = "f1"  # per-class threshold rule on each fold's OOF: f1 | youden
    epochs: int = 30  # maximum epochs per fold (paper: 30)


def choose_thresholds(y: np.ndarray, p: np.ndarray, labels: list[str], method: str = "f1") -> dict:
    """Per-class thresholds on OOF predictions (see the module docstring)."""
    from sklearn.metrics import precision_recall_curve, roc_curve
    if method not in ("f1", "youden"):
        raise ValueError(f"--threshold={method}: choose f1 or youden")
    thr, score, n = {}, {}, {}
    for j, lb in enumerate(labels):
        keep = ~np.isnan(y[:, j])
        yj, pj = y[keep, j], p[keep, j]
        n[lb] = int(keep.sum())
        if yj.size == 0 or yj.min() == yj.max():
            thr[lb], score[lb] = 0.5, None
            continue
        if method == "f1":
            prec, rec, t = precision_recall_curve(yj, pj)
            f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
            k = int(np.argmax(f1))
            thr[lb], score[lb] = float(t[k]), float(f1[k])
        else:
            fpr, tpr, t = roc_curve(yj, pj)
            ok = np.isfinite(t)
            k = int(np.argmax((tpr - fpr)[ok]))
            thr[lb], score[lb] = float(t[ok][k]), float((tpr - fpr)[ok][k])
    return {"method": method, "labels": labels, "thresholds": thr, "score": score, "n": n}


def load_table(cfg: TrainConfig) -> tuple[pd.DataFrame, list[str], np.ndarray | None]:
    """(table id, labels..., fold, image route: file; label names; signal route: the digitised signals in the
    table's order)."""
    train_csv = find_input(cfg.train_csv)
    if (train_csv.parent / "sample_submission.csv").is_file():  # a competition: every table problem now, not later
        require_valid_competition(train_csv.parent, "train", splits=())  # images: from the cache
    table, labels = read_competition_table(train_csv)
    folds_path = find_input(cfg.folds_csv)
    folds = pd.read_csv(folds_path, dtype={"id": str})
    if not {"id", "fold"} <= set(folds.columns):
        raise SystemExit(f"{folds_path}: needs columns id, fold (write it with `python -m src.folds`)")
    df = table.merge(folds[["id", "fold"]], on="id", how="left")
    if df["fold"].isna().any():
        raise SystemExit(f"{int(df['fold'].isna().sum())} training ids are not in {folds_path} (e.g. "
                         f"{df.loc[df['fold'].isna(), 'id'].iloc[0]!r}): rebuild it for this train.csv")
    df["fold"] = df["fold"].astype(int)
    if cfg.route == "signal":
        df, signals = join_signals(df, find_input(cfg.cache), what="training photos")
        return df, labels, signals
    return join_cache(df, find_input(cfg.cache), what="training images"), labels, None


def summarise_oof(run: RunFolder, labels: list[str], folds: list[int]) -> dict | None:
    """Joins the finished folds' oof.csv into the run's oof.csv and scores it (printed)."""
    oof = run.join_oof(folds)
    if oof is None:
        return None
    done = sorted(set(oof["fold"].astype(int)))
    y, p = oof[labels].to_numpy(float), oof[[f"pred_{lb}" for lb in labels]].to_numpy(float)
    auc = per_class_auroc(y, p, labels, skip_degenerate=True)
    res = {"folds": done, "n": len(oof), "macro_auroc": macro_auroc(y, p, labels, skip_degenerate=True), "auroc": auc}
    write_json(run.oof_metrics, res)
    missing = sorted(set(folds) - set(done))
    print(f"OOF macro-AUROC {res['macro_auroc']:.4f} over folds {done} ({len(oof)} images) "
          + " ".join(f"{k}={v:.3f}" for k, v in auc.items())
          + (f"; folds {missing} not finished" if missing else ""), flush=True)
    return res


def load_init(spec: str) -> dict:
    """The --init checkpoint (a path, or a path inside an attached dataset); "checkpoint not found: <spec>" when
    missing. Read before the run folder is written."""
    try:
        path = find_input(spec)
    except FileNotFoundError:
        path = Path(spec)  # load_checkpoint names it as not found
    return load_checkpoint(path)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(TrainConfig, argv)
    check_route(cfg)
    try:  # weights named by --init / --pretrained: checked before anything is written, one line if wrong
        init = load_init(cfg.init) if cfg.init else None
        pretrained = None if init is not None else cfg.pretrained or None  # --init replaces every backbone weight
        check_pretrained(cfg.arch, pretrained)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"[train] {e}") from None
    rt = setup_runtime(cfg)
    if rt.main and init is not None and cfg.pretrained:
        print(f"[train] --pretrained={cfg.pretrained} not loaded: --init={cfg.init} provides the weights")
    out = RunFolder(run_dir("train", cfg.name))
    df, labels, signals = load_table(cfg)
    folds_all = sorted(df["fold"].unique().tolist())
    todo = select_folds(cfg.fold, folds_all)
    for k in todo:
        out.fold(k).check_resumable(cfg.resume)
    cache = find_input(cfg.cache)
    size = imread(df["file"].iloc[0]).shape[:2] if signals is None else signals.shape[1:]
    if rt.main:
        out.prepare(cfg)
        if signals is None:
            out.export_preprocess(cache)
    budget = cfg.session_epochs
    results = {}
    for k in todo:
        fdir = out.fold(k)
        if fdir.finished:
            if rt.main:
                print(f"[train] fold {k}: finished earlier, skipped")
            continue
        if cfg.session_epochs and budget <= 0:
            break
        seed_everything(cfg.seed, rt.rank)  # each fold starts from the same seed: --fold=k equals its part of all
        model = create_model(cfg.arch, len(labels), pretrained, cfg.drop_rate, cfg.drop_path_rate)
        if init is not None:
            what = init_from_checkpoint(model, init, cfg.arch, labels, cfg.init)
            if rt.main:
                print(f"[train] fold {k}: initialised from {cfg.init}: {what}")
        held = (df["fold"] == k).to_numpy()
        tr, va = df[~held].reset_index(drop=True), df[held].reset_index(drop=True)
        ytr, yva = tr[labels].to_numpy(np.float32), va[labels].to_numpy(np.float32)
        if signals is None:
            train_ds, val_ds = (build_dataset(tr["file"], ytr, size, True, cfg.aug, cfg.seed),
                                build_dataset(va["file"], yva, size, False))
        else:  # digitised pages: what the page did not show is NaN already
            train_ds, val_ds = (build_signal_dataset(signals[~held], ytr, True, cfg.seed),
                                build_signal_dataset(signals[held], yva, False, cfg.seed))
        if rt.main:
            fdir.prepare(cfg)
        barrier(rt)
        fold_cfg = dataclasses.replace(cfg, session_epochs=budget) if cfg.session_epochs else cfg
        res = fit(fold_cfg, rt, model, labels, train_ds, val_ds, va["id"], fdir,
                  extra_cols={"fold": k}, input_info=input_record(size, model, [cache]))
        budget -= res["epochs_run"] if cfg.session_epochs else 0
        results[k] = res
        if rt.main and res["finished"]:
            oof = fdir.read_oof()
            fdir.write_thresholds(choose_thresholds(
                oof[labels].to_numpy(float), oof[[f"pred_{lb}" for lb in labels]].to_numpy(float), labels,
                cfg.threshold))
            fdir.write_done(res)
            print(f"[train] fold {k}: best val macro-AUROC {res['best_metric']:.4f} at epoch {res['best_epoch']}")
        barrier(rt)
        if not res["finished"]:
            break
    summary = summarise_oof(out, labels, folds_all) if rt.main else None
    return {"out": str(out), "folds": results, "oof": summary}


if __name__ == "__main__":
    run_stage(main)
