"""Image preprocessing: the one function training and inference both call, and a resumable cache built with it.

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
             falls back to roi_clahe, and the index says why.
  trace      the `full` geometry (same fallback to the grid crop), then the trace map: the ink alone, black on white,
             with paper, grid and lighting removed (trace_map explains how). The CPU default: see README "Results".
A portrait crop/page (a photo taken sideways) is turned 90 degrees clockwise so traces run horizontally; whether a
page is upside down is not resolved.

--src: a folder of images (ids = file stems); a competition root (train.csv beside train/ and test/: both folders);
a CSV with an id column and either a path column (relative to the CSV) or images in the folder named like the CSV
(train.csv -> train/<id>.png); or one image file.

Cache layout (<dst>):  images/<id>.png      preprocessed RGB, lossless PNG by default (--out_ext=.jpg for JPEG)
                       index.csv            id, cache_path (relative to <dst>; read_cache() adds absolute paths),
                                            status ok|skipped, error, box, quad, fallback, roi_method, roi_conf,
                                            rotate, src_w, src_h, src_path
                       preprocess.yaml      the config; infer re-applies it to test images (config_from_dict)
Re-running skips ids already cached (resumable; unreadable images are retried). A dst built with other image settings,
or by another version of this code (PIXELS_VERSION), is refused. Unreadable or truncated images are listed as skipped
with the error; the run goes on.

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
from collections import Counter
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .config import config_dict, find_input, parse_args, paths
from .roi import IMAGE_EXTS, downscale, detect_roi_info, paper_mask
from .sources import competition_columns, require_valid_competition
from .utils import atomic_path, imread, imwrite, parallel_map, write_csv, write_text

STRATEGIES = ("raw", "roi_clahe", "full", "trace")
MIN_EDGE_SUPPORT = 8.0  # grey levels per px that every side of a sheet's outline must show (see refine_quad);
# at 4, once line candidates came in, 3 more wrong quads got through on the demo photos (bench/page_finder.py)
# Fields that change the cached pixels: a cache built with other values is not resumed into.
# The ROI weights count by content (roi_weights_sha256), not path, so a cache can be resumed on another machine.
IMAGE_KEYS = ("strategy", "size", "margin", "clahe_clip", "clahe_grid", "roi_conf", "out_ext", "jpeg_quality")
# The version of the code that makes the cached pixels: bump it when a change alters what preprocess_image returns for
# the same settings. A cache or run folder made by another version is refused, because a stale cache would otherwise be
# resumed into with mixed maps, and inference would apply new code to a model trained on the old maps. Caches written
# before the version was recorded are version 1.
PIXELS_VERSION = 1
INDEX_COLUMNS = ("id", "cache_path", "status", "error", "box", "quad", "fallback", "roi_method", "roi_conf", "rotate",
                 "src_w", "src_h", "src_path")


@dataclasses.dataclass
class PreprocessConfig:
    """Preprocess ECG photos into a cache (see the module docstring for --src forms and the cache layout)."""
    src: str = ""  # images: folder, competition root, CSV (id[,path]) or one image file
    dst: str = ""  # cache folder (default <input>/<src name>-<strategy>-<H>x<W>)
    strategy: str = "roi_clahe"  # raw | roi_clahe | full | trace (see the module docstring)
    size: tuple[int, ...] = (512, 768)  # output H W: W/H 1.5 ~ a 12-lead grid's aspect, so stretching barely distorts
    margin: float = 0.02  # roi_clahe: crop margin, as a fraction of the box width/height on each side
    clahe_clip: float = 2.0  # CLAHE clip limit (contrast cap per tile); 0 turns CLAHE off
    clahe_grid: int = 8  # CLAHE tiles per side
    roi_weights: str = ""  # YOLO ROI weights (.pt); '' = the OpenCV fallback detector only
    roi_conf: float = 0.25  # YOLO confidence below which the fallback detector is used
    out_ext: str = ".png"  # cache format: .png (lossless) or .jpg
    jpeg_quality: int = 95  # when out_ext is .jpg
    png_compression: int = 1  # zlib level for .png: 1 is ~35% faster than 3 at about the same size on photos
    workers: int = 0  # processes (0: one per core; 1: in this process)
    shard: str = ""  # 'i/n' (0 <= i < n): this run does the ids with crc32(id) % n == i
    limit: int = 0  # only the first N ids (0: all), for quick looks

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ValueError(f"size {self.size}: give output height and width, e.g. --size 512 768")
        self.size = tuple(int(v) for v in self.size)
        if not self.out_ext.startswith("."):
            self.out_ext = "." + self.out_ext


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


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Four points as TL, TR, BR, BL (image coordinates, y down)."""
    pts = np.asarray(pts, np.float64).reshape(4, 2)
    c = pts.mean(0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise on screen, starting anywhere
    start = int(np.argmin(pts.sum(1)))  # TL: smallest x + y
    return np.roll(pts, -start, axis=0)


def _intersect(l1, l2) -> np.ndarray | None:
    (p1, d1), (p2, d2) = l1, l2
    det = d2[0] * d1[1] - d1[0] * d2[1]  # of [d1, -d2]: p1 + s d1 = p2 + u d2, solved by Cramer's rule
    if abs(det) < 1e-9:
        return None
    w = p2 - p1
    return p1 + (d2[0] * w[1] - w[0] * d2[1]) / det * d1


def refine_quad(lum: np.ndarray, quad: np.ndarray, reach: float = 6.0) -> tuple[np.ndarray, float]:
    """Snap each side of a rough quad onto the strongest brightness step within `reach` px along its normal.

    Samples 40 profiles across each side of the (median-blurred) lightness, finds the steepest step on each with
    sub-pixel precision, fits a line through them and intersects neighbouring lines. Returns the refined quad and its
    edge support: the weakest side's median step (grey levels per px) -- a real sheet edge has one all round, a
    corner of background mistaken for paper does not.
    """
    q = np.asarray(quad, np.float64)
    offs = np.arange(-reach, reach + 0.5, 0.5)
    a, b = q, np.roll(q, -1, axis=0)  # side k runs from corner k to corner k+1
    d = (b - a) / (np.linalg.norm(b - a, axis=1, keepdims=True) + 1e-9)
    n = np.stack([-d[:, 1], d[:, 0]], 1)
    t = np.linspace(0.08, 0.92, 40)
    base = a[:, None] + t[None, :, None] * (b - a)[:, None]  # [4, 40, 2]
    pts = (base[:, :, None] + offs[None, None, :, None] * n[:, None, None]).reshape(160, len(offs), 2)
    # one remap for all four sides (this runs twice per candidate, ~a dozen candidates per photo)
    prof = cv2.remap(lum, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    g = np.abs(np.diff(prof, axis=1)) / 0.5  # step per px between neighbouring samples
    r = np.arange(160)
    j = np.argmax(g, axis=1)
    jj = np.clip(j, 1, g.shape[1] - 2)
    g0, g1, g2 = g[r, jj - 1], g[r, jj], g[r, jj + 1]
    den = g0 - 2 * g1 + g2
    sub = np.where(np.abs(den) > 1e-6, 0.5 * (g0 - g2) / np.where(np.abs(den) > 1e-6, den, 1), 0.0)
    o = offs[0] + (jj + 0.5 + np.clip(sub, -0.5, 0.5)) * 0.5  # gradient sample j sits between offs[j], offs[j+1]
    edge = (base + o.reshape(4, 40, 1) * n[:, None]).astype(np.float32)
    support = np.median(g[r, j].reshape(4, 40), axis=1)
    lines = []
    for k in range(4):
        vx, vy, x0, y0 = cv2.fitLine(edge[k], cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0], np.float64), np.array([vx, vy], np.float64)))
    out = [_intersect(lines[k - 1], lines[k]) for k in range(4)]  # corner k joins side k-1 and side k
    if any(c is None for c in out):
        return q, 0.0
    return np.array(out), float(support.min())


