"""Datasets over a preprocessed cache (build_dataset: each built with its transform) and over signals (the signal
route: signal_input, its sources, build_signal_dataset), label tables, augmentation presets and the epoch sampler.

A cache (written by src.preprocess) is `<cache>/images/<id>.png` at model input size plus `<cache>/index.csv`
(id, cache_path, status ok|skipped, ...) and `<cache>/preprocess.yaml`. A label table has `id` and one float column
per label (1/0, NaN = unknown for that source, masked out of the loss and metrics).

Design choices (why):
- The dataset returns uint8 CHW tensors; normalisation happens on the device (src.engine.to_input) so the loader
  moves 4x fewer bytes and does no float maths on the CPU, which is the bottleneck on Kaggle's 4-core T4 machines.
- Augmentation randomness is seeded per sample from (seed, epoch, index), so an epoch's images do not depend on the
  number of loader workers or DDP ranks, and a resumed run sees exactly the images an uninterrupted one would.
- One sampler (ShardedSampler) for every case: uniform or weighted (multi-source Stage I), one process or DDP; the
  DistributedSampler semantics (set_epoch, rank-strided shards, padding for training only) plus weights.
- A cache image that cannot be read becomes a blank image with all-NaN labels: zero loss, never a dead run.
"""
from __future__ import annotations

import copy
import random
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import LABELS
from .utils import ImageReadError, imread, opencv_before_fork

META_COLUMNS = {"id", "path", "patient_id", "fold", "strat_fold", "cache_path", "status", "error", "Usage", "source",
                "box", "quad", "fallback", "split", "seed"}
