"""Stage I: learn ECG morphology from scan-like images of one or more sources (label space = their union; a label a
source does not have is unknown there and masked out of the loss).

    # one source: a preprocessed cache (its labels found via preprocess.yaml's src, or given after a colon)
    python -m src.pretrain --sources=ecg-synth-scans-roi_clahe-512x768 --name=stage1
    python -m src.pretrain --sources=ecg-synth-scans-roi_clahe-512x768:ecg-synth-scans/labels.csv --name=stage1
    # several sources; each epoch draws 70 % / 30 % of 20000 images from them (with replacement)
    python -m src.pretrain --sources=cacheA:a/labels.csv,cacheB:b/labels.csv --source_weights=0.7,0.3 \
        --epoch_size=20000 --name=stage1
    # 2 GPUs on one machine (Kaggle T4 x2); batch_size stays the images per optimizer step over both
    torchrun --standalone --nproc_per_node=2 -m src.pretrain --sources=... --name=stage1
    # several machines: the same command on each, node_rank 0..N-1, HOST = node 0
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
        -m src.pretrain --sources=... --name=stage1
    # ImageNet weights: timm's from the hub (needs the network: HF_HUB_OFFLINE=0), or a local weights file
    HF_HUB_OFFLINE=0 python -m src.pretrain --sources=... --pretrained=hub --name=stage1
    python -m src.pretrain --sources=... --pretrained=weights/convnext_base_22k.pth --name=stage1
    # a 15 GB T4: the micro-batch that fits is found on the GPU (--batch_fit, on by default; accumulation keeps
    # --batch_size); --grad_checkpointing keeps 4-8x less per image (bench/memory.py) for ~1/3 more compute
    python -m src.pretrain --sources=... --grad_checkpointing --name=stage1
    # a session ended (e.g. Kaggle's 12 h): the same command plus --resume continues exactly
    python -m src.pretrain --sources=... --name=stage1 --resume
    # the signal route (recipes/signal.yaml: ecgka_sig1d on 16000 synthetic records made in memory), plus real
    # signal sets where you have them (PTB-XL, CODE-15%, or any folder of WFDB records with a labels.csv)
    python -m src.pretrain --recipe=signal --name=sig-stage1
    python -m src.pretrain --recipe=signal --sources=synth:16000,ptbxl:input/ptb-xl,code15:input/code-15 \
        --name=sig-stage1

A source is CACHE[:LABELS]: CACHE a folder written by src.preprocess (index.csv, images/), LABELS a CSV with id and
label columns (default: CACHE/labels.csv, else labels.csv of the dataset named as `src` in CACHE/preprocess.yaml);
both may be paths or dataset slugs under input/. With --route=signal a source is a signal set (src.data.
load_signal_source): synth:N (N records of src.synth, made in memory), ptbxl:ROOT, code15:ROOT, or a folder with
labels.csv and WFDB records (src.synth's output, ../shared/real); every record is shown as a random page of the
renderer's layouts would show it (src.data.page_mask: a 3x4 page keeps each lead's 2.5 s column), the view Stage II's
digitised photos have. A hold-out of --val_frac of each source (whole patients) drives early stopping.
Output: outputs/pretrain/<name>/ with best.pt (what Stage II
starts from: `python -m src.train --init=outputs/pretrain/<name>/best.pt`), last.pt, config.yaml, git.txt, data.json,
log.csv, log.jsonl, learning_curve.png, oof.csv (hold-out predictions of best.pt) and done.json when finished.
A finished run (done.json) is not run again.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .config import LABELS, find_input, parse_args, run_dir
from .data import (build_dataset, build_signal_dataset, holdout_split, join_cache, load_signal_source,
                   read_label_table)
from .engine import run_stage, FitConfig, barrier, check_route, fit, setup_runtime
from .model import check_pretrained, create_model
from .run import RunFolder, input_record
from .utils import imread, seed_everything, write_json


@dataclasses.dataclass(kw_only=True)
class PretrainConfig(FitConfig):
    """Stage I: pretraining on scan-like ECG images (paper: 50 epochs, batch 32, lr 1e-4, patience 5)."""
    sources: tuple[str, ...]  # comma list of CACHE[:LABELS_CSV]; signal route: synth:N, ptbxl:ROOT, code15:ROOT or
    # signal-set folders (see the module docstring)
    source_weights: tuple[float, ...] = ()  # share of each epoch per source (empty: every image once per epoch)
    epoch_size: int = 0  # images per epoch when sampling by source weight (0: size of the training part)
    labels: tuple[str, ...] = ()  # label space (empty: union of the sources' label columns, LABELS first)
    val_frac: float = 0.1  # hold-out fraction of each source for validation / early stopping
    name: str = "stage1"  # run folder outputs/pretrain/<name>
    epochs: int = 50  # maximum epochs (paper: 50)


def parse_source(spec: str) -> tuple[Path, Path]:
    """CACHE[:LABELS] -> (cache dir, label CSV). Without LABELS: CACHE/labels.csv, else the labels.csv of the dataset
    the cache was built from (`src` in its preprocess.yaml)."""
    import yaml
    cache_s, _, labels_s = spec.partition(":")
    cache = find_input(cache_s)
    if labels_s:
        return cache, find_input(labels_s)
    if (cache / "labels.csv").is_file():
        return cache, cache / "labels.csv"
    built_from = ""
    if (cache / "preprocess.yaml").is_file():
        built_from = str((yaml.safe_load((cache / "preprocess.yaml").read_text()) or {}).get("src") or "")
    if built_from:
        try:
            src = find_input(built_from)
        except FileNotFoundError:
            src = None
        if src is not None and src.is_dir() and (src / "labels.csv").is_file():
            return cache, src / "labels.csv"
        if src is not None and src.suffix == ".csv" and src.is_file():
            return cache, src
    raise SystemExit(f"--sources: no label table for {cache}; give it as CACHE:LABELS_CSV "
                     f"(e.g. {cache_s}:ecg-synth-scans/labels.csv)")


def load_sources(cfg: PretrainConfig) -> tuple[pd.DataFrame, list[str], tuple[int, int], np.ndarray | None]:
    """All sources as one table (id, source, val, labels..., image route: file) over the union label space, the input
    size (image H, W; signal 12, n) and, on the signal route, the signals [N, 12, n] in the table's order."""
    if not cfg.sources:
        raise SystemExit("--sources is empty; see --help")
    if cfg.source_weights and len(cfg.source_weights) != len(cfg.sources):
        raise SystemExit(f"--source_weights has {len(cfg.source_weights)} values for {len(cfg.sources)} sources")
    parts, union, sizes, arrays = [], [], set(), []
    for s, spec in enumerate(cfg.sources):
        if cfg.route == "signal":
            df, sig = load_signal_source(spec, cfg.seed)
            labs = list(cfg.labels) or [c for c in df.columns if c not in ("id", "patient_id")]
            for lb in labs:
                if lb not in df.columns:
                    df[lb] = np.nan
            arrays.append(sig)
            sizes.add(sig.shape[1:])
        else:
            cache, labels_csv = parse_source(spec)
            table, labs = read_label_table(labels_csv, list(cfg.labels) or None)
            df = join_cache(table, cache, what=spec)
            sizes.add(imread(df["file"].iloc[0]).shape[:2])
        df["source"] = s
        df["val"] = holdout_split(df, cfg.val_frac, cfg.seed + s)
        parts.append(df)
        union += [lb for lb in labs if lb not in union]
    if len(sizes) > 1:
        raise SystemExit(f"the sources' caches have different image sizes {sorted(sizes)}: build them with one --size")
    labels = list(cfg.labels) or [lb for lb in LABELS if lb in union] + [lb for lb in union if lb not in LABELS]
    df = pd.concat(parts, ignore_index=True)
    for lb in labels:
        if lb not in df.columns:
            df[lb] = np.nan
    if df["id"].duplicated().any():  # two sources may both have an id "00001": make ids unique per source
        df["id"] = [f"s{s}/{i}" for s, i in zip(df["source"], df["id"])]
    if not df["val"].any() or df["val"].all():
        raise SystemExit(f"--val_frac={cfg.val_frac} leaves no training or no validation images "
                         f"({len(df)} images in all)")
    return df, labels, sizes.pop(), np.concatenate(arrays) if arrays else None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(PretrainConfig, argv)
    check_route(cfg)
    try:  # checked before anything is written, one line if wrong
        check_pretrained(cfg.arch, cfg.pretrained)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"[pretrain] {e}") from None
    rt = setup_runtime(cfg)
    out = RunFolder(run_dir("pretrain", cfg.name))
    if out.finished:
        if rt.main:
            print(f"[pretrain] {out} is finished (done.json); use another --name to train again")
        return {"out": str(out), "skipped": True}
    out.check_resumable(cfg.resume)
    seed_everything(cfg.seed, rt.rank)
    df, labels, size, signals = load_sources(cfg)
    val = df["val"].to_numpy()
    tr, va = df[~val].reset_index(drop=True), df[val].reset_index(drop=True)
    weights = None
    if cfg.source_weights:
        share = np.asarray(cfg.source_weights, dtype=float)
        n_per = tr["source"].value_counts().reindex(range(len(cfg.sources)), fill_value=0).to_numpy()
        if (share[n_per == 0] > 0).any():
            raise SystemExit(f"a source with weight > 0 has no training images (per source: {n_per.tolist()})")
        weights = share[tr["source"].to_numpy()] / np.maximum(n_per[tr["source"].to_numpy()], 1)

    model = create_model(cfg.arch, len(labels), cfg.pretrained or None, cfg.drop_rate, cfg.drop_path_rate)
    caches = list(cfg.sources) if signals is not None else [str(parse_source(s)[0]) for s in cfg.sources]
    if rt.main:
        out.prepare(cfg)
        write_json(out.data_json, {
            "labels": labels, "size": list(size), "caches": caches,
            "per_source": [{"spec": spec, "train": int(((tr["source"] == s)).sum()),
                            "val": int((va["source"] == s).sum()),
                            "prevalence": {lb: float(np.nanmean(df.loc[df["source"] == s, lb]))
                                           if df.loc[df["source"] == s, lb].notna().any() else None
                                           for lb in labels}}
                           for s, spec in enumerate(cfg.sources)]})
    barrier(rt)
    ytr, yva = tr[labels].to_numpy(np.float32), va[labels].to_numpy(np.float32)
    if signals is None:
        train_ds, val_ds = (build_dataset(tr["file"], ytr, size, True, cfg.aug, cfg.seed),
                            build_dataset(va["file"], yva, size, False))
    else:  # complete records, each shown as a page would show it (the hold-out: one fixed page per record)
        train_ds, val_ds = (build_signal_dataset(signals[~val], ytr, True, cfg.seed, blank=True),
                            build_signal_dataset(signals[val], yva, False, cfg.seed, blank=True))
    res = fit(cfg, rt, model, labels, train_ds, val_ds, va["id"], out,
              train_weights=weights, epoch_size=cfg.epoch_size if weights is not None else 0,
              input_info=input_record(size, model, caches))
    if rt.main and res["finished"]:
        out.write_done(res)
        print(f"[pretrain] done: best val macro-AUROC {res['best_metric']:.4f} at epoch {res['best_epoch']} -> "
              f"{out.best}")
        if not np.isfinite(res["best_metric"]):
            # no class had both outcomes in the hold-out: best.pt is simply the last epoch, chosen blind
            print(f"[pretrain] WARNING the hold-out ({len(va)} images) could not be scored (no label with both "
                  f"outcomes); raise --val_frac or add data", file=sys.stderr)
    barrier(rt)
    return {"out": str(out), **res}


if __name__ == "__main__":
    run_stage(main)