def _quad_candidates(mask: np.ndarray, edges: np.ndarray) -> list[np.ndarray]:
    """Rough 4-gons: the paper mask's outline and closed outlines in the edge map."""
    sh, sw = mask.shape
    cands = []
    sources = []
    if not mask.all():
        sources += cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    sources += cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]
    for c in sources:
        hull = cv2.convexHull(c)
        if cv2.contourArea(hull) < 0.2 * sh * sw:
            continue
        peri = cv2.arcLength(hull, True)
        for eps in (0.01, 0.02, 0.03, 0.05, 0.08):
            a = cv2.approxPolyDP(hull, eps * peri, True)
            if len(a) == 4:
                cands.append(order_corners(a.reshape(4, 2)))
                break
    return cands


def _straight_lines(canny: np.ndarray, per_bin: int = 4, most: int = 32) -> np.ndarray:
    """[K, 2] (rho, theta) of the strongest straight lines in an edge map, near-duplicates merged.

    Rows of traces and grid tiles out-vote the sheet's sides (a 12-lead page holds many long horizontal runs), so at
    most `per_bin` lines are kept per 10 degrees of direction: the sheet's other pair of sides always gets in.
    """
    m = min(canny.shape)
    found = cv2.HoughLines(canny, 1, np.pi / 180, int(0.2 * m))
    if found is None:
        return np.zeros((0, 2))
    keep, count = [], Counter()
    for rho, th in found.reshape(-1, 2)[:600]:  # sorted by votes; the tail is texture
        if rho < 0:
            rho, th = -rho, th - np.pi  # one form per line: rho >= 0
        b = int((th % np.pi) // np.radians(10))
        if count[b] >= per_bin:
            continue
        if any(abs((th - t2 + np.pi) % (2 * np.pi) - np.pi) < np.radians(3) and abs(rho - r2) < 6 for r2, t2 in keep):
            continue
        count[b] += 1
        keep.append((rho, th))
        if len(keep) >= most:
            break
    return np.array(keep, np.float64).reshape(-1, 2)


def _line_quads(canny: np.ndarray, edges: np.ndarray, most: int = 12) -> list[np.ndarray]:
    """Rough 4-gons from pairs of straight lines: the sheet's sides where its outline never closes.

    The paper mask and the closed edge outlines miss a sheet that touches a blank sheet, a bright desk or the glare
    on it: the blob or outline runs on into the neighbour. Its four sides are still the longest straight edges around
    it. Every two roughly parallel lines (< 30 degrees apart, > 1/4 of the image apart) and two more crossing them
    (> 55 degrees) make a quad; one whose every side lies on the edge map for >= 60 % of its length is kept. Coverage
    comes from a running sum along each line, so thousands of combinations cost a few ms. Largest first, at most
    `most`, none within 4 px of a larger one.
    """
    sh, sw = edges.shape
    lines = _straight_lines(canny)
    if len(lines) < 4:
        return []
    rho, th = lines[:, 0], lines[:, 1]
    n = np.stack([np.cos(th), np.sin(th)], 1)
    d = np.stack([-n[:, 1], n[:, 0]], 1)
    p0 = rho[:, None] * n
    reach = int(np.hypot(sh, sw)) + 1
    s = np.arange(-reach, reach + 1)
    x = np.round(p0[:, None, 0] + s * d[:, None, 0]).astype(int)
    y = np.round(p0[:, None, 1] + s * d[:, None, 1]).astype(int)
    inside = (x >= 0) & (x < sw) & (y >= 0) & (y < sh)
    on = np.zeros(x.shape, np.float32)
    on[inside] = edges[y[inside], x[inside]] > 0
    run = np.concatenate([np.zeros((len(lines), 1), np.float32), np.cumsum(on, 1)], 1)  # edge px along each line

    ang = th % np.pi
    dang = np.abs((ang[:, None] - ang[None, :] + np.pi / 2) % np.pi - np.pi / 2)
    off = n @ np.array([sw / 2, sh / 2]) - rho  # signed distance of the image centre from each line
    apart = np.abs(off[:, None] - np.sign(n @ n.T) * off[None, :])
    ii, jj = np.nonzero(np.triu((dang < np.radians(30)) & (apart > 0.25 * min(sh, sw)), 1))
    pa, pb = np.triu_indices(len(ii), 1)
    a, b, c, e = ii[pa], jj[pa], ii[pb], jj[pb]
    cross = np.minimum.reduce([dang[a, c], dang[a, e], dang[b, c], dang[b, e]]) > np.radians(55)
    a, b, c, e = a[cross], b[cross], c[cross], e[cross]
    if not len(a):
        return []
    # corners: a x c, c x b, b x e, e x a (the crossing test keeps every pair far from parallel)
    q = np.stack([np.linalg.solve(np.stack([n[i], n[j]], 1), np.stack([rho[i], rho[j]], 1)[..., None])[..., 0]
                  for i, j in ((a, c), (c, b), (b, e), (e, a))], 1)
    ok = ((q >= -0.05 * np.array([sw, sh])) & (q <= 1.05 * np.array([sw, sh]))).all((1, 2))
    area = 0.5 * np.abs(sum(q[:, k, 0] * q[:, k - 3, 1] - q[:, k - 3, 0] * q[:, k, 1] for k in range(4)))
    ok &= area > 0.2 * sh * sw
    cover = np.ones(len(q))
    for line, k0, k1 in ((c, 0, 1), (b, 1, 2), (e, 2, 3), (a, 3, 0)):
        s0 = np.einsum("ij,ij->i", q[:, k0] - p0[line], d[line])
        s1 = np.einsum("ij,ij->i", q[:, k1] - p0[line], d[line])
        lo, hi = np.minimum(s0, s1), np.maximum(s0, s1)
        i0 = np.clip(np.round(lo + 0.05 * (hi - lo)).astype(int) + reach, 0, 2 * reach + 1)
        i1 = np.clip(np.round(hi - 0.05 * (hi - lo)).astype(int) + reach, 0, 2 * reach + 1)
        cover = np.minimum(cover, (run[line, i1] - run[line, i0]) / np.maximum(i1 - i0, 1))
    idx = np.nonzero(ok & (cover >= 0.6))[0]
    quads = []
    for i in idx[np.argsort(-area[idx])]:
        qi = order_corners(q[i])
        # near-copies (lines a few px apart on one edge) snap to the same quad in refine_quad: refine one
        if not quads or corner_distance(qi, np.array(quads)).min() > 4:
            quads.append(qi)
            if len(quads) == most:
                break
    return quads


def _outline_cover(quad: np.ndarray, edges: np.ndarray, frame: int = 4) -> float:
    """The smallest share of a side's length that lies on the edge map: ~1 for a sheet's outline, lower for a side
    that cuts across paper or background to join up two pieces of edge.

    Points within `frame` px of the image border count as on it: Canny marks nothing there, so a sheet photographed
    up to the frame's edge would otherwise fail on that side. On the 700 demo photos (train + test) this took the
    fallbacks from 98 to 85 with wrong accepts unchanged at 10; on scans, whose page is often cut by the frame, wrong
    accepts rose from 11 to 15 of 300 (bench/page_finder.py, README "Results")."""
    sh, sw = edges.shape
    t = np.linspace(0.05, 0.95, 60)[:, None]
    cover = []
    for k in range(4):
        p = np.round(quad[k] + t * (quad[(k + 1) % 4] - quad[k])).astype(int)
        inside = (p[:, 0] >= 0) & (p[:, 0] < sw) & (p[:, 1] >= 0) & (p[:, 1] < sh)
        on = np.zeros(len(p), bool)
        on[inside] = edges[p[inside, 1], p[inside, 0]] > 0
        rim = (p[:, 0] < frame) | (p[:, 1] < frame) | (p[:, 0] >= sw - frame) | (p[:, 1] >= sh - frame)
        cover.append(float((on | (rim & inside)).sum() / len(t)))
    return min(cover)


def _inside_median(v: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Median over the last axis of the entries where `inside` (NaN elsewhere); np.nanmedian does the same through
    masked arrays, ~10x slower, and this runs per candidate quad."""
    k = inside.sum(-1, keepdims=True)
    srt = np.sort(v, axis=-1)  # NaNs sort last
    lo, hi = np.maximum(k - 1, 0) // 2, k // 2
    hi = np.minimum(hi, v.shape[-1] - 1)
    return 0.5 * (np.take_along_axis(srt, lo, -1) + np.take_along_axis(srt, hi, -1))[..., 0]


def _paper_outside(L: np.ndarray, chroma: np.ndarray, quad: np.ndarray) -> int:
    """How many sides of a quad have paper-like pixels just outside them (not darker than just inside, neutral).

    The printed grid's outline is a strong rectangle too, but outside it lies the white page margin; outside a sheet's
    outline lies background. A quad with paper outside on 3-4 sides is an inner rectangle, not the sheet.
    L, chroma: the LAB lightness and chroma of the image (computed once per image: this runs per candidate).
    """
    q = np.asarray(quad, np.float64)
    a, b = q, np.roll(q, -1, axis=0)  # side k runs from corner k to corner k+1
    d = (b - a) / (np.linalg.norm(b - a, axis=1, keepdims=True) + 1e-9)
    n = np.stack([-d[:, 1], d[:, 0]], 1)  # points into the quad for TL, TR, BR, BL order (y down)
    t = np.linspace(0.1, 0.9, 30)
    base = a[:, None] + t[None, :, None] * (b - a)[:, None]  # [4 sides, 30, 2]
    offs = np.array([6, 8, 10], np.float64)
    # [4 sides, 2 (outside, inside), 3 offsets, 30, 2] -> per side and band, 90 sample points
    pts = base[:, None, None] + np.array([-1.0, 1.0])[None, :, None, None, None] * offs[None, None, :, None, None] \
        * n[:, None, None, None, :]
    xs, ys = pts[..., 0].round().astype(int).reshape(4, 2, -1), pts[..., 1].round().astype(int).reshape(4, 2, -1)
    inside = (xs >= 0) & (xs < L.shape[1]) & (ys >= 0) & (ys < L.shape[0])
    xs, ys = np.clip(xs, 0, L.shape[1] - 1), np.clip(ys, 0, L.shape[0] - 1)
    lum = np.where(inside, L[ys, xs], np.nan)
    chr_ = np.where(inside, chroma[ys, xs], np.nan)
    valid = inside.mean(2) >= 0.5  # a band mostly off the image says nothing
    lm, cm = _inside_median(lum, inside), _inside_median(chr_, inside)
    paper = valid[:, 0] & valid[:, 1] & (lm[:, 0] >= 0.95 * lm[:, 1]) & (cm[:, 0] < 12)
    return int(paper.sum())


def find_paper_quad(img: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """The sheet's corners (TL, TR, BR, BL, photo pixels) and measures for quad_problem; None if no 4-gon is found.

    Rough candidates come from the bright-neutral paper mask, from closed outlines in a Canny edge map of the
    median-blurred lightness (the blur erases grid lines and traces, keeping the sheet's outline) and from pairs of
    straight lines (_line_quads: for a sheet whose outline runs on into a neighbour); each is snapped to the
    brightness step along its sides (refine_quad). Inner rectangles (the grid's outline: paper outside) are dropped.

    Of those that pass the shape checks, the best by edge support x area x outline cover^2, and by 0.7 for each side
    with paper outside, wins: the largest alone picks a sheet merged with the blank paper beside it (sides half on
    edges, weaker steps) or one side on a crease. Its measures add `outline` (_outline_cover) and `rival`: the best
    score of a candidate with other corners (> 3 % of the diagonal away) over the winner's, which quad_problem
    rejects when two different sheets score alike. With none passing, the largest is returned so the caller can
    record why it failed.
    """
    small, f = downscale(img, 640)
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    lum = cv2.medianBlur(lab[..., 0], 7)
    edges = cv2.dilate(cv2.Canny(lum, 10, 30), np.ones((3, 3), np.uint8))
    # A closing takes the ink (traces, grid lines, thinner than 7 px here) out of the paper, so the straight lines
    # and the outline cover see the sheet's sides, not rows of beats.
    closed = cv2.morphologyEx(cv2.medianBlur(lab[..., 0], 5), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    canny = cv2.Canny(closed, 10, 30)
    outline = cv2.dilate(canny, np.ones((3, 3), np.uint8))
    lumf = lum.astype(np.float32)
    L = lab[..., 0].astype(np.float32)
    chroma = np.hypot(lab[..., 1].astype(np.float32) - 128, lab[..., 2].astype(np.float32) - 128)
    scored = []
    for c in _quad_candidates(paper_mask(small, lab), edges) + _line_quads(canny, outline):
        q, support = refine_quad(lumf, c)
        q, support2 = refine_quad(lumf, q, reach=2.0)  # second pass from the snapped lines, tighter window
        n_paper = _paper_outside(L, chroma, q)
        if n_paper >= 3:
            continue
        m = {"support": round(min(support, support2), 2),
             "area_frac": float(cv2.contourArea(q.astype(np.float32)) / (sh * sw)),
             "outline": round(_outline_cover(q, outline), 3)}
        qf = (q + 0.5) * f - 0.5  # small pixel i is the mean of full pixels [i*f, (i+1)*f)
        score = m["support"] * m["area_frac"] * m["outline"] ** 2 * 0.7 ** n_paper
        scored.append((score, not _shape_problem(qf, m), qf, m))
    if not scored:
        return None, {"reason": "no_paper_edge"}
    ok = sorted((s for s in scored if s[1]), key=lambda s: -s[0])
    if not ok:
        best = max(scored, key=lambda s: s[3]["area_frac"])
        return best[2], best[3]
    best = ok[0]
    diag = np.linalg.norm(best[2][2] - best[2][0])
    rivals = [s[0] for s in ok[1:] if corner_distance(s[2], best[2]) > 0.03 * diag]
    best[3]["rival"] = round(rivals[0] / best[0], 3) if rivals and best[0] > 0 else 0.0
    return best[2], best[3]


def corner_distance(q1: np.ndarray, q2: np.ndarray) -> float | np.ndarray:
    """The worst corner's distance between quad q1 [4, 2] and quad(s) q2 [..., 4, 2], at the best cyclic match of
    their corners (one number per q2)."""
    q2 = np.asarray(q2, np.float64)
    d = np.min([np.linalg.norm(np.roll(q1, k, axis=0) - q2, axis=-1).max(-1) for k in range(4)], axis=0)
    return float(d) if d.ndim == 0 else d


def _shape_problem(quad: np.ndarray, measures: dict) -> str:
    """quad_problem's checks of one candidate alone: shape, size and edge support."""
    q = np.asarray(quad, np.float64)
    if not cv2.isContourConvex(q.astype(np.float32).reshape(-1, 1, 2)):
        return "quad_not_convex"
    if measures.get("area_frac", 0) < 0.2:
        return "quad_too_small"
    if measures.get("support", 0) < MIN_EDGE_SUPPORT:  # a side without a brightness step: a missed corner/crease
        return "quad_weak_edge"
    for k in range(4):
        u, v = q[k - 1] - q[k], q[(k + 1) % 4] - q[k]
        ang = np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9), -1, 1)))
        if not 55 <= ang <= 125:
            return "quad_angle"
    side = [np.linalg.norm(q[(k + 1) % 4] - q[k]) for k in range(4)]  # top, right, bottom, left
    if min(side[0], side[2]) / max(side[0], side[2]) < 0.6 or min(side[1], side[3]) / max(side[1], side[3]) < 0.6:
        return "quad_perspective"
    aspect = (side[0] + side[2]) / (side[1] + side[3])
    aspect = max(aspect, 1 / aspect)
    if not 1.1 <= aspect <= 1.75:  # A4 1.41, US letter 1.29, seen at an angle
        return "quad_aspect"
    return ""


