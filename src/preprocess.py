"""Image preprocessing: the one function training and inference both call, its settings, and a resumable cache.

    python -m src.preprocess --src=input/ecg-synth-comp --dst=input/ecg-synth-comp-roi_clahe --size 512 768
    python -m src.preprocess --strategy=full --src=<folder of images | CSV with id[,path] | image> --dst=<cache>
    python -m src.preprocess --strategy=roi_clahe --roi_weights=outputs/roi/yolov8n/best.pt --src=... --dst=...
    python -m src.preprocess --src=... --dst=D --shard=0/4      # on machine 0 of 4 (then 1/4, 2/4, 3/4)
    python -m src.preprocess merge --dst=D                     # join index_shard*of4.csv into D/index.csv

Strategies (the paper's ablation, hidden AUROC: raw 0.753, roi_clahe 0.868, full 0.834):
  raw        resize the whole photo to --size.
  roi_clahe  (default) detect the printed grid (src.roi: YOLO if --roi_weights, else the OpenCV fallback), crop it
             with a small margin, resize, CLAHE on the LAB lightness.
  full       find the sheet's four corners, warp it to a top-down page of --size, CLAHE. A found quad that is not a
             plausible sheet (too small, not convex, skewed angles, wrong aspect, a side with no brightness step: the
             paper's crease and missed-corner failures; a side off the edge map, or another quad scoring alike)
             falls back to roi_clahe, and the index says why. (The page geometry itself is src.page.)
  trace      the `full` geometry (same fallback to the grid crop), then the trace map: the ink alone, black on white,
             with paper, grid and lighting removed (src.page.trace_map explains how). The CPU default: see README
             "Results".
A portrait crop/page (a photo taken sideways) is turned 90 degrees clockwise so traces run horizontally; whether a
page is upside down is not resolved.

--src: a folder of images (ids = file stems); a competition root (train.csv beside train/ and test/: both folders);
a CSV with an id column and either a path column (relative to the CSV) or images in the folder named like the CSV
(train.csv -> train/<id>.png); or one image file.

Cache layout (<dst>):  images/<id>.png      preprocessed RGB, lossless PNG by default (--out_ext=.jpg for JPEG)
                       index.csv            id, cache_path (relative to <dst>; read_cache() adds absolute paths),
                                            status ok|skipped, error, box, quad, fallback, roi_method, roi_conf,
                                            rotate, src_w, src_h, src_path
                       preprocess.yaml      the pixel settings (PreprocessConfig), the ROI weights' digest, the
                                            PIXELS_VERSION and the src; train copies it into the run folder and
                                            infer re-applies it to test images (load_config)
Re-running skips ids already cached (resumable; unreadable images are retried). A dst built with other pixel settings,
or by another version of this code (PIXELS_VERSION), is refused; the job settings (CacheJob: src, workers, shard, ...)
may differ between runs. Unreadable or truncated images are listed as skipped with the error; the run goes on.

Speed: detection runs on a copy shrunk by an integer factor to ~640 px, and CLAHE runs after the resize, on the
output-sized crop. CLAHE's tiles are fractions of the image and its clip limit is relative to the tile's pixel count,
so equalising after an area-resize gives the same mapping up to the lines thinned by averaging (bench/preprocess.py
prints the mean absolute difference: ~5 grey levels of 255) at ~1/10 of the pixels. Photos are decoded whole:
OpenCV's reduced decoding (IMREAD_REDUCED_*) only saves time for JPEG, and the BHF photos are PNG.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import time
import zlib
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .config import config_dict, find_input, parse_args, paths
from .page import page_quad, rectify, trace_map
from .roi import IMAGE_EXTS, detect_roi_info
from .sources import competition_columns, require_valid_competition
from .utils import atomic_path, imread, imwrite, parallel_map, temp_target, write_csv, write_text

STRATEGIES = ("raw", "roi_clahe", "full", "trace")
# The version of the code that makes the cached pixels: bump it when a change alters what preprocess_image returns for
# the same settings. A cache or run folder made by another version is refused, because a stale cache would otherwise be
# resumed into with mixed maps, and inference would apply new code to a model trained on the old maps. Caches written
# before the version was recorded are version 1.
PIXELS_VERSION = 1
INDEX_COLUMNS = ("id", "cache_path", "status", "error", "box", "quad", "fallback", "roi_method", "roi_conf", "rotate",
                 "src_w", "src_h", "src_path")


@dataclasses.dataclass
class PreprocessConfig:
    """The pixel settings: what preprocess_image makes of a photo. Every field changes the cached pixels, so a cache
    built with other values is not resumed into, and run folders with other values are not voted together; the ROI
    weights count by content (roi_weights_sha256 in preprocess.yaml), not path, so a cache moves between machines."""
    strategy: str = "roi_clahe"  # raw | roi_clahe | full | trace (see the module docstring)
    size: tuple[int, ...] = (512, 768)  # output H W: W/H 1.5 ~ a 12-lead grid's aspect, so stretching barely distorts
    margin: float = 0.02  # roi_clahe: crop margin, as a fraction of the box width/height on each side
    clahe_clip: float = 2.0  # CLAHE clip limit (contrast cap per tile); 0 turns CLAHE off
    clahe_grid: int = 8  # CLAHE tiles per side
    roi_weights: str = ""  # YOLO ROI weights (.pt); '' = the OpenCV fallback detector only
    roi_conf: float = 0.25  # YOLO confidence below which the fallback detector is used
    out_ext: str = ".png"  # cache format: .png (lossless) or .jpg
    jpeg_quality: int = 95  # when out_ext is .jpg

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ValueError(f"size {self.size}: give output height and width, e.g. --size 512 768")
        self.size = tuple(int(v) for v in self.size)
        if not self.out_ext.startswith("."):
            self.out_ext = "." + self.out_ext


@dataclasses.dataclass
class CacheJob(PreprocessConfig):
    """Preprocess ECG photos into a cache (see the module docstring for --src forms and the cache layout): the pixel
    settings, then which images go where and how the work is spread -- these last change no pixel."""
    src: str = ""  # images: folder, competition root, CSV (id[,path]) or one image file
    dst: str = ""  # cache folder (default <input>/<src name>-<strategy>-<H>x<W>)
    png_compression: int = 1  # zlib level for .png: 1 is ~35% faster than 3 at about the same size on photos
    workers: int = 0  # processes (0: one per core; 1: in this process)
    shard: str = ""  # 'i/n' (0 <= i < n): this run does the ids with crc32(id) % n == i
    limit: int = 0  # only the first N ids (0: all), for quick looks

    def __post_init__(self):
        super().__post_init__()
        parse_shard(self.shard)  # a malformed --shard fails here, before any image is read

    def pixels(self) -> PreprocessConfig:
        """The pixel settings alone: what preprocess.yaml records."""
        return PreprocessConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PreprocessConfig)})


# ----------------------------------------------------------------------------------------------------------------
# The preprocessing function (train and infer)
# ----------------------------------------------------------------------------------------------------------------
_CLAHE: dict[tuple, object] = {}


def clahe_lightness(img: np.ndarray, clip: float, grid: int) -> np.ndarray:
    """CLAHE on the L channel of LAB: evens out lighting and lifts faint traces without shifting the ink colours."""
    if clip <= 0:
        return img
    key = (float(clip), int(grid))
    if key not in _CLAHE:
        _CLAHE[key] = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(grid), int(grid)))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[..., 0] = _CLAHE[key].apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (H, W). Shrinking goes in two steps: block means by the largest integer factor (OpenCV's fast
    INTER_AREA path, dropping < k edge pixels), then INTER_AREA to the exact size -- ~25% quicker than one fractional
    INTER_AREA on a photo-sized crop; the result differs from it by a few grey levels on average."""
    h, w = size
    ih, iw = img.shape[:2]
    if ih < h or iw < w:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    k = min(iw // w, ih // h)
    if k >= 2:
        img = cv2.resize(img[: ih // k * k, : iw // k * k], (iw // k, ih // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _roi_crop(img: np.ndarray, cfg: PreprocessConfig, info: dict, size: tuple[int, int]) -> np.ndarray:
    """The detected grid box (plus margin) resized to `size`; a portrait box is turned to landscape."""
    h, w = img.shape[:2]
    # CPU, named: this runs in forked workers (cache pool, infer's loader), which cannot initialise CUDA (src.roi)
    r = detect_roi_info(img, cfg.roi_weights or None, cfg.roi_conf, device="cpu")
    x0, y0, x1, y1 = r["box"]
    mx, my = cfg.margin * (x1 - x0), cfg.margin * (y1 - y0)
    x0, y0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
    x1, y1 = int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        x0, y0, x1, y1 = 0, 0, w, h
        info["fallback"] = (info["fallback"] + "+" if info["fallback"] else "") + "roi_degenerate"
    info.update(box=[x0, y0, x1, y1], roi_method=r["method"], roi_conf=round(float(r["confidence"]), 4))
    crop = img[y0:y1, x0:x1]
    if (y1 - y0) > 1.15 * (x1 - x0):  # ECG grids are landscape: a portrait box is a page photographed sideways
        crop = cv2.rotate(crop, cv2.ROTATE_90_CLOCKWISE)  # which way round is unknown: traces end up horizontal
        info["rotate"] = 90
    return _resize(crop, size)


def _trace(img: np.ndarray, quad: np.ndarray | None, cfg: PreprocessConfig, info: dict) -> np.ndarray:
    """The `trace` strategy: rectified page (or grid crop) at twice the output size, its trace map, then shrunk.
    The map is made at 2x because the grid lines it has to tell from the trace are ~1 px there; shrinking by area
    halves a 1 px line's darkness, so the ink is doubled back (a trace keeps full contrast, blobs saturate)."""
    work = (2 * cfg.size[0], 2 * cfg.size[1])
    page = rectify(img, quad, work) if quad is not None else _roi_crop(img, cfg, info, work)
    ink = 255 - _resize(trace_map(page), cfg.size).astype(np.int16)
    grey = (255 - np.minimum(2 * ink, 255)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)  # RGB like every other strategy: same loaders and backbones


def preprocess_image(img: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, dict]:
    """RGB uint8 photo -> (RGB uint8 of cfg.size (H, W), info). The one preprocessing path for train and infer.

    info: strategy, box (crop in photo px, roi_clahe), quad (photo px of the corners that became the output's TL,
    TR, BR, BL; full, trace), fallback (why `full`/`trace` used the grid crop, or ''), roi_method (yolo | grid |
    trace | none), roi_conf, rotate (90: a portrait page/crop was turned clockwise to landscape; 0/180 is not
    resolved), src_w, src_h.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"preprocess_image expects RGB uint8 HxWx3, got {img.dtype} {img.shape}")
    info = {"strategy": cfg.strategy, "box": None, "quad": None, "fallback": "", "roi_method": "", "roi_conf": None,
            "rotate": 0, "src_w": int(img.shape[1]), "src_h": int(img.shape[0])}
    if cfg.strategy == "raw":
        return _resize(img, cfg.size), info
    quad = None
    if cfg.strategy in ("full", "trace"):
        found, problem = page_quad(img)
        if found is not None:
            q = np.asarray(found)
            if not problem and np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1]) > \
                    np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3]):  # sideways page: make it landscape
                q, info["rotate"] = q[[3, 0, 1, 2]], 90  # BL becomes the output's TL: a clockwise turn
            info["quad"] = np.round(q, 2).tolist()
            quad = None if problem else q
        info["fallback"] = problem
    if cfg.strategy == "trace":
        return _trace(img, quad, cfg, info), info
    if quad is not None:
        return clahe_lightness(rectify(img, quad, cfg.size), cfg.clahe_clip, cfg.clahe_grid), info
    return clahe_lightness(_roi_crop(img, cfg, info, cfg.size), cfg.clahe_clip, cfg.clahe_grid), info


def load_config(dst: str | Path) -> PreprocessConfig:
    """The PreprocessConfig a cache (or a run folder, see export_config) was built with, for applying the same
    preprocessing to test images. A relative roi_weights is resolved against that folder. The file's other keys are
    not pixel settings (the weights' digest, the version, src; the job settings older caches recorded too)."""
    import yaml
    from .config import config_from_dict
    d = yaml.safe_load((Path(dst) / "preprocess.yaml").read_text())
    _check_version(Path(dst) / "preprocess.yaml", d, "retrain on a cache rebuilt by this code, or run the commit the "
                   "model was trained with (the run folder's git.txt)")
    d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(PreprocessConfig)}}
    w = d.get("roi_weights")
    if w and not Path(w).is_absolute() and (Path(dst) / w).is_file():
        d["roi_weights"] = str(Path(dst) / w)
    return config_from_dict(PreprocessConfig, d)


def export_config(cache: str | Path, run: str | Path) -> None:
    """Copies a cache's preprocessing into a run folder: preprocess.yaml plus the ROI weights it uses, as roi.pt
    referred to relatively. The run folder then carries everything inference needs, wherever it is moved (a Kaggle
    kernel's output is mounted under another path than the one it was written at)."""
    import shutil
    import yaml
    cache, run = Path(cache), Path(run)
    d = yaml.safe_load((cache / "preprocess.yaml").read_text())
    w = load_config(cache).roi_weights
    if w:
        if not Path(w).is_file():
            raise SystemExit(f"{cache}/preprocess.yaml names ROI weights {w} that do not exist: train the detector "
                             f"(python -m src.roi train) or rebuild the cache without --roi_weights")
        with atomic_path(run / "roi.pt") as tmp:
            shutil.copyfile(w, tmp)
        d["roi_weights"] = "roi.pt"
    write_text(run / "preprocess.yaml", yaml.safe_dump(d, sort_keys=False))


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def resolve_sources(src: str | Path) -> pd.DataFrame:
    """DataFrame(id, path) for the --src forms in the module docstring."""
    try:
        src = find_input(src)  # a path, or a dataset slug under the input roots (e.g. on Kaggle)
    except FileNotFoundError as e:
        raise SystemExit(f"--src: {e}") from None
    if src.is_file() and src.suffix.lower() in IMAGE_EXTS:
        return pd.DataFrame({"id": [src.stem], "path": [str(src)]})
    if (src.parent if src.is_file() else src).joinpath("sample_submission.csv").is_file():
        require_valid_competition(src.parent if src.is_file() else src, "preprocess", splits=())  # the tables, now
    if src.is_file() and src.suffix.lower() == ".csv":
        id_col = competition_columns(src)[0]  # sample_submission.csv's first column when it is beside
        df = pd.read_csv(src, dtype={id_col: str})
        if id_col not in df.columns:
            raise SystemExit(f"{src}: a source CSV needs an {id_col!r} column (and 'path', or images in "
                             f"{src.with_suffix('')})")
        df = df.rename(columns={id_col: "id"})
        if "path" in df.columns:
            paths_ = [p if Path(p).is_absolute() else str(src.parent / p) for p in df["path"].astype(str)]
        else:
            folder = src.with_suffix("")
            if not folder.is_dir():
                raise SystemExit(f"{src} has no 'path' column and no image folder {folder}/; add a path column or "
                                 f"point --src at the image folder")
            found = {p.stem: p for p in _images_in(folder)}
            # an id without an image is skipped and listed in index.csv like an unreadable one; the cache goes on
            paths_ = [str(found.get(i, folder / f"{i} (no image for this id)")) for i in df["id"]]
        return pd.DataFrame({"id": df["id"].astype(str), "path": paths_})
    if src.is_dir():
        if (src / "train.csv").exists() and ((src / "train").is_dir() or (src / "test").is_dir()):
            files = [p for sub in ("train", "test") if (src / sub).is_dir() for p in _images_in(src / sub)]
        else:
            files = _images_in(src)
        if not files:
            raise SystemExit(f"--src {src}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
        df = pd.DataFrame({"id": [p.stem for p in files], "path": [str(p) for p in files]})
        dup = df["id"][df["id"].duplicated()]
        if len(dup):
            raise SystemExit(f"--src {src}: ids (file stems) repeat, e.g. {dup.iloc[:3].tolist()}; cache each folder "
                             f"to its own --dst")
        return df
    raise SystemExit(f"--src {src}: expected a folder, a .csv or an image file")


# ----------------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------------
def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if not shard:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"shard {shard!r}: expected 'i/n' with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def in_shard(ids: pd.Series, shard: tuple[int, int] | None) -> np.ndarray:
    """Stable split of ids into n shards (crc32, not Python's salted hash): same on every machine."""
    if shard is None:
        return np.ones(len(ids), bool)
    i, n = shard
    return np.array([zlib.crc32(str(x).encode()) % n == i for x in ids], bool)


def _weights_digest(path: str) -> str:
    if not path:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _cache_one(item: tuple[str, str], job: CacheJob) -> dict:
    iid, path = item
    rel = f"images/{iid}{job.out_ext}"
    row = {"id": iid, "cache_path": rel, "status": "skipped", "error": "", "box": "", "quad": "", "fallback": "",
           "roi_method": "", "roi_conf": None, "rotate": None, "src_w": None, "src_h": None, "src_path": path}
    try:
        img = imread(path)
        out, info = preprocess_image(img, job)
        imwrite(Path(job.dst) / rel, out, quality=job.jpeg_quality, png_compression=job.png_compression)
    except Exception as e:  # noqa: BLE001 -- one bad image never stops the cache; the index lists it
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    row.update(status="ok", box=json.dumps(info["box"]) if info["box"] else "",
               quad=json.dumps(info["quad"]) if info["quad"] else "", fallback=info["fallback"],
               roi_method=info["roi_method"], roi_conf=info["roi_conf"], rotate=info["rotate"], src_w=info["src_w"],
               src_h=info["src_h"])
    return row


def index_name(shard: tuple[int, int] | None) -> str:
    return "index.csv" if shard is None else f"index_shard{shard[0]}of{shard[1]}.csv"


def _read_index(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=list(INDEX_COLUMNS))
    return pd.read_csv(path, dtype={"id": str, "error": str, "box": str, "quad": str, "fallback": str},
                       keep_default_na=False, na_values={k: [""] for k in ("roi_conf", "rotate", "src_w", "src_h")})


def _check_version(f: Path, d: dict, fix: str) -> None:
    v = (d or {}).get("pixels_version", 1)
    if v != PIXELS_VERSION:
        raise SystemExit(f"{f} was made by preprocessing code version {v}, this code makes version {PIXELS_VERSION} "
                         f"(other pixels for the same settings): {fix}")


def _check_config(dst: Path, job: CacheJob) -> None:
    """Refuses a dst built with other pixel settings or by other code; records them in a new one."""
    import yaml
    pixels = config_dict(job.pixels())
    want = {k: v for k, v in pixels.items() if k != "roi_weights"}
    want["roi_weights_sha256"] = _weights_digest(job.roi_weights)  # the weights count by content, not path
    f = dst / "preprocess.yaml"
    if f.exists():
        have = yaml.safe_load(f.read_text()) or {}
        _check_version(f, have, f"delete {dst} and build it again, or use another --dst")
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise SystemExit(f"{dst} was built with other settings {diff} (cached, requested); use another --dst or "
                             f"delete {dst}")
        return
    # src: the images it was built from (src.pretrain finds their labels through it)
    write_text(f, yaml.safe_dump({**pixels, "roi_weights_sha256": want["roi_weights_sha256"], "pixels_version": PIXELS_VERSION, "src": str(job.src)},
                                 sort_keys=False))


def build_cache(job: CacheJob) -> pd.DataFrame:
    """Preprocess job.src's images into job.dst; returns this run's index (ok and skipped rows)."""
    if not job.src:
        raise SystemExit("--src is required (a folder of images, a competition root, a CSV, or an image)")
    df = resolve_sources(job.src)
    if not job.dst:
        name = f"{Path(job.src).with_suffix('').name}-{job.strategy}-{job.size[0]}x{job.size[1]}"
        job = dataclasses.replace(job, dst=str(paths().input / name))
    dst = Path(job.dst)
    sh = parse_shard(job.shard)
    df = df[["id", "path"]].astype(str)
    if df["id"].duplicated().any():
        raise ValueError(f"duplicate ids, e.g. {df['id'][df['id'].duplicated()].iloc[:3].tolist()}")
    df = df[in_shard(df["id"], sh)]
    if job.limit:
        df = df.iloc[: job.limit]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    _check_config(dst, job)
    index_path = dst / index_name(sh)
    old = _read_index(index_path)
    done = old[(old["status"] == "ok") & old["cache_path"].map(lambda p: (dst / p).exists())]
    done = done[done["id"].isin(df["id"])]
    todo = df[~df["id"].isin(done["id"])]
    redo = {f"{i}{job.out_ext}" for i in todo["id"]}  # a killed run's half-written files of these: never kept
    for f in (dst / "images").glob(".*.tmp*"):
        if temp_target(f.name) in redo:
            f.unlink(missing_ok=True)
    print(f"[preprocess] {job.strategy} {job.size[0]}x{job.size[1]}: {len(df)} images"
          f"{f' (shard {sh[0]}/{sh[1]})' if sh else ''}, {len(done)} already cached, {len(todo)} to do -> {dst}")
    rows, last_save = [], time.time()

    def save():
        idx = pd.DataFrame(done.to_dict("records") + rows, columns=list(INDEX_COLUMNS))
        order = {k: n for n, k in enumerate(df["id"])}
        idx = idx.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)[list(INDEX_COLUMNS)]
        text = idx.to_csv(index=False)
        if not index_path.is_file() or index_path.read_text() != text:  # unchanged: no write (read-only media)
            write_text(index_path, text)
        return idx

    fn = partial(_cache_one, job=job)
    for row in parallel_map(fn, list(zip(todo["id"], todo["path"])), workers=job.workers, desc="preprocess",
                            chunksize=4):
        rows.append(row)
        if time.time() - last_save > 60:  # checkpoint: a killed run loses at most a minute
            save()
            last_save = time.time()
    idx = save()
    skipped = idx[idx["status"] != "ok"]
    n_ok = int((idx["status"] == "ok").sum())
    print(f"[preprocess] {n_ok} ok, {len(skipped)} skipped -> {index_path}")
    for _, r in skipped.head(10).iterrows():
        print(f"  skipped {r['id']}: {r['error']}")
    if len(todo) and n_ok == 0:
        raise SystemExit(f"[preprocess] every image failed; first error: {skipped['error'].iloc[0]}")
    return idx


def merge(dst: str | Path) -> pd.DataFrame:
    """Join <dst>/index_shard*of*.csv (and an existing index.csv) into <dst>/index.csv."""
    dst = Path(dst)
    parts = sorted(dst.glob("index_shard*of*.csv"))
    if not parts:
        raise SystemExit(f"no index_shard*of*.csv in {dst}; run `python -m src.preprocess ... --shard=i/n` first")
    ns = {int(re.search(r"of(\d+)", p.name).group(1)) for p in parts}
    if len(ns) != 1:
        raise SystemExit(f"{dst}: shard files of different splits {sorted(ns)}; keep one set")
    n = ns.pop()
    have = {int(re.search(r"shard(\d+)of", p.name).group(1)) for p in parts}
    missing = sorted(set(range(n)) - have)
    frames = [_read_index(p) for p in parts]
    if (dst / "index.csv").exists():
        frames.append(_read_index(dst / "index.csv"))
    idx = pd.DataFrame([r for f in frames for r in f.to_dict("records")], columns=list(INDEX_COLUMNS))
    idx = idx.sort_values("status", key=lambda s: s.ne("ok"), kind="stable").drop_duplicates("id").sort_values("id")
    absent = int(((idx["status"] == "ok") & ~idx["cache_path"].map(lambda p: (dst / p).exists())).sum())
    write_csv(dst / "index.csv", idx[list(INDEX_COLUMNS)])
    print(f"[preprocess] merged {len(parts)}/{n} shards: {int((idx['status'] == 'ok').sum())} ok, "
          f"{int((idx['status'] != 'ok').sum())} skipped -> {dst / 'index.csv'}")
    if missing:
        print(f"[preprocess] WARNING: shards {missing} of {n} are missing; run them and merge again")
    if absent:
        print(f"[preprocess] WARNING: {absent} cached images are not in {dst / 'images'}; copy the other machines' "
              f"images/ folders here")
    return idx


def read_cache(dst: str | Path) -> pd.DataFrame:
    """index.csv with an absolute `path` column (ok rows only), for datasets that read the cache."""
    dst = Path(dst)
    idx = _read_index(dst / "index.csv")
    idx = idx[idx["status"] == "ok"].copy()
    idx["path"] = [str(dst / p) for p in idx["cache_path"]]
    return idx.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class MergeConfig:
    """Join the shard indexes of a cache into index.csv."""
    dst: str  # cache folder holding index_shard<i>of<n>.csv files


def _join_size(argv: list[str]) -> list[str]:
    """Accept `--size 512 768` (the issue's form) as well as --size=512,768."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--size" and i + 2 < len(argv) and argv[i + 1].isdigit() and argv[i + 2].isdigit():
            out += [f"--size={argv[i + 1]},{argv[i + 2]}"]
            i += 3
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return merge(parse_args(MergeConfig, argv[1:]).dst)
    try:
        job = parse_args(CacheJob, _join_size(argv))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if job.roi_weights:
        try:
            job.roi_weights = str(find_input(job.roi_weights))  # a path, or under an input root (Kaggle outputs)
        except FileNotFoundError:
            raise SystemExit(f"--roi_weights {job.roi_weights} not found: train the detector (python -m src.roi "
                             f"train) or leave --roi_weights empty to use the OpenCV fallback") from None
    return build_cache(job)


if __name__ == "__main__":
    main()
