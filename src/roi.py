"""The ROI detector: where on a photo the printed ECG grid is. YOLO trained on the photo renderer's free boxes, with a
classical OpenCV fallback so preprocessing never needs a trained model.

    python -m src.roi train --data=input/ecg-synth-roi/dataset.yaml --epochs=30 --imgsz=416 --name=yolov8n
    python -m src.roi train --data=... --model=path/to/local.pt          # fine-tune local weights
    python -m src.roi predict --weights=outputs/roi/yolov8n/best.pt --src=<image | folder> --out=roi.csv
    python -m src.roi predict --src=<folder>                             # no weights: the OpenCV fallback

In Python: `detect_roi(img, weights=None, conf=0.25) -> ([x0, y0, x1, y1], confidence)` (photo pixels).

Device: every ultralytics call is given its device (`device="cpu"` unless the caller names one). Left to itself,
ultralytics picks CUDA whenever a GPU exists, and preprocessing runs in forked worker processes (src.preprocess's
pool, src.infer's loader) where a CUDA process's child cannot initialise CUDA: every image would fail. On the CPU
the detector also gives the cache and the test images the same boxes. `train` and `predict` take --device.

Training writes outputs/roi/<name>/: config.yaml, git.txt, best.pt (stable path for preprocessing), metrics.json
(mAP and the mean IoU of the top box on the val split), yolo/ (ultralytics' own run folder: last.pt, results.csv).

Offline: ultralytics probes the network on import, downloads Arial.ttf for its dataset check, and downloads a model for
its AMP check. `import_yolo()` is the one place that imports it, after pointing YOLO_CONFIG_DIR at a private folder
that already holds a font (matplotlib's DejaVuSans under the names it looks for) and with YOLO_OFFLINE=1; training
passes amp=False on CPU, and on CUDA skips the AMP self-test (it needs a download). Models start from a yaml
(`yolov8n.yaml`): `YOLO("yolov8n.pt")` would try a download. Importing ultralytics (and each train/predict setup)
drops torch to one thread; we put the thread count back so later stages are not slowed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .config import find_input, paths, parse_args, run_dir
from .utils import atomic_path, imread, prepare_run_dir, set_threads, write_csv, write_json

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FALLBACK_SIDE = 640  # the classical detector works on a copy downscaled to this longest side (~2 px per mm of paper)


# ----------------------------------------------------------------------------------------------------------------
# ultralytics, offline (the one place it is imported)
# ----------------------------------------------------------------------------------------------------------------
def _font_file() -> Path:
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@contextlib.contextmanager
def keep_threads():
    """ultralytics resets torch to one thread in select_device() (every train/predict setup); undo that on exit."""
    import torch
    n = torch.get_num_threads()
    try:
        yield
    finally:
        set_threads(n)


def import_yolo():
    """Returns the ultralytics YOLO class, imported with no network access possible."""
    if "ultralytics" not in sys.modules:
        cfg_dir = Path(os.environ.get("YOLO_CONFIG_DIR") or paths().outputs / "roi" / ".ultralytics")
        os.environ["YOLO_CONFIG_DIR"] = str(cfg_dir)
        os.environ["YOLO_OFFLINE"] = "1"  # is_online() -> False: no DNS probe, no hub/event calls, no update checks
        font_dir = cfg_dir / "Ultralytics"  # ultralytics appends this sub-folder to YOLO_CONFIG_DIR
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):  # check_font() finds these here and never downloads
            if not (font_dir / name).exists():
                font_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(font_dir / name) as tmp:
                    shutil.copyfile(_font_file(), tmp)
        omp = os.environ.get("OMP_NUM_THREADS")
        with keep_threads():
            import ultralytics  # noqa: F401  (sets OMP_NUM_THREADS=1, torch and cv2 to 1 thread)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)  # leave child processes the default
        from ultralytics import settings
        off = {k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb",
                                  "vscode_msg", "openvino_msg") if settings.get(k)}
        if off:
            settings.update(off)  # no telemetry, no experiment-tracker callbacks
    from ultralytics import YOLO
    return YOLO


# ----------------------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], object] = {}


def yolo_device(spec: str = "") -> str:
    """An ultralytics device string: `spec` itself, or for '' the first GPU when there is one, else the CPU. Only for
    processes that run the detector themselves (never in a forked worker; see the module docstring)."""
    if spec:
        return spec
    import torch
    return "0" if torch.cuda.is_available() else "cpu"


def load_model(weights: str | Path, device: str = "cpu"):
    """A YOLO model per (weights path, device), loaded once per process (ultralytics fixes a model's device at its
    first predict, so each device gets its own copy)."""
    key = (str(Path(weights).resolve()), str(device))
    if key not in _MODELS:
        if not Path(weights).exists():
            raise FileNotFoundError(f"ROI weights {weights} not found; train them with `python -m src.roi train` or "
                                    f"leave roi_weights empty to use the OpenCV fallback")
        YOLO = import_yolo()
        with keep_threads():
            _MODELS[key] = YOLO(key[0], task="detect")
    return _MODELS[key]


def downscale(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its longest side is at most `side` (itself if already small), and the factor full/small.

    Shrinks by an integer factor k with INTER_AREA (k x k block means, OpenCV's fast path: ~3x quicker than a
    fractional factor on a 6.5 Mpx photo); the last < k rows/columns are dropped, which no detector notices.
    """
    h, w = img.shape[:2]
    k = int(np.ceil(max(h, w) / side))
    if k <= 1:
        return img, 1.0
    small = cv2.resize(img[: h // k * k, : w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return small, float(k)


def yolo_roi(img: np.ndarray, weights: str | Path, device: str = "cpu") -> tuple[list[float] | None, float]:
    """Top YOLO box in photo pixels and its confidence ((None, 0.0) when it finds nothing), run on `device` ('cpu',
    '0', ...; never ultralytics' own choice, see the module docstring)."""
    if not device:
        raise ValueError("yolo_roi needs an explicit device ('cpu', '0'): ultralytics' automatic choice takes CUDA, "
                         "which a forked worker process cannot initialise")
    model = load_model(weights, device)
    imgsz = (getattr(model, "ckpt", None) or {}).get("train_args", {}).get("imgsz") or 416  # predict as trained
    imgsz = int(max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz)
    small, f = downscale(img, imgsz)
    with keep_threads():
        res = model.predict(np.ascontiguousarray(small[..., ::-1]), imgsz=imgsz, conf=0.01, max_det=1,
                            device=device, verbose=False)[0]  # numpy input is taken as BGR
    if res.boxes is None or len(res.boxes) == 0:
        return None, 0.0
    b = res.boxes.xyxy[0].cpu().numpy().astype(float) * f
    h, w = img.shape[:2]
    box = [float(v) for v in np.clip(b, 0, [w, h, w, h])]
    return box, float(res.boxes.conf[0])


def _largest_box(mask: np.ndarray) -> tuple[list[int] | None, float]:
    """Bounding box of the largest connected component and the fraction of that box it fills."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None, 0.0
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = stats[i]
    return [int(x), int(y), int(x + w), int(y + h)], float(area) / float(w * h)


def dark_strokes(lab: np.ndarray) -> np.ndarray:
    """Black-hat of lightness (5 px): how much darker each pixel is than its surroundings (traces, text, lines)."""
    return cv2.morphologyEx(lab[..., 0], cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))


def paper_mask(small: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
    """uint8 mask of the ECG sheet on a (downscaled) photo: a large bright, near-neutral region with ink on it.

    Paper is the brightest low-chroma thing in most ECG photos, so lightness - 2 chroma, thresholded, outlines it. The
    sheet may be in shade, tinted by its grid, or beside a blank sheet or a bright desk, so several thresholds around
    Otsu's are tried and each blob scored by the share of all dark strokes it holds minus half its share of the image
    (the ECG holds most of the ink; a blob that swallowed the desk holds it too but is needlessly big). Holes
    (traces, labels) are filled. All ones when no blob of 8-97% of the image scores better than the whole image
    would (all the ink, half a penalty): on a scan the page is nearly the whole image, and a grid-tinted page loses
    to a white header strip or a grey scanner bed, so a small bright blob that misses most of the ink is not the sheet.
    """
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB) if lab is None else lab
    L = lab[..., 0].astype(np.float32)
    chroma = np.hypot(lab[..., 1].astype(np.float32) - 128, lab[..., 2].astype(np.float32) - 128)
    score = cv2.blur(L - 2.0 * chroma, (5, 5))
    score = np.clip(score - score.min(), 0, None)
    score = (255 * score / max(1e-6, float(score.max()))).astype(np.uint8)
    t0, _ = cv2.threshold(score, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, min(sh, sw) // 60) | 1
    ink = (dark_strokes(lab) > 25).astype(np.uint8)
    n_ink = max(1, int(ink.sum()))
    best, best_score = None, 1.0 - 0.5  # the whole image: all the ink, all the area
    # The sheet may be darker than another sheet or a bright desk (shade, tinted grid): try several levels and keep
    # the blob that holds most of the ink without being much bigger than needed.
    for t in sorted({int(np.clip(t0 + d, 1, 254)) for d in (15, 0, -15, -30, -45, -60)}):
        m = (score > t).astype(np.uint8)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
        for c in cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
            area = cv2.contourArea(c) / (sh * sw)
            if not 0.08 <= area <= 0.97:
                continue
            filled = np.zeros((sh, sw), np.uint8)
            cv2.drawContours(filled, [c], -1, 1, thickness=-1)
            sc = int((ink & filled).sum()) / n_ink - 0.5 * area
            if sc > best_score:
                best, best_score = filled, sc
    return best if best is not None else np.ones((sh, sw), np.uint8)


def _run(profile: np.ndarray, frac: float, gap: int) -> tuple[int, int] | None:
    """[start, end) of the longest run where `profile` is at least `frac` of its 90th percentile, bridging dips of
    up to `gap` samples (a trace or crease crossing the grid); None when the profile is flat zero."""
    hi = float(np.percentile(profile, 90))
    if hi <= 0:
        return None
    on = (profile >= frac * hi).astype(np.uint8)[None, :]
    on = cv2.morphologyEx(on, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * gap + 1, 1)))[0]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on, [0]])))
    starts, ends = edges[::2], edges[1::2]
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def _ruled_box(lines: np.ndarray, inner: np.ndarray, win: int) -> list[int] | None:
    """Box of a ruled grid from a mask of thin dark strokes: [x0, y0, x1, y1] in its pixels, or None.

    Grid lines are long and straight; text, stamps and noise are short strokes. An opening with a line ~1/25 of the
    short side (~8 mm of paper, long enough to drop characters, short enough to survive a 3 degree tilt) keeps
    vertical and horizontal lines. Vertical grid lines span exactly the grid's height and horizontal ones its width,
    while a header's text rows yield horizontal runs only, so rows come from the vertical lines and columns from the
    horizontal lines within those rows. Accepted when both spans cover a third of the sheet and the lines there are
    dense (a printed grid every few mm, not a few QRS spikes).
    """
    sh, sw = lines.shape
    n = max(7, min(sh, sw) // 25)
    lines = lines & inner
    v = cv2.morphologyEx(lines, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, n)))
    rows = _run(cv2.blur(v.mean(1, dtype=np.float32)[None, :], (win, 1))[0], 0.5, win)
    if rows is None or rows[1] - rows[0] < sh / 3:
        return None
    h = cv2.morphologyEx(lines[rows[0]:rows[1]], cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (n, 1)))
    hp = cv2.blur(h.mean(0, dtype=np.float32)[None, :], (win, 1))[0]
    cols = _run(hp, 0.5, win)
    if cols is None or cols[1] - cols[0] < sw / 3:
        return None
    # a grid line every ~5 mm (one major square, ~win / 2 px) at ~1 px wide covers >= ~10% of the rows / columns
    vd = float(v[rows[0]:rows[1], cols[0]:cols[1]].mean())
    hd = float(h[:, cols[0]:cols[1]].mean())
    if min(vd, hd) < 0.04:
        return None
    return [cols[0], rows[0], cols[1], rows[1]]


def _refine(box: list[int], evidence: np.ndarray, win: int) -> list[int]:
    """The box shrunk on each side to where the grid evidence (a per-pixel line strength) rises.

    The blob cues blur and close their masks, so their boxes overshoot the grid by about a window (onto the margin,
    often to the image edge of a scan). Along each axis the evidence profile, smoothed over a few mm, steps from the
    margin's level to the grid's; the edge is where it crosses halfway. Only shrinks, and by at most a quarter of the
    box per side, so a weak profile cannot collapse the box.
    """
    x0, y0, x1, y1 = box
    inside = evidence[y0:y1, x0:x1]
    outside = evidence.sum() - inside.sum()
    n_out = evidence.size - inside.size
    lo = float(outside / n_out) if n_out > 0.05 * evidence.size else 0.0
    k = max(3, win // 2) | 1
    out = list(box)
    for axis, (a, b) in ((0, (x0, x1)), (1, (y0, y1))):
        # a high percentile, not the mean: the box of a tilted or perspective-warped grid holds only a corner of
        # it in its outermost columns, and those still belong to the box
        prof = cv2.blur(np.percentile(inside, 95, axis=axis).astype(np.float32)[None, :], (k, 1))[0]
        mid = float(np.median(prof))
        if mid <= lo:
            continue
        on = np.flatnonzero(prof >= lo + 0.25 * (mid - lo))
        if on.size == 0:
            continue
        lim = (b - a) // 4
        out[axis] = a + min(int(on[0]), lim)
        out[axis + 2] = a + max(int(on[-1]) + 1, (b - a) - lim)
    return out


def classical_roi(img: np.ndarray) -> tuple[list[float], float, str]:
    """OpenCV fallback: (box in photo pixels, score in [0, 1], method 'grid' | 'ruled' | 'trace' | 'none').

    First the sheet of paper (paper_mask), then inside it:
    trace: the density of thin dark strokes (black-hat of lightness: traces, labels, grey grid lines), closed into
      blobs; the box around every sizeable blob (rows of traces can lie far apart).
    grid: ECG grids are printed in a tinted ink (red, pink, orange, green, blue) on white. First cue: the density of
      thin tinted lines (top-hat of chroma, which ignores uniformly tinted desks or paper); second cue, for small
      photos where the fine grid has blurred into a tint: the blurred chroma. Otsu splits the sheet into more / less
      tinted, accepted only when the classes differ clearly, the blob holds most of the dark strokes (the traces lie
      on the grid) and is at most twice the trace box; its edges are then pulled in to where the tinted lines
      start (_refine: the blob's blur and closing overshoot onto the margin).
    ruled: grey or black grids (no chroma): long straight vertical and horizontal dark lines (_ruled_box), accepted
      when they enclose most dark strokes and are not much smaller than the trace box.
    Otherwise the trace box is the answer.
    The score is how solidly the blob fills its box: a heuristic, not a calibrated probability.
    """
    h, w = img.shape[:2]
    small, f = downscale(img, FALLBACK_SIDE)
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    paper = paper_mask(small, lab)
    win = max(3, int(round(min(sh, sw) / 40)) | 1)  # ~1/40 of the short side: a few major grid squares
    inner = cv2.erode(paper, cv2.getStructuringElement(cv2.MORPH_RECT, (win, win)))  # away from the page edge
    if inner.sum() < 0.05 * sh * sw:
        inner = paper
    close = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * win + 1, 2 * win + 1))
    k5 = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))
    result = None

    # dark strokes (traces, text, grey grid lines) inside the sheet
    strokes = dark_strokes(lab)
    sv = strokes[inner > 0]
    thr = max(12.0, float(np.percentile(sv, 97)) * 0.5) if sv.size else 12.0
    dark = ((strokes > thr) & (inner > 0)).astype(np.uint8)

    trace = None
    if dark.any():
        # rows of traces may lie further apart than any closing bridges: take every sizeable blob, not the largest
        dens = cv2.blur(dark.astype(np.float32), (2 * win + 1, 2 * win + 1))
        m = (dens > 0.3 * float(np.percentile(dens[dens > 0], 90))).astype(np.uint8)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (4 * win + 1,) * 2))
        n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n > 1:
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = stats[1:][areas >= 0.15 * areas.max()]
            box = [int(keep[:, 0].min()), int(keep[:, 1].min()), int((keep[:, 0] + keep[:, 2]).max()),
                   int((keep[:, 1] + keep[:, 3]).max())]
            fill = float(keep[:, cv2.CC_STAT_AREA].sum()) / max(1, (box[2] - box[0]) * (box[3] - box[1]))
            trace = (box, fill, "trace")
    # grid: density of thin tinted lines (top-hat of chroma: ignores uniformly tinted paper or desks); at low
    # resolution the fine grid blurs into a tint, so the plain blurred chroma is the second cue.
    chroma = np.hypot(lab[..., 1].astype(np.float32) - 128, lab[..., 2].astype(np.float32) - 128)
    for cue in ("lines", "tint"):
        src = cv2.morphologyEx(chroma, cv2.MORPH_TOPHAT, k5) if cue == "lines" else chroma
        c = cv2.blur(src, (win, win))
        vals = c[inner > 0]
        if vals.size < 100:
            break
        c8 = np.clip(vals * 8, 0, 255).astype(np.uint8)  # 1/8 chroma unit per level
        t8, _ = cv2.threshold(c8.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        t = t8 / 8.0
        hi, lo = vals[vals > t], vals[vals <= t]
        if not (hi.size > 0.1 * vals.size and lo.size > 0 and hi.mean() - lo.mean() > (1.5 if cue == "lines" else 4)):
            continue
        m = cv2.morphologyEx(((c > t) & (inner > 0)).astype(np.uint8), cv2.MORPH_CLOSE, close)
        box, fill = _largest_box(m)
        if box is not None and (box[2] - box[0]) * (box[3] - box[1]) > 0.05 * sh * sw:
            inside = dark[box[1]:box[3], box[0]:box[2]].sum() / max(1, dark.sum())
            area = (box[2] - box[0]) * (box[3] - box[1])
            t_area = (trace[0][2] - trace[0][0]) * (trace[0][3] - trace[0][1]) if trace else area
            # the traces lie on the grid, which is not much bigger than they are; else this tinted blob is not it
            if inside > 0.6 and area < 2.0 * t_area:
                result = (_refine(box, c, win), fill, "grid")
                break
    if result is None:
        # grey or black grids carry no chroma: find them as long straight dark lines. The traces lie on the grid, so
        # the box holds most strokes and is not much smaller than the trace box (which also spans header text); on
        # a small photo the lines resolve only in part and the ruled span comes out short: the trace box is better.
        box = _ruled_box((strokes > 12).astype(np.uint8), inner, win)
        area = (box[2] - box[0]) * (box[3] - box[1]) if box else 0
        t_area = (trace[0][2] - trace[0][0]) * (trace[0][3] - trace[0][1]) if trace else area
        if box is not None and dark[box[1]:box[3], box[0]:box[2]].sum() > 0.8 * dark.sum() and area >= 0.6 * t_area:
            result = (box, 1.0, "ruled")
    result = result or trace
    if result is None:
        box, _ = _largest_box(paper)
        if box is None:
            return [0.0, 0.0, float(w), float(h)], 0.0, "none"
        result = (box, 0.0, "none")
    box, fill, method = result
    fb = [min(w, box[0] * f), min(h, box[1] * f), min(w, box[2] * f), min(h, box[3] * f)]
    return [float(v) for v in fb], float(fill), method


def detect_roi_info(img: np.ndarray, weights: str | Path | None = None, conf: float = 0.25, device: str = "cpu"
                    ) -> dict:
    """{"box", "confidence", "method": yolo | grid | ruled | trace | none, "yolo_conf"}: YOLO (on `device`) when weights
    are given and it is at least `conf` sure, otherwise the classical fallback."""
    yconf = None
    if weights:
        box, yconf = yolo_roi(img, weights, device)
        if box is not None and yconf >= conf:
            return {"box": box, "confidence": yconf, "method": "yolo", "yolo_conf": yconf}
    box, score, method = classical_roi(img)
    return {"box": box, "confidence": score, "method": method, "yolo_conf": yconf}


def detect_roi(img: np.ndarray, weights: str | Path | None = None, conf: float = 0.25, device: str = "cpu"
               ) -> tuple[list[float], float]:
    """(box [x0, y0, x1, y1] in photo pixels, confidence) of the printed grid area; see detect_roi_info."""
    r = detect_roi_info(img, weights, conf, device)
    return r["box"], r["confidence"]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------------
# YOLO datasets and evaluation
# ----------------------------------------------------------------------------------------------------------------
def read_split(data_yaml: str | Path, split: str = "val") -> list[tuple[Path, list[float]]]:
    """[(image path, true box in pixels)] of one split of a YOLO dataset (first box of each label file)."""
    import yaml
    data_yaml = Path(data_yaml)
    d = yaml.safe_load(data_yaml.read_text())
    root = Path(d.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    img_dir = root / d[split]
    out = []
    for p in sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMAGE_EXTS):
        lab = Path(f"{os.sep}labels{os.sep}".join(str(p).rsplit(f"{os.sep}images{os.sep}", 1))).with_suffix(".txt")
        if not lab.exists() or not lab.read_text().split():
            continue
        _, cx, cy, bw, bh = map(float, lab.read_text().split()[:5])
        iw, ih = _image_size(p)
        out.append((p, [(cx - bw / 2) * iw, (cy - bh / 2) * ih, (cx + bw / 2) * iw, (cy + bh / 2) * ih]))
    return out


def _image_size(p: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image
    with Image.open(p) as im:
        return im.size


def evaluate(samples, weights: str | Path | None, conf: float = 0.25, yolo_only: bool = False, device: str = "cpu"
             ) -> dict:
    """Mean IoU of detected vs true boxes over [(image path or RGB array, true box)], YOLO on `device`."""
    ious, methods = [], {}
    for src, true in samples:
        img = imread(src) if isinstance(src, (str, Path)) else src
        if yolo_only:
            box, _ = yolo_roi(img, weights, device)
            method = "yolo"
        else:
            r = detect_roi_info(img, weights, conf, device)
            box, method = r["box"], r["method"]
        ious.append(iou(box, true) if box is not None else 0.0)
        methods[method] = methods.get(method, 0) + 1
    a = np.array(ious) if ious else np.zeros(1)
    return {"mean_iou": float(a.mean()), "median_iou": float(np.median(a)), "frac_iou_ge_0.9": float((a >= 0.9).mean()),
            "frac_iou_lt_0.5": float((a < 0.5).mean()), "n": len(ious), "methods": methods}


def yolo_label(box, w: int, h: int) -> str:
    """One YOLO label line ('0 cx cy w h', normalised) for a pixel box, clipped to the image."""
    x0, x1 = np.clip([box[0], box[2]], 0, w)
    y0, y1 = np.clip([box[1], box[3]], 0, h)
    return f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n"


def write_yolo_yaml(root: str | Path) -> Path:
    """dataset.yaml of a one-class (ecg) set laid out as images/{train,val}, labels/{train,val}."""
    from .utils import write_text
    root = Path(root)
    # No `path:` key: ultralytics then resolves train/val beside the yaml, so the set still works after it is moved or
    # uploaded (an absolute path written here would point at the machine that made it).
    write_text(root / "dataset.yaml", "train: images/train\nval: images/val\nnames:\n  0: ecg\n")
    return root / "dataset.yaml"


def write_yolo_dataset(root: str | Path, items) -> Path:
    """Writes a one-class YOLO set in make_data's layout from (id, split, RGB image, box [x0, y0, x1, y1]) tuples:
    images/<split>/<id>.jpg, labels/<split>/<id>.txt, dataset.yaml. Returns the yaml."""
    from .utils import imwrite, write_text
    root = Path(root)
    for iid, split, img, box in items:
        imwrite(root / "images" / split / f"{iid}.jpg", img, quality=92)
        write_text(root / "labels" / split / f"{iid}.txt", yolo_label(box, img.shape[1], img.shape[0]))
    return write_yolo_yaml(root)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RoiTrainConfig:
    """Train the YOLO ROI detector offline on a YOLO-format dataset (make_data's ecg-synth-roi)."""
    data: str  # dataset.yaml of the ROI set (e.g. input/ecg-synth-roi/dataset.yaml)
    name: str = "yolov8n"  # run name: outputs/roi/<name>/
    out: str = ""  # run folder (default outputs/roi/<name>)
    model: str = "yolov8n.yaml"  # architecture yaml (from scratch) or a local .pt to fine-tune (nothing downloads)
    epochs: int = 30  # training epochs
    imgsz: int = 416  # square training size; predictions use the same
    batch: int = 16  # images per batch
    device: str = ""  # '' = cuda:0 when available else cpu; or 'cpu', '0', '0,1'
    workers: int = 2  # dataloader worker processes
    amp: str = "auto"  # auto (on for CUDA, off on CPU) | true | false
    patience: int = 50  # early-stop after this many epochs without val improvement
    minutes: float = 0.0  # wall-clock cap on training (0: none); ultralytics then fits the epochs into it
    mosaic: float = 0.0  # mosaic probability; off: one large box per photo is learnt faster without it
    rect: bool = True  # W x H letterboxed batches, not squares: 1152x640 photos at 320 train 1.8x faster on CPU
    #   (as 320x192). The ROI photos share one aspect ratio; a mixed-aspect set would lose shuffling (ultralytics keeps
    #   it only when every batch has the same shape).
    cache: bool = True  # decode and resize each photo once into RAM (~0.2 MB per photo at 320) instead of per epoch
    nbs: int = 16  # nominal batch: one optimiser step per nbs images (ultralytics' 64 is too few steps for a short run)
    #   With 64, gradients accumulate over four batches of 16; from scratch in minutes every step counts.
    optimizer: str = "AdamW"  # fixed, not 'auto': ultralytics picks by planned iterations, meaningless under --minutes
    #   (a large --epochs cap would switch it to MuSGD at lr 0.01); AdamW is its choice for short runs.
    lr0: float = 0.002  # initial learning rate (ultralytics' fitted AdamW rate for one class)
    warmup_epochs: float = 1.0  # linear warm-up; ultralytics' 3 is a large share of a run of a few dozen epochs
    overrides: str = ""  # more ultralytics train arguments, e.g. "scale=0.3,fliplr=0.0"; they win over the fields
    seed: int = 42  # training seed (ultralytics deterministic mode)
    threads: int = 0  # torch/OpenCV threads to restore after ultralytics lowers them (0: one per core)
    resume: bool = False  # continue an interrupted run from <out>/yolo/weights/last.pt


def parse_overrides(text: str) -> dict:
    """'k=v,k=v' -> {k: v} with YAML-typed values (numbers, booleans, strings)."""
    import yaml
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, eq, v = part.partition("=")
        if not eq:
            raise SystemExit(f"--overrides: expected key=value, got {part!r}")
        out[k.strip()] = yaml.safe_load(v)
    return out


def train(cfg: RoiTrainConfig) -> dict:
    try:
        data = find_input(cfg.data)  # a path, or <dataset slug>/dataset.yaml under the input roots (Kaggle)
    except FileNotFoundError:
        raise SystemExit(f"--data {cfg.data} not found; build the ROI set with `python -m src.make_data` "
                         f"(it writes input/ecg-synth-roi/dataset.yaml)") from None
    model_path = Path(cfg.model)
    if model_path.suffix == ".pt" and not model_path.exists():
        raise SystemExit(f"--model {cfg.model}: no such local file, and nothing can be downloaded offline; use "
                         f"--model=yolov8n.yaml (train from scratch) or the path of a .pt you have")
    out = Path(cfg.out) if cfg.out else run_dir("roi", cfg.name)
    prepare_run_dir(out, cfg)
    YOLO = import_yolo()
    set_threads(cfg.threads)
    device = yolo_device(cfg.device)
    on_cuda = device != "cpu"
    amp = on_cuda if cfg.amp == "auto" else cfg.amp.lower() in ("1", "true", "yes")
    if amp:
        # The AMP self-test loads yolo26n.pt (a download); offline it cannot run, so trust AMP on CUDA.
        import ultralytics.engine.trainer as trainer_mod
        trainer_mod.check_amp = lambda model: True
    last = out / "yolo" / "weights" / "last.pt"
    t0 = time.time()
    with keep_threads():
        if cfg.resume and last.exists():
            model = YOLO(str(last))
            model.train(resume=True)
        else:
            model = YOLO(cfg.model, task="detect")
            args = dict(data=str(data.resolve()), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, device=device,
                        workers=cfg.workers, amp=amp, patience=cfg.patience, seed=cfg.seed, deterministic=True,
                        mosaic=cfg.mosaic, rect=cfg.rect, cache=cfg.cache, nbs=cfg.nbs, optimizer=cfg.optimizer,
                        lr0=cfg.lr0, warmup_epochs=cfg.warmup_epochs, project=str(out.resolve()), name="yolo",
                        exist_ok=True, plots=False, verbose=False,
                        **({"time": cfg.minutes / 60} if cfg.minutes > 0 else {}))
            model.train(**{**args, **parse_overrides(cfg.overrides)})  # --overrides wins over the fields above
    seconds = time.time() - t0
    best = Path(model.trainer.best if Path(model.trainer.best).exists() else model.trainer.last)
    with atomic_path(out / "best.pt") as tmp:
        shutil.copyfile(best, tmp)
    for key in [k for k in _MODELS if k[0] == str((out / "best.pt").resolve())]:
        del _MODELS[key]  # a retrain replaced that file
    raw = {k: float(v) for k, v in (model.trainer.metrics or {}).items() if isinstance(v, (int, float))}
    val = evaluate(read_split(data, "val"), out / "best.pt", yolo_only=True, device=device)
    metrics = {"mAP50": raw.get("metrics/mAP50(B)"), "mAP50-95": raw.get("metrics/mAP50-95(B)"),
               "val_mean_iou": val["mean_iou"], "val_frac_iou_ge_0.9": val["frac_iou_ge_0.9"], "n_val": val["n"],
               "epochs": int(getattr(model.trainer, "epoch", cfg.epochs - 1)) + 1, "imgsz": cfg.imgsz,
               "train_seconds": round(seconds, 1), "device": device,
               "ultralytics": raw}
    write_json(out / "metrics.json", metrics)
    print(f"[roi] best.pt -> {out / 'best.pt'}; val mean IoU {val['mean_iou']:.3f} (n={val['n']}), "
          f"mAP50-95 {metrics['mAP50-95']}, {seconds:.0f}s")
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# Prediction CLI
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RoiPredictConfig:
    """Detect the ROI on images and write a CSV (id, path, x0, y0, x1, y1, confidence, method)."""
    src: str  # an image, or a folder of images
    weights: str = ""  # YOLO weights (e.g. outputs/roi/yolov8n/best.pt); '' = OpenCV fallback only
    conf: float = 0.25  # below this YOLO confidence the fallback is used
    out: str = ""  # output CSV (default outputs/roi/predict/<src name>.csv)
    device: str = ""  # '' = cuda:0 when available else cpu; or 'cpu', '0'


def predict(cfg: RoiPredictConfig):
    import pandas as pd
    src = Path(cfg.src)
    if not src.exists():
        raise SystemExit(f"--src {src} does not exist")
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    rows = []
    device = yolo_device(cfg.device)
    for p in files:
        try:
            r = detect_roi_info(imread(p), cfg.weights or None, cfg.conf, device)
        except OSError as e:  # one unreadable image never stops the run
            rows.append({"id": p.stem, "path": str(p), "error": str(e)})
            continue
        rows.append({"id": p.stem, "path": str(p), **dict(zip(("x0", "y0", "x1", "y1"), np.round(r["box"], 1))),
                     "confidence": round(r["confidence"], 4), "method": r["method"], "error": ""})
    out = Path(cfg.out) if cfg.out else run_dir("roi", "predict") / f"{src.stem}.csv"
    df = pd.DataFrame(rows)
    write_csv(out, df)
    print(f"[roi] {len(df)} images -> {out}")
    return df


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": (RoiTrainConfig, train), "predict": (RoiPredictConfig, predict)}
    usage = "usage: python -m src.roi train|predict --key=value ...  (add --help after the command)"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return
    if not argv or argv[0] not in commands:
        raise SystemExit(usage)
    cls, fn = commands[argv[0]]
    return fn(parse_args(cls, argv[1:]))


if __name__ == "__main__":
    main()