def quad_problem(quad: np.ndarray, measures: dict) -> str:
    """'' if the quad is a plausible photographed sheet, else the first failed check (recorded as `fallback`).

    Beyond the shape checks: every side must lie on the edge map for >= 75 % of its length (a side bridging a gap
    in the outline is a guess), and no candidate with other corners may score >= 0.7 of the winner's (a crease or
    the grid's outline competing with the sheet's edge: either may be the sheet). On the 500 demo photos
    (bench/page_finder.py) these two take the quads accepted > 3 % of the diagonal off from ~33 to 6, for ~12 % more
    photos falling back; a wrong page costs the classifier more than the grid crop does.
    """
    problem = _shape_problem(quad, measures)
    if problem:
        return problem
    if measures.get("outline", 1.0) < 0.75:
        return "quad_broken_outline"
    if measures.get("rival", 0.0) >= 0.7:
        return "quad_ambiguous"
    return ""


def page_quad(img: np.ndarray) -> tuple[np.ndarray | None, str]:
    """find_paper_quad + quad_problem: (the found quad or None, why it is not used or '') -- what `full` and `trace`
    decide on, and what bench/page_finder.py measures."""
    found, measures = find_paper_quad(img)
    return found, measures.get("reason", "") if found is None else quad_problem(found, measures)


