"""Pixel and metadata helpers under the page renderer (src/render.py) and the camera (src/photo.py): weighted
sampling, Catmull-Rom splines, gain maps, sensor noise, JPEG, and the geometry of the JSON metadata.

The metadata of an image (see render.render_ecg) holds the pixel position of every plotted sample, the grid outline and
the page corners. Every step that moves pixels (rotation, crop, resize, the camera) moves those coordinates with the
same point map through `transform_meta`; `finalize_meta` turns the working form (float arrays) into JSON-able lists.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .utils import encode_image


def pick(rng, options, p):
    """One of `options` with relative weights `p` (a cumulative search: much cheaper than rng.choice with p)."""
    c = np.cumsum(p, dtype=float)
    return options[min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), len(options) - 1)]


# ----------------------------------------------------------------------------------------------------------------
# Geometry on metadata: every pixel-moving step calls this with the same point map it applied to the pixels
# ----------------------------------------------------------------------------------------------------------------
def _bounds(pts: np.ndarray) -> list[float] | None:
    pts = pts[np.all(np.isfinite(pts), 1)]
    if len(pts) == 0:
        return None
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def _clip_box(box, size):
    if box is None:
        return None
    w, h = size
    b = [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h), min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)]
    return b


def refresh_boxes(meta: dict) -> None:
    """Boxes are derived, never transformed: lead bbox = bounds of its plotted sample centres, roi = bounds of the
    grid outline, name boxes = bounds of their corner quads; all clipped to the image."""
    size = meta["size"]
    _working_leads(meta)
    meta["roi_box"] = _clip_box(_bounds(np.asarray(meta["roi_poly"], float)), size)
    for lead in meta["leads"]:
        x, y = lead["x"], lead["y"]
        if lead["undrawn"].any():
            x, y = x[~lead["undrawn"]], y[~lead["undrawn"]]
        if len(x):
            x0, x1, y0, y1 = x.min(), x.max(), y.min(), y.max()
            lead["bbox"] = _clip_box([float(x0), float(y0), float(x1), float(y1)], size)
            inside = x0 >= 0 and y0 >= 0 and x1 <= size[0] - 1 and y1 <= size[1] - 1
            lead["visible"] = 1.0 if inside else float(np.mean((x >= 0) & (x <= size[0] - 1) & (y >= 0) &
                                                               (y <= size[1] - 1)))
        else:
            lead["bbox"], lead["visible"] = None, 0.0
        if lead.get("name_quad") is not None:
            q = np.asarray(lead["name_quad"], float)
            lead["name_box"] = _clip_box([float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()),
                                          float(q[:, 1].max())], size)


def _working_leads(meta: dict) -> list[dict]:
    """Leads with float arrays x, y and a boolean `undrawn` (internal form). A finalised meta (y = None where the
    sample was NaN) is converted back; undrawn samples get a y interpolated from their drawn neighbours, so that
    every sample keeps a position (x tells its time) through later geometric steps."""
    for lead in meta["leads"]:
        if "undrawn" not in lead:
            y = np.array([np.nan if v is None else v for v in lead["y"]], float)
            lead["undrawn"] = ~np.isfinite(y)
            k = np.arange(len(y))
            if lead["undrawn"].all():
                y[:] = lead.get("baseline_px", 0.0)
            elif lead["undrawn"].any():
                y[lead["undrawn"]] = np.interp(k[lead["undrawn"]], k[~lead["undrawn"]], y[~lead["undrawn"]])
            lead["y"], lead["x"] = y, np.asarray(lead["x"], float)
    return meta["leads"]


def transform_meta(meta: dict, fn, wh: tuple[int, int], matrix: np.ndarray | None = None) -> dict:
    """Moves every coordinate in `meta` by the point map `fn` ((N, 2) -> (N, 2), page->new pixels), sets the new image
    size (`wh`: width, height, as meta['size'] keeps it, in the x, y order of its coordinates) and refreshes all
    boxes. `matrix` (3x3) is the planar part of `fn`, composed into meta['page_to_image']."""
    for lead in _working_leads(meta):
        pts = fn(np.stack([lead["x"], lead["y"]], 1))
        lead["x"], lead["y"] = pts[:, 0], pts[:, 1]
        if lead.get("name_quad") is not None:
            lead["name_quad"] = fn(np.asarray(lead["name_quad"], float))
    for key in ("roi_poly", "paper_quad"):
        meta[key] = fn(np.asarray(meta[key], float))
    if matrix is not None:
        meta["page_to_image"] = np.asarray(matrix, float) @ np.asarray(meta["page_to_image"], float)
    meta["size"] = [int(wh[0]), int(wh[1])]
    refresh_boxes(meta)
    return meta


def affine_fn(m: np.ndarray):
    m = np.asarray(m, float)
    return lambda p: p @ m[:2, :2].T + m[:2, 2]


def finalize_meta(meta: dict) -> dict:
    """Arrays -> JSON-able lists (coordinates rounded to 0.01 px; NaN -> None), numpy scalars -> Python."""
    # outlines and matrices stay exact (few numbers); per-sample coordinates are rounded to 0.01 px (JSON size)
    coords = {k: np.asarray(meta[k], float).tolist() for k in ("roi_poly", "paper_quad", "page_to_image", "homography")
              if k in meta}
    leads = []
    for lead in _working_leads(meta):
        undrawn = lead["undrawn"]
        y = np.round(lead["y"], 2).tolist()
        if undrawn.any():
            y = [None if u else v for v, u in zip(y, undrawn.tolist())]
        rest = _plain({k: v for k, v in lead.items() if k not in ("x", "y", "undrawn", "name_quad")})
        nq = lead.get("name_quad")
        leads.append({**rest, "x": np.round(lead["x"], 2).tolist(), "y": y,
                      "name_quad": None if nq is None else np.round(np.asarray(nq, float), 2).tolist()})
    out = _plain({k: v for k, v in meta.items() if k not in coords and k != "leads"})
    return {**out, **coords, "leads": leads}


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        if o and isinstance(o[0], float):  # coordinate lists: already plain
            return list(o)
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


# ----------------------------------------------------------------------------------------------------------------
# Paper artefacts
# ----------------------------------------------------------------------------------------------------------------
def catmull_rom(points: np.ndarray, n: int = 8, closed: bool = False) -> np.ndarray:
    """Smooth curve through `points` (uniform Catmull-Rom), n samples per segment."""
    p = np.asarray(points, float)
    p = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (3 * p1 - p0 - 3 * p2 + p3) *
                          t3))
    out.append(p[-2:-1] if not closed else p[1:2])
    return np.vstack(out)


def multiply_gain(img: np.ndarray, gain_small: np.ndarray) -> None:
    """img *= gain (a smooth low-res 1- or 3-channel float map), in place, in uint8 arithmetic (gain <= 1.27)."""
    h, w = img.shape[:2]
    g = np.clip(np.round(gain_small * 200), 0, 255).astype(np.uint8)
    if g.ndim == 2:
        g = cv2.merge([g, g, g])
    cv2.multiply(img, cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR), dst=img, scale=1 / 200)


_NOISE_BLOCK = 512
_NOISE_LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)


@functools.lru_cache(maxsize=1)
def _unit_noise() -> np.ndarray:
    return np.random.default_rng(1000).standard_normal((2 * _NOISE_BLOCK, 2 * _NOISE_BLOCK, 3), np.float32)


@functools.lru_cache(maxsize=len(_NOISE_LEVELS))
def _noise_tiles(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) Gaussian noise of std `level`, split into its positive and negative parts as uint8, so adding
    it is two saturating uint8 operations (img + pos - neg == clip(img + noise), as only one part is non-zero)."""
    n = np.round(_unit_noise() * level)
    return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)


