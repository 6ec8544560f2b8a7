"""Predict the test images with every fold model of a Stage II run (or of several, of both routes) and vote them into
a submission.

    python -m src.infer --run outputs/train/stage2 --out submissions/submission.csv     # hard vote, ties broken
    python -m src.infer --run outputs/train/stage2 --vote hard                           # the paper's pure vote
    python -m src.infer --run stage2 --vote soft --folds 0,1 --batch_size 64 --amp bf16
    python -m src.infer --run stage2 --test_dir /kaggle/input/<comp>/test --sample_submission .../sample_submission.csv
    python -m src.infer --run ecgka-stage2/outputs/train/stage2,ecgka-stage2b/outputs/train/stage2   # two sessions
    python -m src.infer --run stage2,sig-stage2 --route both     # image and signal folds: one vote over all ten

What it does, in order:
1. Reads the run through src.run (RunFolder, FoldModel): fold<k>/best.pt for the chosen folds, fold<k>/thresholds.json
   (per-class cut-offs chosen on that fold's OOF predictions; 0.5 when missing) and <run>/preprocess.yaml, the
   PreprocessConfig the training cache was built with. Test images go through `src.preprocess.preprocess_image`
   with that config: the very function and settings training saw, never a copy. `--run` may list several run
   folders (folds trained in different sessions, e.g. Kaggle kernel versions, live in different folders): fold<k>
   is gathered from all of them. The same fold in two folders is an error naming both unless the two checkpoints
   are the same bytes; the folders must share the preprocessing (the settings that change pixels, and the ROI
   weights' content), and every fold of a route the architecture. Each run folder says its route (config.yaml):
   image runs read preprocessed photos; signal runs read the photo digitised by src.digitize.digitize_image (its
   defaults, as `python -m src.digitize` digitised the training photos) and made a model input by
   src.data.signal_input. --route picks which runs vote: image, signal, or both (default: every run given; the
   paper's hard vote over all fold models of both routes, each fold at its own thresholds).
   The output folder is checked for write access and space before any model or image is loaded.
2. Test ids and the submission's columns come from sample_submission.csv (default: beside the run's train.csv; the
   images from its test/ folder). Images are read and preprocessed by DataLoader workers while the models run
   (started by spawn, not fork, when the models are on CUDA: see predict).
3. Every fold model predicts every batch (AMP on CUDA: bf16 where supported, else fp16; channels_last), and the
   folds are voted:
     hard  (the paper's) each fold says yes/no per class at its own threshold; the score is the share of folds
           saying yes, so five folds give {0, 0.2, ..., 1}. AUROC only needs an order; these ties make the ensemble
           robust to one badly calibrated fold but cost resolution: on the CPU demo's 200 test photos hard scored
           0.904 where soft scored 0.960 and hard_tiebreak 0.960 on the same five fold models (README "Results").
     hard_tiebreak (the default) the hard vote, with images that got the same number of votes ordered by their
           mean probability: the vote still decides every order it decides; the folds' scores decide the ties.
     soft  mean probability.
     rank  mean of each fold's per-class ranks scaled to (0, 1]: order-preserving, calibration-free.
4. Writes the submission (ids, column names and order exactly as sample_submission.csv, checked before an atomic
   write), <out stem>_folds.csv (id, fold, status, each fold's probabilities), <out stem>_info.json, and, when some
   images could not be read or preprocessed, <out stem>_unreadable.csv. Those images are scored as if every fold
   had predicted the training prevalence of each class (so the score is on the vote's own scale) and the submission
   stays complete, as long as they are at most --max_unreadable of the test set (default 1 %). More means something
   systematic (a wrong --test_dir, preprocessing failing in the workers): the run then stops with the first reasons
   and writes no submission, because a file of fallback scores looks valid and scores like chance.

TTA: `--tta flip` averages each fold's probabilities over the image and its left-right mirror. Mirroring an ECG is
not a label-preserving change: it reverses time (P waves after QRS, inverted ST slopes) and moves the lead columns
(in the 3x4 layout I-III trade places with V4-V6 and aVR-aVF with V1-V3; the printed names come out mirrored), so
a model not trained on flips sees an unphysical page and the average mostly dilutes the real view. A vertical flip
would invert polarity, which changes diagnoses (ST elevation becomes depression) and is not offered. `none` is the
default and what the paper submits; `flip` exists so its cost can be measured rather than assumed.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .config import find_input, parse_args, paths
from .engine import autocast, loader_workers, setup_runtime, to_input
from .run import FoldModel, RunFolder, gather_folds, load_fold_models, resolve_runs, shared_preprocess_config
from .sources import require_valid_competition
from .utils import ImageReadError, imread, opencv_before_fork, write_csv, write_json

VOTES = ("hard_tiebreak", "hard", "soft", "rank")
ROUTES = ("image", "signal", "both")


# ----------------------------------------------------------------------------------------------------------------
# Ensembling: pure functions over per-fold probabilities [folds, N, C]
# ----------------------------------------------------------------------------------------------------------------
def hard_vote(probs: np.ndarray, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """The paper's vote: each fold says yes/no per class at its own thresholds ([folds, C], or one number); the score
    is the fraction of folds saying yes, so five folds give {0, 0.2, ..., 1}. `>=` as in src.score's F1."""
    p = np.asarray(probs, dtype=float)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=float), (p.shape[0], p.shape[2]))
    return (p >= thr[:, None, :]).mean(axis=0)