def rectify(img: np.ndarray, quad: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp the quad (TL, TR, BR, BL) to a top-down image of `size` (H, W). Shrinks first with INTER_AREA so the
    bilinear warp does not alias thin grid lines, then warps once."""
    h, w = size
    q = np.asarray(quad, np.float64)
    qw = max(np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3]))
    qh = max(np.linalg.norm(q[3] - q[0]), np.linalg.norm(q[2] - q[1]))
    k = int(min(qw / w, qh / h) // 1.5)  # keep >= 1.5 source px per output px
    if k >= 2:
        ih, iw = img.shape[:2]
        img = cv2.resize(img[: ih // k * k, : iw // k * k], (iw // k, ih // k), interpolation=cv2.INTER_AREA)
        q = (q + 0.5) / k - 0.5
    dst = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) - 0.5  # page corners on the output's outer pixel edges
    m = cv2.getPerspectiveTransform(q.astype(np.float32), dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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


def _odd(v: float) -> int:
    return max(3, int(v) // 2 * 2 + 1)


def trace_map(img: np.ndarray) -> np.ndarray:
    """RGB uint8 page or grid crop -> uint8 grey image of the same size: the ink of the traces, black on white, with
    the paper colour, the printed grid, shadows and lighting taken out.

    Why: from random weights on a CPU budget, a CNN learns the five labels from photos at barely above chance,
    because it must first learn to ignore everything that is not the trace; on this map the same budget learns them
    (README "Results"). The ink is the one thing dark in all three channels: a coloured grid is bright in at least
    one, so the per-pixel channel maximum drops it. Dividing by the local paper brightness (a dilated, blurred
    copy) removes shadows, glare and vignetting. A grey or black grid survives both, but its lines run the whole
    width or height of a rectified page while the trace occupies few pixels of any column, so subtracting each column's
    median and each row's 10th percentile removes the lines and keeps the trace. (A row median would also delete the
    baselines: a 3x4 page's isoelectric line covers most of its row, but every beat pulls the trace off it.)
    """
    w = img.shape[1]
    v = img.max(axis=2).astype(np.float32)
    paper = cv2.blur(cv2.dilate(v, np.ones((_odd(w / 110),) * 2, np.uint8)), (_odd(w / 25),) * 2)
    ink = np.clip(1 - v / np.maximum(paper, 1), 0, 1)
    rows = np.percentile(ink, 10, axis=1, keepdims=True)  # a ruled line crosses ~all of the grid's width; a baseline
    ink -= rows + np.median(ink - rows, axis=0, keepdims=True)  # leaves it at each beat (a median would take it)
    return (255 - 255 * np.clip(ink, 0, 1) + 0.5).astype(np.uint8)


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
    preprocessing to test images. A relative roi_weights is resolved against that folder."""
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
        require_valid_competition(src.parent if src.is_file() else src, "preprocess")  # every table problem, now
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


def _cache_one(item: tuple[str, str], dst: str, cfg: PreprocessConfig) -> dict:
    iid, path = item
    rel = f"images/{iid}{cfg.out_ext}"
    row = {"id": iid, "cache_path": rel, "status": "skipped", "error": "", "box": "", "quad": "", "fallback": "",
           "roi_method": "", "roi_conf": None, "rotate": None, "src_w": None, "src_h": None, "src_path": path}
    try:
        img = imread(path)
        out, info = preprocess_image(img, cfg)
        imwrite(Path(dst) / rel, out, quality=cfg.jpeg_quality, png_compression=cfg.png_compression)
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


def _check_config(dst: Path, cfg: PreprocessConfig) -> None:
    import yaml
    want = {k: v for k, v in config_dict(cfg).items() if k in IMAGE_KEYS}
    want["roi_weights_sha256"] = _weights_digest(cfg.roi_weights)
    f = dst / "preprocess.yaml"
    if f.exists():
        have = yaml.safe_load(f.read_text()) or {}
        _check_version(f, have, f"delete {dst} and build it again, or use another --dst")
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise SystemExit(f"{dst} was built with other settings {diff} (cached, requested); use another --dst or "
                             f"delete {dst}")
        return
    write_text(f, yaml.safe_dump({**config_dict(cfg), **want, "pixels_version": PIXELS_VERSION}, sort_keys=False))


def build_cache(df: pd.DataFrame, dst: str | Path, cfg: PreprocessConfig, workers: int | None = None,
                shard: str | None = None) -> pd.DataFrame:
    """Preprocess df's images (columns id, path) into dst; returns this run's index (ok and skipped rows)."""
    dst = Path(dst)
    workers = cfg.workers if workers is None else workers
    sh = parse_shard(cfg.shard if shard is None else shard)
    df = df[["id", "path"]].astype(str)
    if df["id"].duplicated().any():
        raise ValueError(f"duplicate ids, e.g. {df['id'][df['id'].duplicated()].iloc[:3].tolist()}")
    df = df[in_shard(df["id"], sh)]
    if cfg.limit:
        df = df.iloc[: cfg.limit]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    _check_config(dst, cfg)
    index_path = dst / index_name(sh)
    old = _read_index(index_path)
    done = old[(old["status"] == "ok") & old["cache_path"].map(lambda p: (dst / p).exists())]
    done = done[done["id"].isin(df["id"])]
    todo = df[~df["id"].isin(done["id"])]
    print(f"[preprocess] {cfg.strategy} {cfg.size[0]}x{cfg.size[1]}: {len(df)} images"
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

    fn = partial(_cache_one, dst=str(dst), cfg=cfg)
    for row in parallel_map(fn, list(zip(todo["id"], todo["path"])), workers=workers, desc="preprocess", chunksize=4):
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
        cfg = parse_args(PreprocessConfig, _join_size(argv))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not cfg.src:
        raise SystemExit("--src is required (a folder of images, a competition root, a CSV, or an image)")
    if cfg.roi_weights:
        try:
            cfg.roi_weights = str(find_input(cfg.roi_weights))  # a path, or under an input root (Kaggle outputs)
        except FileNotFoundError:
            raise SystemExit(f"--roi_weights {cfg.roi_weights} not found: train the detector (python -m src.roi "
                             f"train) or leave --roi_weights empty to use the OpenCV fallback") from None
    df = resolve_sources(cfg.src)
    dst = Path(cfg.dst) if cfg.dst else \
        paths().input / f"{Path(cfg.src).with_suffix('').name}-{cfg.strategy}-{cfg.size[0]}x{cfg.size[1]}"
    return build_cache(df, dst, cfg)


if __name__ == "__main__":
    main()