def add_noise(img: np.ndarray, sigma: float, rng, inplace: bool = False) -> tuple[np.ndarray, float]:
    """Gaussian noise (std `sigma` grey levels, snapped to a cached level) at a random offset into a fixed tile:
    per image only two saturating adds per block, no random numbers drawn per pixel. Returns (img, level used)."""
    level = min(_NOISE_LEVELS, key=lambda v: abs(v - sigma))
    pos, neg = _noise_tiles(level)
    oy, ox = int(rng.integers(_NOISE_BLOCK)), int(rng.integers(_NOISE_BLOCK))
    h, w = img.shape[:2]
    out = img if inplace else img.copy()
    for y in range(0, h, _NOISE_BLOCK):
        for x in range(0, w, _NOISE_BLOCK):
            blk = out[y:y + _NOISE_BLOCK, x:x + _NOISE_BLOCK]
            bh, bw = blk.shape[:2]
            cv2.add(blk, pos[oy:oy + bh, ox:ox + bw], dst=blk)
            cv2.subtract(blk, neg[oy:oy + bh, ox:ox + bw], dst=blk)
    return out, float(level)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    # decoded straight to RGB: the same pixels as decoding to BGR and swapping, without the extra pass (~10% less)
    buf = np.frombuffer(encode_image(img, ".jpg", quality=int(quality)), np.uint8)
    return cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)