AUG_PRESETS = ("none", "light", "medium", "strong")


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def read_label_table(path: str | Path, labels: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(DataFrame[id, labels..., (patient_id)], label names). Without `labels`: LABELS that are present, then any
    other 0/1/NaN column not known as metadata. Listed labels absent from the file become NaN (unknown)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label table {path} not found")
    return label_frame(pd.read_csv(path, dtype={"id": str, "patient_id": str}), path, labels)


def label_frame(df: pd.DataFrame, path: Path, labels: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """read_label_table's checks and label columns over a table already read from `path`."""
    if "id" not in df.columns:
        raise ValueError(f"{path}: no 'id' column (columns: {list(df.columns)})")
    if df["id"].duplicated().any():
        raise ValueError(f"{path}: duplicate ids, e.g. {df.loc[df['id'].duplicated(), 'id'].iloc[0]!r}")
    if labels is None:
        def binary(c):
            v = pd.to_numeric(df[c], errors="coerce")
            return v.notna().sum() == df[c].notna().sum() and set(v.dropna().unique()) <= {0, 1}
        labels = [c for c in LABELS if c in df.columns]
        labels += [c for c in df.columns if c not in META_COLUMNS and c not in labels and binary(c)]
        if not labels:
            raise ValueError(f"{path}: no label columns found (expected some of {LABELS})")
    out = df[["id"] + (["patient_id"] if "patient_id" in df.columns else [])].copy()
    for c in labels:
        v = pd.to_numeric(df[c], errors="coerce") if c in df.columns else pd.Series(np.nan, index=df.index)
        if not set(v.dropna().unique()) <= {0, 1}:
            raise ValueError(f"{path}: column {c!r} must hold 0/1 (or empty = unknown)")
        out[c] = v.astype(float)
    return out, list(labels)


def read_competition_table(train_csv: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The target competition's training labels from train.csv alone (no image is opened, no test/ folder needed:
    the images come from the cache). With sample_submission.csv beside it, its header names the id column (renamed
    `id`) and the label columns (sources.competition_columns, the competition's one column rule); the first group
    column present (sources.GROUP_COLUMNS) becomes patient_id."""
    from .sources import GROUP_COLUMNS, competition_columns
    train_csv = Path(train_csv)
    if not (train_csv.name == "train.csv" and (train_csv.parent / "sample_submission.csv").is_file()):
        return read_label_table(train_csv)
    if not train_csv.is_file():
        raise FileNotFoundError(f"label table {train_csv} not found")
    id_col, cols = competition_columns(train_csv)
    df = pd.read_csv(train_csv, dtype={id_col: str})
    missing = [c for c in [id_col, *cols] if c not in df.columns]
    if missing:
        raise ValueError(f"{train_csv}: missing column(s) {missing} that sample_submission.csv lists; it has "
                         f"{list(df.columns)}")
    group = next((c for c in GROUP_COLUMNS if c in df.columns), None)
    df = df.drop(columns=[c for c in ("id", "patient_id") if c in df.columns and c not in (id_col, group)])
    df = df.rename(columns={id_col: "id", **({group: "patient_id"} if group else {})})
    df["id"] = df["id"].astype(str).str.strip()
    if group:
        df["patient_id"] = df["patient_id"].astype(str)
    return label_frame(df, train_csv, cols)


def read_cache(cache_dir: str | Path) -> pd.DataFrame:
    """DataFrame[id, file] of the cache's usable images (status ok), via src.preprocess's index reader."""
    from .preprocess import read_cache as read_index
    cache_dir = Path(cache_dir)
    if not (cache_dir / "index.csv").is_file():
        shards = sorted(p.name for p in cache_dir.glob("index_shard*of*.csv"))
        fix = (f"join its shards first: `python -m src.preprocess merge --dst={cache_dir}` (found {shards[:3]})"
               if shards else f"build it first: `python -m src.preprocess --src=<images> --dst={cache_dir}`")
        raise FileNotFoundError(f"{cache_dir / 'index.csv'} not found: {fix}")
    idx = read_index(cache_dir)
    return pd.DataFrame({"id": idx["id"].astype(str).to_numpy(), "file": idx["path"].to_numpy()})


def join_cache(table: pd.DataFrame, cache_dir: str | Path, what: str = "") -> pd.DataFrame:
    """Labels joined to cached images; rows without a usable image are dropped and counted (never silently)."""
    cache = read_cache(cache_dir)
    out = table.merge(cache, on="id", how="inner")
    exists = np.array([Path(f).is_file() for f in out["file"]], dtype=bool)
    n_missing, n_gone = len(table) - len(out), int((~exists).sum())
    if n_missing or n_gone:
        print(f"[data] {what or cache_dir}: {n_missing} labelled ids have no usable cache image (skipped by "
              f"preprocess or not built), {n_gone} cache files missing on disk; using {int(exists.sum())}",
              file=sys.stderr)
    out = out[exists].reset_index(drop=True)
    if out.empty:
        raise ValueError(f"no labelled images in cache {cache_dir} ({what}): do the ids of the label table match "
                         f"the cache's index.csv?")
    return out


def holdout_split(df: pd.DataFrame, frac: float, seed: int, group_col: str = "patient_id") -> np.ndarray:
    """Boolean mask of a random validation part of ~frac, whole groups at a time (no patient on both sides)."""
    ids = df["id"].astype(str)
    groups = (df[group_col].astype(str).where(df[group_col].notna(), "id:" + ids) if group_col in df.columns
              else ids).to_numpy()  # a row without a group is its own group
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    sizes = pd.Series(groups).value_counts()
    take, n = [], 0
    for g in uniq:
        if n >= frac * len(df):
            break
        take.append(g)
        n += int(sizes[g])
    return np.isin(groups, take)


# ----------------------------------------------------------------------------------------------------------------
# Augmentation (albumentations 2.x argument names; a test builds every preset with warnings as errors)
# ----------------------------------------------------------------------------------------------------------------
def build_transform(preset: str = "medium"):
    """The paper's augmentations (rotation, elastic, perspective, brightness/contrast, shadows) at a strength.

    Images are already at model input size, so every geometric transform keeps the size; borders are filled white
    like ECG paper. Returns None for "none".
    """
    import albumentations as A
    import cv2
    if preset not in AUG_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {AUG_PRESETS}")
    if preset == "none":
        return None
    s = {"light": 0.5, "medium": 1.0, "strong": 1.6}[preset]
    white = dict(border_mode=cv2.BORDER_CONSTANT, fill=255)
    ts = [
        A.Affine(rotate=(-4 * s, 4 * s), scale=(1 - 0.05 * s, 1 + 0.05 * s),
                 translate_percent={"x": (-0.02 * s, 0.02 * s), "y": (-0.03 * s, 0.03 * s)}, p=0.7, **white),
        A.Perspective(scale=(0.01 * s, 0.04 * s), keep_size=True, p=0.4, **white),
        A.ElasticTransform(alpha=20 * s, sigma=8, p=0.25 * s, **white),
        A.RandomBrightnessContrast(brightness_limit=0.15 * s, contrast_limit=0.15 * s, p=0.6),
        A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2), shadow_dimension=5,
                       shadow_intensity_range=(0.1 * s, 0.3 * s), p=0.25 * s),
    ]
    if preset == "strong":  # camera artefacts on top: sensor noise and JPEG re-compression
        ts += [A.GaussNoise(std_range=(0.01, 0.05), p=0.3), A.ImageCompression(quality_range=(50, 95), p=0.3)]
    return A.Compose(ts)


def reseed(transform, seed: Sequence[int]) -> None:
    """Seeds every transform from its own child stream (albumentations' set_random_seed gives all one stream, so
    transforms with the same p would fire together)."""
    ss = np.random.SeedSequence(list(seed))

    def walk(t, seq):
        s = int(seq.generate_state(1)[0])
        t.random_generator = np.random.default_rng(s)
        t.py_random = random.Random(s)
        children = getattr(t, "transforms", None) or []
        for c, cs in zip(children, seq.spawn(len(children))):
            walk(c, cs)

    walk(transform, ss)


# ----------------------------------------------------------------------------------------------------------------
# Dataset and sampler
# ----------------------------------------------------------------------------------------------------------------
def build_dataset(files: Sequence[str], targets: np.ndarray, size: tuple[int, int], train: bool, aug: str = "none",
                  seed: int = 0) -> CacheDataset:
    """A training (augmented at preset `aug`, seeded from `seed`) or evaluation (no augmentation) dataset: each
    dataset is built with its transform here, and the engine uses it as given."""
    return CacheDataset(files, targets, build_transform(aug) if train else None, seed, size)


class CacheDataset:
    """Items: (uint8 image [3, H, W], float32 labels [C] with NaN = unknown, row index)."""

    def __init__(self, files: Sequence[str], targets: np.ndarray, transform=None, seed: int = 0,
                 size: tuple[int, int] | None = None):
        self.files = list(files)
        self.targets = np.asarray(targets, dtype=np.float32).reshape(len(self.files), -1)
        self.transform, self.seed, self.epoch = transform, int(seed), 0
        self.size = tuple(size) if size else tuple(imread(self.files[0]).shape[:2])  # (H, W) of the cache

    def __len__(self) -> int:
        return len(self.files)

    def at_epoch(self, epoch: int) -> CacheDataset:
        """A copy of this dataset whose augmentation draws epoch `epoch`'s images (the dataset itself is unchanged);
        a loader over it re-creates its workers each epoch, and they take this copy."""
        view = copy.copy(self)
        view.epoch = int(epoch)
        return view

    def example(self, n: int):
        """A random batch shaped like this dataset's (the engine's memory probe)."""
        import torch
        return torch.randint(0, 256, (n, 3, *self.size), dtype=torch.uint8)

    def load(self, i: int) -> tuple[np.ndarray, bool]:
        try:
            img = imread(self.files[i])
            if img.shape[:2] != self.size:
                raise ImageReadError(f"{self.files[i]}: size {img.shape[:2]} differs from the cache's {self.size}; "
                                     f"rebuild the cache at one size")
            return img, True
        except ImageReadError as e:
            print(f"[data] WARNING {e}; using a blank image with unknown labels", file=sys.stderr)
            return np.full((*self.size, 3), 255, np.uint8), False

    def __getitem__(self, i: int):
        import torch
        img, ok = self.load(i)
        if self.transform is not None:
            reseed(self.transform, (self.seed, self.epoch, i))
            img = self.transform(image=img)["image"]
        y = self.targets[i] if ok else np.full_like(self.targets[i], np.nan)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(y.copy()), i


class ShardedSampler:
    """Index order for one epoch, sharded over DDP ranks (rank r takes every world-th index).

    weights: per-row sampling weights (drawn with replacement, `num_samples` per epoch), else a permutation (or the
    identity when shuffle=False). pad=True (training) repeats indices so all ranks get equal counts, as
    DistributedSampler does; pad=False (validation) never duplicates, so every row is seen exactly once overall.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 weights: Sequence[float] | None = None, num_samples: int = 0, pad: bool = True):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, int(seed), rank, world
        self.weights = None if weights is None else np.asarray(weights, dtype=float)
        self.num_samples = int(num_samples) or n
        self.pad, self.epoch = pad, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        import torch
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        if self.weights is not None:
            idx = torch.multinomial(torch.as_tensor(self.weights), self.num_samples, replacement=True, generator=g)
        elif self.shuffle:
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        idx = idx.tolist()
        if self.pad and self.world > 1 and len(idx) % self.world:
            idx += idx[: self.world - len(idx) % self.world]
        return idx[self.rank::self.world]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        total = self.num_samples if self.weights is not None else self.n
        if self.pad:
            return -(-total // self.world)
        return len(range(self.rank, total, self.world))


def _seed_worker(worker_id: int) -> None:
    """Each loader worker gets its own numpy/python seed (from torch's per-worker seed). torch already runs workers
    with one thread; OpenCV's thread count is set to 1 in the parent before forking (see make_loader)."""
    import torch
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(ds: CacheDataset, sampler: ShardedSampler, batch_size: int, workers: int, train: bool,
                seed: int = 0, pin_memory: bool = False):
    import torch
    from torch.utils.data import DataLoader
    if workers > 0:
        opencv_before_fork()
    # drop the ragged last batch in training when there is a full one (batch-norm backbones fail on a batch of 1)
    drop_last = train and len(sampler) >= batch_size
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      pin_memory=pin_memory, worker_init_fn=_seed_worker, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed), prefetch_factor=4 if workers else None)


