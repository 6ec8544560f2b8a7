"""Small reusable pieces every stage shares: atomic writes, safe image I/O, seeding, run folders, parallel maps,
process-group facts. One idea each; no stage re-implements any of these.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import tempfile
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .config import REPO, config_dict


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes: temp file in the same folder, then os.replace, so a killed process never leaves half a file.
# ----------------------------------------------------------------------------------------------------------------
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path beside `path`; renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the permissions open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def temp_target(name: str) -> str | None:
    """The file name an atomic_path temporary file (`.<name>.<random>.tmp<ext>`) stands for; None for other names.
    A process killed mid-write leaves such a file; resuming stages delete the ones of the items they redo."""
    m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp(\.[^.]+)?", name)
    return m.group(1) if m else None


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_csv(path: str | Path, df, **kw) -> None:
    kw.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kw)


def torch_save(obj, path: str | Path) -> None:
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ----------------------------------------------------------------------------------------------------------------
# Images. In memory every image is RGB uint8 HxWx3; OpenCV's BGR stays inside these two functions.
# ----------------------------------------------------------------------------------------------------------------
class ImageReadError(IOError):
    pass


def looks_truncated(data: bytes, suffix: str) -> bool:
    # OpenCV decodes a truncated JPEG into a half-grey image with only a warning; check the end markers ourselves.
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-32:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-64:]
    return False


def imread(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8. Raises ImageReadError naming the file for missing/unreadable/truncated files."""
    import cv2
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data or looks_truncated(data, path.suffix.lower()):
        raise ImageReadError(f"{path}: empty or truncated image file; re-copy or re-download it")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"{path}: not a decodable image (PNG/JPEG expected); re-copy or remove it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(img: np.ndarray, ext: str = ".png", quality: int = 95, png_compression: int = 3) -> bytes:
    import cv2
    ext = ext if ext.startswith(".") else "." + ext
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise IOError(f"could not encode image as {ext}")
    return buf.tobytes()


def imwrite(path: str | Path, img: np.ndarray, **kw) -> None:
    """Atomic image write; the format follows the suffix (.png lossless, .jpg with `quality`)."""
    path = Path(path)
    write_bytes(path, encode_image(img, path.suffix, **kw))


# ----------------------------------------------------------------------------------------------------------------
# Reproducibility and run folders
# ----------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int, rank: int = 0) -> None:
    """Seeds python, numpy and torch; each DDP rank gets its own stream (seed + rank)."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    try:
        import torch
        torch.manual_seed(s)
    except ImportError:
        pass


def git_info() -> str:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    sha = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return f"{sha}{' (dirty)' if dirty else ''}\n"


def prepare_run_dir(path: str | Path, cfg) -> Path:
    """Creates a self-describing run folder: resolved config.yaml and git.txt (SHA + dirty flag)."""
    import yaml
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_text(path / "git.txt", git_info())
    return path


# ----------------------------------------------------------------------------------------------------------------
# Parallelism
# ----------------------------------------------------------------------------------------------------------------
def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def parallel_map(fn: Callable, items: Iterable, workers: int = 0, desc: str = "", total: int | None = None,
                 chunksize: int = 1) -> Iterator:
    """Yields fn(item) for every item (unordered when workers > 1) with a tqdm bar.

    workers=0 means one per core; workers=1 runs in this process (debuggable, and what tests use). Worker processes are
    forked with one BLAS/torch thread each so n workers use n cores, not n².
    """
    from tqdm import tqdm
    items = list(items)
    total = len(items) if total is None else total
    workers = default_workers() if workers <= 0 else workers
    bar = tqdm(total=total, desc=desc, dynamic_ncols=True, disable=total == 0)
    try:
        if workers == 1 or len(items) <= 1:
            for it in items:
                yield fn(it)
                bar.update()
            return
        import cv2
        cv2_threads = opencv_before_fork()
        try:
            with get_context("fork").Pool(workers, initializer=_single_thread) as pool:
                for r in pool.imap_unordered(fn, items, chunksize=chunksize):
                    yield r
                    bar.update()
        finally:
            cv2.setNumThreads(cv2_threads)
    finally:
        bar.close()


def opencv_before_fork() -> int:
    """Call in the parent before forking workers (pools, DataLoader); returns the previous OpenCV thread count.

    OpenCV's thread pool does not survive fork: a child that touches it (cv2.setNumThreads, or tearing down the
    inherited pool) waits forever on threads that are not there (seen: pthread_cond_destroy). With one OpenCV thread
    in the parent there is no pool to inherit, and n workers then use n cores, not n x cores.
    """
    import cv2
    n = cv2.getNumThreads()
    cv2.setNumThreads(1)
    return n


def _single_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def set_threads(n: int) -> None:
    """Sets torch and OpenCV thread counts (n<=0: one per core). Call after importing ultralytics, which drops both."""
    n = default_workers() if n <= 0 else n
    import torch
    torch.set_num_threads(n)
    try:
        import cv2
        cv2.setNumThreads(n)
    except ImportError:
        pass


# ----------------------------------------------------------------------------------------------------------------
# Process group facts from the torchrun environment (no torch.distributed import needed to ask)
# ----------------------------------------------------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size); (0, 0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