def fit_to_size(img: np.ndarray, meta: dict, hw: tuple[int, int], pad_rgb=(236, 236, 234)
                ) -> tuple[np.ndarray, dict]:
    """Scale uniformly to fit `hw` (height, width) and pad the rest (a sheet on a scanner bed), so squares stay square
    and px_per_mm stays a single exact number. The metadata moves with the pixels."""
    h, w = img.shape[:2]
    H, W = int(hw[0]), int(hw[1])
    s = min(W / w, H / h)
    nw, nh = min(W, max(1, round(w * s))), min(H, max(1, round(h * s)))
    sx, sy = nw / w, nh / h  # equal up to rounding of the new size
    ox, oy = (W - nw) // 2, (H - nh) // 2
    out = np.empty((H, W, 3), np.uint8)
    out[:] = pad_rgb
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out[oy:oy + nh, ox:ox + nw] = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh), interpolation=interp)
    # pixel centres: x' = (x + 0.5) * s - 0.5 (+ pad offset)
    m = np.array([[sx, 0, 0.5 * sx - 0.5 + ox], [0, sy, 0.5 * sy - 0.5 + oy], [0, 0, 1]])
    transform_meta(meta, affine_fn(m), (W, H), m)
    meta["px_per_mm"] = float(meta["px_per_mm"] * math.sqrt(sx * sy))
    meta["trace_px"] = float(meta.get("trace_px", 1.0) * math.sqrt(sx * sy))
    meta["fit"] = {"scale": [sx, sy], "offset": [ox, oy]}
    return out, meta


def masks_from_meta(meta: dict, kind: str = "leads", thickness: float | None = None) -> np.ndarray:
    """uint8 HxW mask drawn from the metadata coordinates: `leads` = 1 + index into meta['leads'] under each trace,
    `trace` = 255 under any trace. Consistent with the image by construction (same points, same width)."""
    w, h = meta["size"]
    mask = np.zeros((h, w), np.uint8)
    th = max(1, int(round(thickness or meta.get("trace_px", 1))))
    for i, lead in enumerate(meta["leads"]):
        x = np.asarray(lead["x"], float)
        y = np.array([np.nan if v is None else v for v in lead["y"]], float)
        ok = np.isfinite(y) if "undrawn" not in lead else ~lead["undrawn"]
        edges = np.flatnonzero(np.diff(ok.astype(np.int8))) + 1
        runs = [np.round(np.stack([x[a:b], y[a:b]], 1) * 16).astype(np.int32)
                for a, b in zip(np.r_[0, edges], np.r_[edges, len(ok)]) if ok[a]]
        cv2.polylines(mask, runs, False, 255 if kind == "trace" else min(255, i + 1), th, cv2.LINE_8, 4)
    return mask