# ----------------------------------------------------------------------------------------------------------------
# Signals: the signal route's model input, its sources and its dataset
# ----------------------------------------------------------------------------------------------------------------
SIGNAL_FS = 100.0  # Hz of the signal route's model input (what the digitiser writes by default)
SIGNAL_SECONDS = 10.0  # s of it: a page's span; the input is [12, 1000]
SIGNAL_CLIP_MV = 5.0  # beyond this a reading is an artefact (a stray mark, a neighbouring row), not a lead
PAGE_VIEWS = 256  # page views drawn per blanked dataset (a few dozen distinct: layout x rhythm strips x paper speed)


def signal_input(sig: np.ndarray, fs: float) -> np.ndarray:
    """[12, n] mV at `fs` (NaN where nothing was read) -> the model's input: float32 [12, SIGNAL_SECONDS x SIGNAL_FS],
    resampled by area averaging (a NaN spreads to the output samples it touches), the first SIGNAL_SECONDS (a shorter
    record is NaN-padded), each lead's median subtracted (the offset of a digitised row or of baseline wander) and
    clipped to +-SIGNAL_CLIP_MV. The one conversion for synthetic, real and digitised signals."""
    import cv2
    x = np.asarray(sig, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != 12 or x.shape[1] < 2 or fs <= 0:
        raise ValueError(f"a signal is [12, n] with n >= 2 at fs > 0; got shape {x.shape} at fs {fs}")
    m = int(round(SIGNAL_SECONDS * SIGNAL_FS))
    keep = min(x.shape[1], int(round(SIGNAL_SECONDS * fs)))
    k = max(1, int(round(keep * SIGNAL_FS / fs)))
    y = np.full((12, m), np.nan, np.float32)
    y[:, :min(k, m)] = cv2.resize(x[:, :keep], (k, 12), interpolation=cv2.INTER_AREA)[:, :m]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN lead has no median: it stays NaN
        y -= np.nanmedian(y, axis=1, keepdims=True)
    return np.clip(y, -SIGNAL_CLIP_MV, SIGNAL_CLIP_MV)


def page_mask(params, n: int, fs: float) -> np.ndarray:
    """bool [12, n]: the samples of a record (from its start) that a page drawn with render `params` shows; the rest
    of what src.render.page_layout leaves out (other columns of a 3x4 page, leads a strip layout omits, time past a
    fast paper speed's span)."""
    from .config import LEADS
    from .render import page_layout
    keep = np.zeros((12, n), bool)
    for row in page_layout(params, n, fs, set(LEADS))["rows"]:
        for p in row["panels"]:
            keep[LEADS.index(p["lead"]), int(round(p["t_a"] * fs)):int(round(p["t_b"] * fs))] = True
    return keep


def _synth_one(i: int, seed: int) -> tuple[int, np.ndarray, dict]:
    from .synth import synth_record
    sig, meta = synth_record(seed, i)
    return i, signal_input(sig, meta["fs"]).astype(np.float16), meta["labels"]


def _real_one(row: dict) -> tuple[str, np.ndarray | None, str]:
    from .signals import load_signal
    try:
        sig, fs = load_signal(row)
        return row["id"], signal_input(sig, fs).astype(np.float16), ""
    except (ValueError, OSError, KeyError) as e:
        return row["id"], None, f"{type(e).__name__}: {e}"


def signal_set_table(spec: str) -> pd.DataFrame:
    """The records of a real signal set: `ptbxl:ROOT` (src.sources.read_ptbxl), `code15:ROOT` (read_code15), or a
    folder (path or slug under input/) with labels.csv (`record` or `id` = WFDB record path relative to the folder
    or its records/, plus label columns), as src.synth and ../shared/real write them. Columns: id, path, format,
    labels, (patient_id)."""
    from .config import find_input
    from .sources import read_code15, read_ptbxl
    kind, _, root = spec.partition(":")
    if kind == "ptbxl" and root:
        return read_ptbxl(root)
    if kind == "code15" and root:
        return read_code15(root)
    folder = find_input(spec)
    labels_csv = folder / "labels.csv"
    df = pd.read_csv(labels_csv, dtype=str)
    key = "record" if "record" in df.columns else "id"
    if key not in df.columns:
        raise SystemExit(f"{labels_csv}: needs a `record` (or `id`) column naming each WFDB record")
    base = folder / "records" if (folder / "records").is_dir() else folder
    table, _ = label_frame(df.rename(columns={key: "id"}).drop(columns=["path"], errors="ignore"), labels_csv,
                           [lb for lb in LABELS if lb in df.columns] or None)
    table["path"] = [str(base / i) for i in table["id"]]
    table["format"] = "wfdb"
    return table


def load_signal_source(spec: str, seed: int, workers: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """(table [id, labels..., (patient_id)], float16 signals [N, 12, 1000] as signal_input makes them) of one Stage I
    signal source: `synth:N` (N records of src.synth, record i from rng [seed, i]: cheap, so made in memory on every
    run) or a real signal set (signal_set_table). Unreadable records are dropped and counted."""
    from functools import partial
    from .utils import parallel_map
    kind, _, arg = spec.partition(":")
    if kind == "synth":
        try:
            n = int(arg)
        except ValueError:
            raise SystemExit(f"--sources={spec}: write synth:N, N records, e.g. synth:16000") from None
        out = sorted(parallel_map(partial(_synth_one, seed=seed), range(n), workers=workers, desc=f"synth {n}",
                                  chunksize=64), key=lambda o: o[0])
        table = pd.DataFrame([{"id": f"synth_{i}", **{lb: float(lab[lb]) for lb in LABELS}} for i, _, lab in out])
        return table, np.stack([o[1] for o in out]) if out else np.zeros((0, 12, 1000), np.float16)
    table = signal_set_table(spec)
    got = {i: (x, err) for i, x, err in parallel_map(_real_one, table.to_dict("records"), workers=workers,
                                                     desc=f"read {spec}", chunksize=16)}
    bad = [i for i in table["id"] if got[i][0] is None]
    if bad:
        print(f"[data] {spec}: {len(bad)} of {len(table)} records unreadable, skipped (e.g. {bad[0]}: "
              f"{got[bad[0]][1]})", file=sys.stderr)
    table = table[~table["id"].isin(bad)].reset_index(drop=True)
    if table.empty:
        raise SystemExit(f"--sources={spec}: no readable record")
    cols = ["id", *[lb for lb in LABELS if lb in table.columns], *(["patient_id"] if "patient_id" in table else [])]
    return table[cols], np.stack([got[i][0] for i in table["id"]])


def _digitised_one(item: tuple[Path, str]) -> tuple[str, np.ndarray | None, str]:
    from .digitize import read_digitised
    folder, i = item
    try:
        sig, fs = read_digitised(folder, i)
        x = signal_input(sig, fs)
    except (ValueError, OSError) as e:
        return i, None, f"{type(e).__name__}: {e}"
    return (i, x.astype(np.float16), "") if np.isfinite(x).any() else (i, None, "nothing was read (every lead NaN)")


def join_signals(table: pd.DataFrame, folder: str | Path, what: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    """Labels joined to the digitised records in `folder` (python -m src.digitize --out=folder: <id>.hea/.dat), as
    (table, float16 signals [N, 12, n] from signal_input in the table's order). Rows without a record (a photo the
    digitiser could not read: see its digitised.csv) or with nothing read are dropped and counted, never silently."""
    from .utils import parallel_map
    folder = Path(folder)
    have = [i for i in table["id"] if (folder / f"{i}.hea").is_file()]
    got = {i: (x, err) for i, x, err in parallel_map(_digitised_one, [(folder, i) for i in have], desc="read signals",
                                                     chunksize=16)}
    ok = table["id"].map(lambda i: i in got and got[i][0] is not None).to_numpy(bool)
    bad = [i for i in have if got[i][0] is None]
    if not ok.all():
        print(f"[data] {what or folder}: {len(table) - len(have)} labelled ids have no digitised record in {folder}, "
              f"{len(bad)} records hold no usable reading" + (f" (e.g. {bad[0]}: {got[bad[0]][1]})" if bad else "")
              + f"; using {int(ok.sum())}", file=sys.stderr)
    out = table[ok].reset_index(drop=True)
    if out.empty:
        raise ValueError(f"no labelled digitised records in {folder} ({what}): digitise the photos first (python -m "
                         f"src.digitize --images=<train folder> --out={folder}), and check that the ids match")
    return out, np.stack([got[i][0] for i in out["id"]])


def build_signal_dataset(signals: np.ndarray, targets: np.ndarray, train: bool, seed: int = 0,
                         blank: bool = False) -> SignalDataset:
    """A signal dataset with its transform: `blank` shows each record as a random page of the renderer's layouts
    would (one of PAGE_VIEWS page_masks over render.sample_params photo pages, drawn per epoch in training, fixed per
    record in evaluation), for complete records (Stage I) that should look like digitised pages; `train` adds a gain
    jitter (+-10 %, a device's or a digitiser's amplitude scale)."""
    views = None
    if blank:
        from .render import sample_params
        rng = np.random.default_rng([seed, 7])
        views = np.stack([page_mask(sample_params(rng, "photo"), signals.shape[-1], SIGNAL_FS)
                          for _ in range(PAGE_VIEWS)])
    return SignalDataset(signals, targets, train, seed, views)


class SignalDataset:
    """Items: (float32 signal [12, n] mV, NaN where a page does not show it; float32 labels [C], NaN = unknown; row
    index). Randomness is seeded per sample from (seed, epoch, index), as CacheDataset's."""

    def __init__(self, signals: np.ndarray, targets: np.ndarray, train: bool, seed: int = 0,
                 views: np.ndarray | None = None):
        self.signals, self.views = signals, views  # views: bool [V, 12, n] page masks, one drawn per item (or None)
        self.targets = np.asarray(targets, dtype=np.float32).reshape(len(signals), -1)
        self.train, self.seed, self.epoch = train, int(seed), 0
        self.size = tuple(signals.shape[1:])  # (12, n)

    def __len__(self) -> int:
        return len(self.signals)

    def at_epoch(self, epoch: int) -> SignalDataset:
        view = copy.copy(self)
        view.epoch = int(epoch)
        return view

    def example(self, n: int):
        """A random batch shaped like this dataset's (the engine's memory probe)."""
        import torch
        return torch.randn(n, *self.size)

    def __getitem__(self, i: int):
        import torch
        x = self.signals[i].astype(np.float32)
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, i])
        if self.views is not None:
            x = np.where(self.views[rng.integers(len(self.views))], x, np.nan)
        if self.train:
            x = x * np.float32(1 + 0.1 * rng.standard_normal())
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(self.targets[i].copy()), i