def hard_tiebreak_vote(probs: np.ndarray, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """The hard vote with its ties broken by the mean probability: images are ordered by their number of yes votes
    first and, among equal counts, by their mean probability. Five folds give 6 vote levels, so on a test set of
    thousands most images share a level and their order (all AUROC sees) is arbitrary; here the folds' own scores
    decide it while the vote still decides everything between levels. Score = (votes + mean probability) /
    (folds + 1), in [0, 1]; a higher vote count never scores lower."""
    p = np.asarray(probs, dtype=float)
    return (hard_vote(p, thresholds) * p.shape[0] + p.mean(axis=0)) / (p.shape[0] + 1)


def soft_vote(probs: np.ndarray) -> np.ndarray:
    """Mean probability over folds."""
    return np.asarray(probs, dtype=float).mean(axis=0)


def rank_vote(probs: np.ndarray) -> np.ndarray:
    """Mean over folds of each fold's scores turned into ranks in (0, 1] per class (ties share their average rank).

    AUROC only sees order, so this averages what each fold is sure of (the order) and ignores each fold's calibration
    (one overconfident fold cannot dominate the mean as it can in a soft vote)."""
    from scipy.stats import rankdata
    p = np.asarray(probs, dtype=float)
    return (rankdata(p, axis=1) / p.shape[1]).mean(axis=0)


def ensemble(probs: np.ndarray, vote: str, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    if vote == "hard":
        return hard_vote(probs, thresholds)
    if vote == "hard_tiebreak":
        return hard_tiebreak_vote(probs, thresholds)
    if vote == "soft":
        return soft_vote(probs)
    if vote == "rank":
        return rank_vote(probs)
    raise ValueError(f"unknown vote {vote!r}; choose one of {', '.join(VOTES)}")


def vote_with_fallback(probs: np.ndarray, bad: np.ndarray, fallback: np.ndarray, vote: str,
                       thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """The vote over all N images [N, C], where the `bad` ones (unreadable; [N], or [F, N] per fold: a signal fold
    has nothing to read where the digitiser found no lead) count as if every fold (that fold) had predicted
    `fallback` [C] (the training prevalence) for them. Their score is then on the vote's own scale: under
    hard_tiebreak a prevalence of 0.3 below every threshold is 0 votes and a tie-break of 0.3, i.e. 0.3 / (folds + 1),
    where the raw 0.3 would outrank most images one fold voted for; under rank they are ranked among the real
    predictions."""
    p = np.array(probs, dtype=float)
    p[np.broadcast_to(np.asarray(bad, bool), p.shape[:2])] = np.asarray(fallback, dtype=float)
    return ensemble(p, vote, thresholds)


# ----------------------------------------------------------------------------------------------------------------
# The competition's files
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class InferConfig:
    run: str  # Stage II run folder (outputs/train/<name> or <name>), a comma list or a glob: fold<k> gathered from all
    route: str = "both"  # which of those runs vote: image | signal | both (every one; one vote over all their folds)
    vote: str = "hard_tiebreak"  # fold ensembling: hard_tiebreak (hard, ties ordered by mean prob) | hard (the
    # paper's: share of folds above their threshold) | soft (mean probability) | rank (mean per-fold rank)
    tta: str = "none"  # none | flip (left-right mirror; unphysical for ECG pages, see the module docstring)
    out: str = ""  # submission CSV (default: <submissions>/submission.csv)
    test_dir: str = ""  # test images (default: test/ beside sample_submission.csv)
    sample_submission: str = ""  # ids + columns to submit (default: beside the run's train.csv)
    folds: str = "all"  # folds to use: all (every fold<k> with a checkpoint) or a comma list such as 0,1,2,3,4
    checkpoint: str = "best.pt"  # file name inside each fold folder
    batch_size: int = 32  # images per forward pass (every fold model sees each batch)
    workers: int = -1  # loader processes reading + preprocessing images (-1: one per core, at most 8; 0: inline)
    threads: int = 0  # torch CPU threads (0: one per core)
    amp: str = "auto"  # auto (bf16 on Ampere+ GPUs, fp16 on older, off on CPU) | off | bf16 | fp16
    channels_last: bool = True  # NHWC memory layout (faster convolutions)
    max_unreadable: float = 0.01  # share of test images allowed to fail reading/preprocessing; more: no submission


def competition_files(cfg: InferConfig, run_cfg: dict) -> tuple[Path, Path]:
    """(sample_submission.csv, test image folder) from the options, else from the run's train.csv location."""
    def resolve(p: str) -> Path:  # a path, or a slug-relative path under the input roots (Kaggle)
        try:
            return find_input(p)
        except FileNotFoundError:
            return Path(p)
    if cfg.sample_submission:
        sample = resolve(cfg.sample_submission)
    else:
        try:
            sample = find_input(run_cfg.get("train_csv", "")).parent / "sample_submission.csv"
        except FileNotFoundError as e:
            raise SystemExit(f"cannot find the competition of this run ({e}); pass --sample_submission and "
                             f"--test_dir") from None
    if not sample.is_file():
        raise SystemExit(f"{sample} not found; pass --sample_submission=<competition>/sample_submission.csv")
    test_dir = resolve(cfg.test_dir) if cfg.test_dir else sample.parent / "test"
    if not test_dir.is_dir():
        raise SystemExit(f"test image folder {test_dir} not found; pass --test_dir")
    if (sample.parent / "train.csv").is_file() and test_dir.resolve() == (sample.parent / "test").resolve():
        require_valid_competition(sample.parent, "infer", splits=())  # its tables; images are counted below
    return sample, test_dir


def read_sample(sample: Path) -> tuple[pd.DataFrame, str, list[str]]:
    header = list(pd.read_csv(sample, nrows=0).columns)
    if len(header) < 2:
        raise SystemExit(f"{sample}: needs an id column and label columns, found {header}")
    df = pd.read_csv(sample, dtype={header[0]: str})
    if df[header[0]].duplicated().any():
        raise SystemExit(f"{sample}: duplicate ids, e.g. {df[header[0]][df[header[0]].duplicated()].iloc[0]!r}")
    return df, header[0], header[1:]


def training_prevalence(runs: list[RunFolder], labels: list[str]) -> np.ndarray:
    """Share of positives per class among the known training labels (the runs' OOF tables, each image once: they
    cover every training image once all folds are done; else train.csv). The fallback of an unreadable test image."""
    oofs = [df for df in (r.read_oof() for r in runs)
            if df is not None and all(lb in df.columns for lb in labels) and len(df)]
    if oofs:
        df = pd.concat(oofs).drop_duplicates("id")
        return np.nan_to_num(df[labels].astype(float).mean().to_numpy(), nan=0.5)
    for run in runs:
        try:
            df = pd.read_csv(find_input(run.config().get("train_csv", "")))
            return np.nan_to_num(df[labels].astype(float).mean().to_numpy(), nan=0.5)
        except (FileNotFoundError, KeyError, ValueError):
            continue
    print("[infer] WARNING no training labels found; unreadable images get 0.5", file=sys.stderr)
    return np.full(len(labels), 0.5)


# ----------------------------------------------------------------------------------------------------------------
# Test images
# ----------------------------------------------------------------------------------------------------------------
class TestImages:
    """Items: (uint8 image [3, H, W] preprocessed by `pcfg`, float32 signal [12, n] digitised when `signal`, row index,
    error '' or message, seconds spent reading + preprocessing + digitising). An input no fold needs is empty."""

    def __init__(self, files: list[str | None], ids: list[str], pcfg, signal: bool = False):
        self.files, self.ids, self.pcfg, self.signal = files, ids, pcfg, signal

    def __len__(self) -> int:
        return len(self.files)

    def inputs(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        from .data import signal_input
        from .preprocess import preprocess_image
        if self.files[i] is None:
            raise ImageReadError(f"no image for id {self.ids[i]} in the test folder")
        img = imread(self.files[i])
        x = preprocess_image(img, self.pcfg)[0] if self.pcfg is not None else None
        s = None
        if self.signal:  # where the digitiser reads no lead, the signal is all NaN: see predict
            from .digitize import digitize_image
            d = digitize_image(img)
            s = signal_input(d.signal, d.fs)
        return x, s

    def __getitem__(self, i: int):
        import torch
        from .data import SIGNAL_FS, SIGNAL_SECONDS
        t0 = time.perf_counter()
        err = ""
        try:
            x, s = self.inputs(i)
        except ImageReadError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 -- one odd image never stops a submission; it is listed instead
            err = f"{self.files[i]}: preprocessing failed ({type(e).__name__}: {e})"
        if err:
            x = None if self.pcfg is None else np.full((*self.pcfg.size, 3), 255, np.uint8)
            s = np.full((12, int(SIGNAL_SECONDS * SIGNAL_FS)), np.nan, np.float32) if self.signal else None
        x = (torch.zeros(0, dtype=torch.uint8) if x is None
             else torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        s = torch.zeros(0) if s is None else torch.from_numpy(np.ascontiguousarray(s, np.float32))
        return x, s, i, err, time.perf_counter() - t0


def find_images(test_dir: Path, ids: list[str]) -> list[str | None]:
    """Image path per id (file name or stem match under test_dir, subfolders included); None where absent."""
    from .sources import image_index  # the competition reader's own id -> file rule
    index = image_index(test_dir)
    return [str(index[i]) if i in index else (str(index[Path(i).stem]) if Path(i).stem in index else None)
            for i in ids]


def _spawned_worker(worker_id: int) -> None:
    """Start of a spawned loader worker: one OpenCV thread (a fresh process would take one per core; forked workers
    inherit the parent's one, see opencv_before_fork) and the per-worker seed."""
    import cv2
    from .data import _seed_worker
    cv2.setNumThreads(1)
    _seed_worker(worker_id)


def predict(folds: list[FoldModel], dataset: TestImages, rt, batch_size: int = 32, workers: int = 0, tta: str = "none",
            channels_last: bool = True, start_method: str | None = None) -> dict:
    """Every fold's probabilities for every image (an image fold reads the preprocessed image, a signal fold the
    digitised signal): {"probs" [F, N, C] (NaN rows where unreadable, and for a signal fold where the digitiser read
    no lead), "errors" [N],
    "seconds": {"preprocess" (summed over workers), "model", "wall"}}. `start_method` of the loader workers: None
    chooses (spawn when the models are on CUDA, else the platform's default, fork on Linux)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from .data import _seed_worker
    if tta not in ("none", "flip"):
        raise SystemExit(f"--tta={tta}: choose none or flip")
    n, c = len(dataset), len(folds[0].order)
    probs = np.full((len(folds), n, c), np.nan, np.float32)
    errors = [""] * n
    # With the models on CUDA the workers are spawned, not forked. A forked child of a process that has initialised
    # CUDA cannot use CUDA at all, and libraries reach for it on their own: ultralytics put the ROI detector on the
    # GPU in every worker, every image failed and a constant submission was written (issue 21). A spawned worker
    # starts clean, so nothing it runs can hit that; preprocessing still names the CPU for the detector (src.roi:
    # the cache was built that way, and workers hold no CUDA context). The cost is one import of torch and OpenCV per
    # worker, seconds per run. The alternative, the detector on the GPU in this process in batches, was rejected: it
    # runs inside preprocess_image (for some strategies and fallbacks only, after decoding the full photo), so this
    # process would decode every photo or the one preprocessing function training and inference share would split.
    start_method = start_method or ("spawn" if workers and rt.device.type == "cuda" else None)
    if workers and start_method in (None, "fork"):
        opencv_before_fork()  # preprocessing happens in the workers, so this process needs no OpenCV threads
    init = None if not workers else _seed_worker if start_method in (None, "fork") else _spawned_worker
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, worker_init_fn=init,
                        multiprocessing_context=start_method if workers else None,
                        pin_memory=rt.device.type == "cuda", prefetch_factor=4 if workers else None)
    t_pre = t_model = 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"infer {len(folds)} fold(s)", dynamic_ncols=True)
    with torch.inference_mode():
        for x, sig, idx, errs, secs in loader:
            t_pre += float(secs.sum())
            idx = idx.numpy()
            tm = time.perf_counter()
            for f, fold in enumerate(folds):
                xi = to_input(x if fold.route == "image" else sig, rt.device, *fold.norm, channels_last)
                with autocast(rt):
                    p = torch.sigmoid(fold.model(xi).float())
                    if tta == "flip" and fold.route == "image":
                        p = 0.5 * (p + torch.sigmoid(fold.model(torch.flip(xi, dims=[3])).float()))
                    if fold.route == "signal":  # no lead read: nothing to predict from
                        p[torch.isnan(xi).flatten(1).all(1)] = float("nan")
                probs[f, idx] = p.cpu().numpy()[:, fold.order]
            t_model += time.perf_counter() - tm  # .cpu() above synchronises the device
            for j, e in zip(idx, errs):
                errors[j] = e
            bar.update(len(idx))
            bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - t0, 1e-9):.1f}")
    bar.close()
    bad = np.array([bool(e) for e in errors])
    probs[:, bad] = np.nan
    wall = time.perf_counter() - t0
    return {"probs": probs, "errors": errors,
            "seconds": {"preprocess": t_pre, "model": t_model, "wall": wall, "images_per_s": n / max(wall, 1e-9)}}


# ----------------------------------------------------------------------------------------------------------------
# The ensemble of one or more runs: what main runs, callable on other images (bench.sim2real)
# ----------------------------------------------------------------------------------------------------------------
def select_runs(spec: str, route: str) -> list[RunFolder]:
    """The run folders of --run (resolve_runs) that vote under --route: image, signal, or both (every one)."""
    if route not in ROUTES:
        raise SystemExit(f"--route={route}: choose one of {', '.join(ROUTES)}")
    given = resolve_runs(spec)
    runs = [r for r in given if route in ("both", r.route)]
    if not runs:
        raise SystemExit(f"--route={route}: none of the --run folders is a {route} run (they are "
                         f"{', '.join(f'{r} ({r.route})' for r in given)})")
    return runs


def run_checkpoints(runs: list[RunFolder], folds: str = "all", checkpoint: str = "best.pt"
                    ) -> tuple[object, dict[str, dict[int, Path]]]:
    """(the image runs' shared PreprocessConfig, None without image runs; {route: {k: checkpoint}})."""
    by_route = {route: [r for r in runs if r.route == route] for route in ("image", "signal")}
    pcfg = shared_preprocess_config(by_route["image"]) if by_route["image"] else None
    return pcfg, {route: gather_folds(rs, folds, checkpoint) for route, rs in by_route.items() if rs}


def load_folds(ckpts: dict[str, dict[int, Path]], pcfg, labels: list[str] | None, device,
               channels_last: bool = True) -> list[FoldModel]:
    """Every fold model of run_checkpoints, checked against its run: image input size as preprocess.yaml, route as
    the run folder's."""
    folds = [f for c in ckpts.values() for f in load_fold_models(c, labels, device, channels_last)]
    for fold in folds:
        if fold.route == "image" and fold.size and fold.size != tuple(pcfg.size):
            raise SystemExit(f"{fold.path} was trained on {list(fold.size)} images but preprocess.yaml gives "
                             f"{list(pcfg.size)}; the run folder mixes caches")
        run_route = RunFolder.of_checkpoint(fold.path).route
        if fold.route != run_route:
            raise SystemExit(f"{fold.path} is a {fold.route} model in a {run_route} run folder; retrain it or move it "
                             f"to a run of its route")
    return folds


def vote_scores(probs: np.ndarray, bad: np.ndarray, folds: list[FoldModel], runs: list[RunFolder],
                labels: list[str], vote: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """predict's probabilities [F, N, C] voted at each fold's thresholds, unreadable images (`bad` [N]) and signal
    folds that read no lead scored as the training prevalence -> (scores [N, C], those folds [F, N], prevalence)."""
    thresholds = np.stack([f.thresholds for f in folds])
    prev = training_prevalence(runs, labels)
    unread = np.isnan(probs).any(axis=2) & ~bad  # [F, N]: signal folds where the digitiser read no lead
    return vote_with_fallback(probs, bad | unread, prev, vote, thresholds), unread, prev


# ----------------------------------------------------------------------------------------------------------------
# Submission
# ----------------------------------------------------------------------------------------------------------------
def check_submission(sub: pd.DataFrame, sample: pd.DataFrame, where: str = "submission") -> None:
    """The file Kaggle will accept: same columns in the same order, same ids in the same order, finite numbers."""
    if list(sub.columns) != list(sample.columns):
        raise ValueError(f"{where}: columns {list(sub.columns)} differ from sample_submission's {list(sample.columns)}")
    id_col = sample.columns[0]
    if not sub[id_col].astype(str).equals(sample[id_col].astype(str)):
        raise ValueError(f"{where}: ids or their order differ from sample_submission.csv")
    vals = sub[list(sample.columns[1:])].to_numpy(dtype=float)
    if not np.isfinite(vals).all():
        raise ValueError(f"{where}: {int((~np.isfinite(vals)).sum())} missing/non-finite scores")


def side_path(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.stem}_{suffix}")


def output_bytes(n: int, n_folds: int, n_labels: int, id_len: int) -> int:
    """A generous estimate of what one run writes: the submission, the per-fold table and the side files."""
    return n * (n_folds + 2) * (id_len + 16 + 24 * n_labels) + (1 << 20)


def check_writable(out: Path, need: int) -> None:
    """Fails now, naming the folder, when `out`'s folder cannot be created, written or hold `need` bytes (a
    temporary file of that size is written there and removed), not after every image has been processed."""
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < need:
            raise OSError(f"{free / 1e6:.1f} MB free, about {need / 1e6:.1f} MB needed")
        with tempfile.TemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".probe") as f:
            block = bytes(1 << 20)
            for _ in range(-(-need // len(block))):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise SystemExit(f"[infer] cannot write the submission into {folder.resolve()} ({e}): free space there or "
                         f"pass --out=<a file in a writable folder>") from None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(InferConfig, argv)
    if cfg.vote not in VOTES:
        raise SystemExit(f"--vote={cfg.vote}: choose one of {', '.join(VOTES)}")
    if not 0 <= cfg.max_unreadable <= 1:
        raise SystemExit(f"--max_unreadable={cfg.max_unreadable}: a share of the test images, 0 to 1 (0.01 = 1 %)")
    runs = select_runs(cfg.run, cfg.route)
    sample_path, test_dir = competition_files(cfg, runs[0].config())
    sample, id_col, labels = read_sample(sample_path)
    out = Path(cfg.out) if cfg.out else paths().submissions / "submission.csv"
    pcfg, ckpts = run_checkpoints(runs, cfg.folds, cfg.checkpoint)
    ids = sample[id_col].tolist()
    n_folds = sum(map(len, ckpts.values()))
    check_writable(out, output_bytes(len(ids), n_folds, len(labels), max(map(len, ids), default=0)))
    rt = setup_runtime(cfg)
    folds = load_folds(ckpts, pcfg, labels, rt.device, cfg.channels_last)
    no_thr = [f.name for f in folds if not f.thresholds_found]
    if cfg.vote.startswith("hard") and no_thr:
        print(f"[infer] folds {no_thr} have no thresholds.json: voting at 0.5", file=sys.stderr)

    files = find_images(test_dir, ids)
    workers = loader_workers(cfg.workers)
    reads = ([f"preprocess {pcfg.strategy} {pcfg.size[0]}x{pcfg.size[1]}"] if pcfg else []) + \
        (["digitise"] if "signal" in ckpts else [])
    print(f"[infer] {', '.join(map(str, runs))}: folds {[f.name for f in folds]} "
          f"({', '.join(sorted({f.arch for f in folds}))}), {len(ids)} test images from {test_dir}, "
          f"{' + '.join(reads)}, vote {cfg.vote}, tta {cfg.tta}, {rt.device.type} amp {rt.amp_dtype}")
    res = predict(folds, TestImages(files, ids, pcfg, "signal" in ckpts), rt, cfg.batch_size, workers, cfg.tta,
                  cfg.channels_last)
    probs, errors = res["probs"], res["errors"]
    bad = np.array([bool(e) for e in errors])
    unreadable = [{"id": ids[i], "path": files[i] or "", "error": errors[i]} for i in np.flatnonzero(bad)]
    if unreadable:
        write_csv(side_path(out, "unreadable.csv"), pd.DataFrame(unreadable))
    if len(unreadable) > cfg.max_unreadable * len(ids):
        first = "\n  ".join(u["error"] for u in unreadable[:5])
        raise SystemExit(f"[infer] {len(unreadable)} of {len(ids)} test images ({len(unreadable) / len(ids):.1%}) "
                         f"could not be read or preprocessed, more than --max_unreadable={cfg.max_unreadable:g}: "
                         f"no submission written (fallback scores for them would look valid and score like chance). "
                         f"All are listed in {side_path(out, 'unreadable.csv')}; the first reasons:\n  {first}\n"
                         f"Fix the cause (the test folder, the preprocessing), or raise --max_unreadable if these "
                         f"images are truly broken.")

    scores, unread, prev = vote_scores(probs, bad, folds, runs, labels, cfg.vote)
    if unread.any():
        print(f"[infer] the digitiser read no lead on {int(unread.any(0).sum())} of {len(ids)} test images: their "
              f"signal folds count as the training prevalence (listed in {side_path(out, 'folds.csv').name} as "
              f"not_digitised)", file=sys.stderr)
    sub = pd.DataFrame({id_col: ids, **{lb: scores[:, j] for j, lb in enumerate(labels)}})
    try:
        check_submission(sub, sample, str(out))
    except ValueError as e:  # cannot happen unless this code is wrong; never write a file Kaggle would reject
        raise SystemExit(f"[infer] refusing to write: {e}") from None
    write_csv(out, sub)

    per_fold = pd.concat([pd.DataFrame({id_col: ids, "fold": f.fold, "route": f.route,
                                        "status": np.where(bad, "unreadable",
                                                           np.where(unread[i], "not_digitised", "ok")),
                                        **{lb: probs[i, :, j] for j, lb in enumerate(labels)}})
                          for i, f in enumerate(folds)], ignore_index=True)
    write_csv(side_path(out, "folds.csv"), per_fold)
    if unreadable:
        print(f"[infer] {len(unreadable)} image(s) unreadable, scored as if every fold had predicted the training "
              f"prevalence {np.round(prev, 3).tolist()}; listed in {side_path(out, 'unreadable.csv')}:",
              file=sys.stderr)
        for u in unreadable[:10]:
            print(f"  {u['error']}", file=sys.stderr)
    sec = res["seconds"]
    info = {"runs": [str(r) for r in runs], "vote": cfg.vote, "tta": cfg.tta, "folds": [f.fold for f in folds],
            "routes": [f.route for f in folds], "arch": ", ".join(sorted({f.arch for f in folds})), "labels": labels,
            "thresholds": {f.name: f.thresholds.tolist() for f in folds}, "thresholds_missing": no_thr,
            "preprocess": dataclasses.asdict(pcfg) if pcfg else None, "n": len(ids),
            "unreadable": unreadable, "not_digitised": int(unread.any(0).sum()), "prevalence": prev.tolist(),
            "seconds": sec, "device": rt.device.type,
            "amp": str(rt.amp_dtype)}
    write_json(side_path(out, "info.json"), info)
    print(f"[infer] {len(ids)} images in {sec['wall']:.1f}s ({sec['images_per_s']:.1f} img/s; model "
          f"{sec['model']:.1f}s, preprocessing {sec['preprocess']:.1f}s summed over {max(workers, 1)} worker(s)) -> "
          f"{out} (+ {side_path(out, 'folds.csv').name})")
    return {"out": str(out), "submission": sub, "probs": probs, "errors": errors, "info": info}


if __name__ == "__main__":
    main()
