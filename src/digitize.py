"""Digitisation: an ECG image (scan or photo) -> per-lead signals in mV with their time base.

    d = digitize_image(img)            # Digitised(signal [12, n] mV at d.fs, confidence [12], layout, problems)
    write_digitised("outputs/digitised", "rec1", d); sig, fs = read_digitised("outputs/digitised", "rec1")
    python -m src.digitize --images=input/ecg-synth-comp/train --out=outputs/digitised/train [--method=learned]
    python -m src.digitize --fit       # train the learned path's trace network (minutes on a CPU)

The classical path needs no training:
1. page (page.find_page, page.deskew): the sheet's quad (page.page_quad) is rectified to a top-down page of the
   paper's aspect; when no trusted quad is found the whole image is used (said in `problems`). A residual tilt (a
   rotated scan) is found as the angle that makes the row profile of the dark pixels sharpest, and undone.
2. ink: page.trace_map (paper, grid and light taken out), thresholded, specks dropped.
3. scale: px per mm from the printed grid itself (page.grid_pitch: the 5 mm period that explains the column and row
   profiles of the non-ink dark pixels); without a grid, from the calibration pulse, else the page width.
4. rows: baselines are where the ink covers most columns within +-0.7 mm (a trace sits on its isoelectric line most
   of the time); short or gappy rows above and below them are text. The row count gives the layout (12 -> 12x1,
   6 -> 6x2 or 3x4 with three rhythm strips, told apart by the panel marks at 1/4 and 3/4, 3-5 -> 3x4, 2 -> 2x1,
   1 -> 1x1) unless one is given.
5. time and amplitude: the 1 mV calibration pulse at a row's start gives the gain (its height) and the paper speed
   (its 0.2 s top), snapped to 5/10/20 mm/mV and 12.5/25/50 mm/s, and t = 0 (1.5 mm after its fall, placed from the
   centres of its rise and fall: sub-pixel); without one, 10 mm/mV, 25 mm/s and t = 0 at the trace's left end (or
   `seconds` before its right end when the page is cut on the left). A row's panels split its span evenly.
6. trace: all rows followed together, column by column (trace_rows); read at every column and brought to `fs`
   through an anti-aliasing filter; mV = (isoelectric y - y) / (gain px).
Rhythm strips under a 3x4 page are named by the panel they repeat (lead names are not read; II, V1, V5 when none
matches); 2x1/1x1 strips are taken to be II, V1 (the renderer's defaults), which `problems` says.

The learned path (method="learned") follows the traces on the mask of a small trace-segmentation network instead of
the thresholded ink map; the network is trained on CPU from the renderer's free labels (src/trace_seg.py), everything
else is the classical path. bench/digitize.py compares the two (reports/digitize_<date>*.md).

Leads whose panel shows no trace (blank, cut off, unreadable) are NaN with confidence 0 and named in `problems`; no
value is ever invented. Confidence = the share of the lead's span where a trace was read (x 0.7 without a grid).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from .config import LEADS, find_input, paths, parse_args
from .page import deskew, find_page, grid_pitch, trace_map
from .render import GAINS, LAYOUTS, PAPERS_MM, SPEEDS
from .signals import write_wfdb
from .trace_seg import default_net_path, fit_trace_net, learned_ink

RHYTHM_GUESS = ("II", "V1", "V5")  # rhythm strips under a 3x4 page, top to bottom (names are not read)
STRIP_GUESS = ("II", "V1")  # leads of 2x1 / 1x1 strip pages
RHYTHM_MIN_DB = 5.0  # a rhythm strip repeats a panel when its reading matches the panel's this well (SNR)
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
METHODS = ("classical", "learned")


@dataclasses.dataclass
class Digitised:
    signal: np.ndarray  # float32 [12, n] mV in LEADS order, NaN where not read
    fs: float  # samples per second of `signal`
    confidence: np.ndarray  # float32 [12] in [0, 1]; 0 for leads not read
    layout: str  # the layout used (render.LAYOUTS names)
    problems: list[str]  # human-readable notes


# ----------------------------------------------------------------------------------------------------------------
# Rows, calibration, traces
# ----------------------------------------------------------------------------------------------------------------
def ink_mask(page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ink strength float32 0..255, boolean trace mask) of a top-down page (page.trace_map, keeping what covers
    up to 3/4 of a column: aligned calibration pulses); specks (salt noise, dust: blobs of at
    most 3 x 3 px) are dropped from the mask."""
    ink = 255 - trace_map(page, column_q=25.0).astype(np.float32)
    vals = ink[ink > 20]
    thr = max(35.0, 0.5 * float(np.percentile(vals, 99))) if vals.size else 35.0
    mask = ink > thr
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    speck = (stats[:, cv2.CC_STAT_WIDTH] <= 3) & (stats[:, cv2.CC_STAT_HEIGHT] <= 3)
    speck[0] = False
    return ink, mask & ~speck[lab]


def find_baselines(mask: np.ndarray, ppm: float) -> np.ndarray:
    """y (px, sub-pixel) of each trace row's isoelectric line: peaks of the share of columns with ink within
    +-0.7 mm."""
    from scipy.signal import find_peaks
    k = max(1, int(round(0.7 * ppm)))
    cov = cv2.dilate(mask.astype(np.uint8), np.ones((2 * k + 1, 1), np.uint8)).mean(1).astype(np.float64)
    cov = cv2.GaussianBlur(cov.reshape(-1, 1), (0, 0), max(0.5, 0.4 * ppm)).ravel()
    if cov.max() <= 0:
        return np.zeros(0)
    peaks, _ = find_peaks(cov, height=0.45 * cov.max(), distance=max(2, int(7 * ppm)), prominence=0.15 * cov.max())
    out = []
    for p in peaks:
        if 0 < p < len(cov) - 1:
            a, b, c = cov[p - 1], cov[p], cov[p + 1]
            den = a - 2 * b + c
            out.append(p + (0.5 * (a - c) / den if abs(den) > 1e-12 else 0.0))
        else:
            out.append(float(p))
    return np.array(out)


def _row_extent(mask: np.ndarray, base: float, ppm: float) -> tuple[int, int, float] | None:
    """First and last column of the longest run of columns with ink near the baseline (gaps < 12 mm bridged: a
    calibration pulse's top leaves the band), and the share of its columns with ink: ~1 for a trace, well below for
    a line of text (gaps between letters and words)."""
    h = mask.shape[0]
    y0, y1 = max(0, int(base - 1.5 * ppm)), min(h, int(base + 1.5 * ppm) + 1)
    cols = np.flatnonzero(mask[y0:y1].any(0))
    if cols.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(cols) > 12 * ppm)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, len(cols) - 1]
    i = int(np.argmax(cols[ends] - cols[starts]))
    a, b = int(cols[starts[i]]), int(cols[ends[i]])
    return a, b, (ends[i] - starts[i] + 1) / (b - a + 1)


def calibration(mask: np.ndarray, base: float, xa: int, ppm: float) -> tuple[float, float, float, float] | None:
    """(gain mm/mV, speed mm/s, height px, trace start x) from a 1 mV calibration pulse starting at column xa, or None
    if there is none: the pulse's flat top sits gain mm above the baseline for 0.2 s. The trace starts 1.5 mm after
    the pulse's fall (the renderer's pulse: 1 mm foot, rise, 0.2 s top, fall, 1 mm foot, 0.5 mm gap), placed from the
    centres of the rise and the fall, which the pen's width does not bias (the ink's first column it does, and at
    100 Hz a quarter of a sample's misplacement costs several dB on a sharp QRS)."""
    h, w = mask.shape
    y0, y1 = max(0, int(base - 25 * ppm)), max(0, int(base - 2 * ppm))
    x1 = min(w, int(xa + 14 * ppm))
    if y1 - y0 < 2 or x1 - xa < 4:
        return None
    sub = mask[y0:y1, xa:x1]
    has = sub.any(0)
    # the centre of the ink run nearest above the baseline: higher up may be the row above's trace (12 rows overlap)
    low = y1 - 1 - np.argmax(sub[::-1], axis=0)
    top = np.full(sub.shape[1], np.nan)
    for i in np.flatnonzero(has):
        j = low[i] - y0
        while j > 0 and sub[j - 1, i]:
            j -= 1
        top[i] = (j + y0 + low[i]) / 2
    probe = top[int(1.4 * ppm): int(3.0 * ppm) + 1]
    if probe.size == 0 or np.isnan(probe).mean() > 0.3:
        return None
    level = float(np.nanmedian(probe))
    if np.mean(np.abs(probe - level) <= max(1.5, 0.5 * ppm)) < 0.7:  # flat (the rise may reach into the probe)
        return None
    # the pulse stands on its own foot (its first 0.6 mm), not on the row's coverage peak, which blur can shift
    foot = mask[max(0, int(base - 2 * ppm)): int(base + 2 * ppm) + 1, xa: xa + max(1, int(0.6 * ppm))]
    rows_on = np.flatnonzero(foot.any(1))
    if rows_on.size:
        base = max(0, int(base - 2 * ppm)) + float(np.median(rows_on))
    height = (base - level) / ppm
    on = np.abs(np.nan_to_num(top, nan=-1e9) - level) <= max(1.5, 0.5 * ppm)
    i0 = int(1.4 * ppm) + int(np.argmax(on[int(1.4 * ppm): int(3.0 * ppm) + 1]))
    hole = max(2, int(0.6 * ppm))  # a broken top (noise, JPEG) still counts as one
    i1 = i0
    for k in np.flatnonzero(on[i0:]) + i0:
        if k - i1 > hole:
            break
        i1 = k
    j0 = i0
    while j0 > 0 and on[j0 - 1]:
        j0 -= 1
    top_mm = (i1 + 1 - j0) / ppm
    gain = min(GAINS, key=lambda g: abs(math.log(g / height)))
    speed = min(SPEEDS, key=lambda s: abs(math.log(0.2 * s / max(top_mm, 0.1))))
    if abs(math.log(gain / height)) > 0.25 or abs(math.log(0.2 * speed / max(top_mm, 0.1))) > 0.35:
        return None
    # the middle third of the rise and of the fall: their ink's mean column is where they stand
    mid = mask[int(round(level + (base - level) / 3)): int(round(base - (base - level) / 3)) + 1]
    edges = []
    for c in (xa + j0, xa + i1):
        c0, c1 = max(0, int(c - ppm)), min(w, int(c + ppm) + 1)
        wgt = mid[:, c0:c1].sum(0).astype(np.float64)
        if wgt.sum() == 0:
            return None
        edges.append(c0 + float((wgt * np.arange(c1 - c0)).sum() / wgt.sum()))
    return gain, speed, base - level, (edges[0] + edges[1]) / 2 + (1.5 + 0.1 * speed) * ppm


def trace_rows(ink: np.ndarray, mask: np.ndarray, bases, up: float, down: float, x0: int, x1: int,
               ppm: float) -> list[np.ndarray]:
    """y (page px) of each row's trace in columns x0..x1 (NaN where none is read), all rows followed together.

    Per row and column, the ink run nearest the row's previous reading (within `up` above and `down` below its
    baseline); after a gap (a blank panel) the trace is picked up again near the baseline only. Big complexes of
    neighbouring rows reach into a row: a run that also holds another row's previous reading, deeper inside it than
    this row's (the stroke is the other row's and merely touches this trace), is a gap for this row, not a reading. The reading is the run's ink-weighted centre, except on steep strokes (the midpoint of where the run
    overlaps its neighbours' runs: where the curve crosses the column's edges) and at tips (the run's end, less half
    the pen's width: the sample at a peak is its tip, not the run's middle).
    """
    h = mask.shape[0]
    n = x1 - x0 + 1
    y0 = max(0, int(math.floor(min(bases) - up)))
    y1 = min(h, int(math.ceil(max(bases) + down)) + 1)
    m = mask[y0:y1, x0:x1 + 1]
    wgt = ink[y0:y1, x0:x1 + 1]
    k = len(bases)
    out, tops, bots = np.full((k, n), np.nan), np.full((k, n), np.nan), np.full((k, n), np.nan)
    if n <= 0 or m.shape[0] == 0:
        return list(out)
    d = np.diff(np.vstack([np.zeros((1, n), bool), m, np.zeros((1, n), bool)]).astype(np.int8), axis=0)
    sx, sy = np.nonzero(d.T == 1)  # run starts, sorted by column
    ex, ey = np.nonzero(d.T == -1)  # run ends (exclusive)
    split = np.searchsorted(sx, np.arange(1, n))
    starts, ends = np.split(sy, split), np.split(ey, split)
    home = np.asarray(bases, np.float64) - y0
    lo, hi = home - up, home + down
    prev, lost = home.copy(), np.full(k, n)
    max_jump = max(3.0, 0.4 * (up + down))
    thick = []
    for i in range(n):
        s, e = starts[i], ends[i]
        lost += 1
        prev = np.where(lost > ppm, home, prev)
        if len(s) == 0:
            continue
        pick = np.full(k, -1)
        for r in range(k):
            dist = np.maximum(0, np.maximum(s - prev[r], prev[r] - (e - 1)))
            dist = np.where((e - 1 >= lo[r]) & (s <= hi[r]), dist, np.inf)
            j = int(np.argmin(dist))
            if dist[j] <= (max_jump if lost[r] <= ppm else 0.25 * (up + down) / 1.35):
                pick[r] = j
        for r in range(k):
            j = pick[r]
            if j < 0:
                continue
            a, b = int(s[j]), int(e[j])
            lost[r] = 0
            inner = min(abs(prev[r] - a), abs(b - 1 - prev[r]))  # how deep in the run this row's reading was
            if any(pick[q] == j and a - 1 <= prev[q] <= b and min(prev[q] - a, b - 1 - prev[q]) > inner
                   for q in range(k) if q != r):
                continue  # the run is another row's stroke, deeper in it, running into this trace
            ww = wgt[max(0, a - 1): min(m.shape[0], b + 1), i]
            ys = np.arange(max(0, a - 1), min(m.shape[0], b + 1))
            out[r, i] = float((ww * ys).sum() / max(ww.sum(), 1e-6))
            tops[r, i], bots[r, i] = a, b - 1
            if b - a <= 3 * ppm:
                thick.append(b - a)
        prev = np.where(np.isfinite(out[:, i]), out[:, i], prev)
    half = (float(np.median(thick)) if thick else 1.0) / 2
    return [_refine(out[r], tops[r], bots[r], half) + y0 for r in range(k)]


def _refine(out: np.ndarray, tops: np.ndarray, bots: np.ndarray, half: float) -> np.ndarray:
    """trace_rows' readings on steep strokes and at tips (see there)."""
    t_prev, t_next = np.r_[np.nan, tops[:-1]], np.r_[tops[1:], np.nan]
    b_prev, b_next = np.r_[np.nan, bots[:-1]], np.r_[bots[1:], np.nan]
    tall = (bots - tops) > 4 * half + 2
    # a tip: the run's end is the furthest within the pen's width either side (a thick pen flattens a sharp tip
    # over a few columns, all of which lie on it)
    r = max(1, int(round(half)))
    t_min = -cv2.dilate(-np.nan_to_num(tops, nan=1e6).reshape(1, -1).astype(np.float32), np.ones((1, 2 * r + 1))).ravel()
    b_max = cv2.dilate(np.nan_to_num(bots, nan=-1e6).reshape(1, -1).astype(np.float32), np.ones((1, 2 * r + 1))).ravel()
    peak_up = tall & (tops <= t_min + 0.5)
    peak_dn = tall & (bots >= b_max - 0.5)
    # a steep stroke: the curve crosses a column boundary where the two columns' runs overlap, and the column's
    # centre halfway between its two boundary crossings
    lo_l, hi_l = np.fmax(tops, t_prev), np.fmin(bots, b_prev)
    lo_r, hi_r = np.fmax(tops, t_next), np.fmin(bots, b_next)
    cross = 0.25 * (lo_l + hi_l + lo_r + hi_r)
    out = np.where(tall & np.isfinite(cross) & (hi_l >= lo_l) & (hi_r >= lo_r), cross, out)
    out = np.where(peak_up, tops + half, out)
    return np.where(peak_dn & ~peak_up, bots - half, out)


def _mode(y: np.ndarray, ppm: float) -> float:
    """The most common y of a row's trace (its isoelectric line), to 0.1 px."""
    y = y[np.isfinite(y)]
    if y.size == 0:
        return float("nan")
    lo = np.floor(y.min())
    hist = np.bincount(np.round((y - lo) * 10).astype(int)).astype(np.float64)
    hist = cv2.GaussianBlur(hist.reshape(-1, 1), (0, 0), max(1.0, 2 * ppm)).ravel()
    return float(lo + np.argmax(hist) / 10)


# ----------------------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------------------
def layout_for_rows(n_rows: int) -> str | None:
    return {12: "12x1", 6: "6x2", 3: "3x4", 4: "3x4", 5: "3x4", 2: "2x1", 1: "1x1"}.get(n_rows)


def row_panels(layout: str, n_rows: int) -> list[list[str]]:
    """Leads of each row's panels, left to right (rows beyond those the layout has are dropped)."""
    if layout == "3x4":
        rows = [[LEADS[3 * j + r] for j in range(4)] for r in range(3)] + [[lead] for lead in RHYTHM_GUESS]
    elif layout == "6x2":
        rows = [[LEADS[r], LEADS[r + 6]] for r in range(6)]
    elif layout == "12x1":
        rows = [[lead] for lead in LEADS]
    else:
        rows = [[lead] for lead in STRIP_GUESS[:int(layout[0])]]
    return rows[:n_rows]


# ----------------------------------------------------------------------------------------------------------------
# The classical digitiser
# ----------------------------------------------------------------------------------------------------------------
def row_signal(y: np.ndarray, xcol: np.ndarray, x_t: np.ndarray, base_guess: float, px_per_mv: float,
               ppm: float) -> np.ndarray:
    """A row's trace y (page px per column xcol) as mV at the output sample positions x_t (evenly spaced): 0 mV on
    the row's most common y (its isoelectric line), NaN off the trace's ends and across gaps longer than 2 mm.

    The trace is read at every column or finer and brought to the output rate through an anti-aliasing filter, as a
    record at that rate is made from a faster one: a sample is not the ink at one point (a QRS narrower than a
    sample would otherwise land on it or between samples by chance).
    """
    from scipy.signal import resample_poly
    ok = np.isfinite(y)
    out = np.full(len(x_t), np.nan)
    if ok.sum() < 2 or len(x_t) < 2:
        return out
    base = _mode(y, ppm)
    base = base if np.isfinite(base) else base_guess
    xv, yv = xcol[ok], y[ok]
    step = x_t[1] - x_t[0]
    k = max(1, int(np.ceil(step)))  # fine samples per output sample: at least one per column
    x_f = x_t[0] + np.arange(len(x_t) * k) * step / k
    j = np.clip(np.searchsorted(xv, x_f), 1, len(xv) - 1)
    gap = np.minimum(np.abs(xv[j] - x_f), np.abs(xv[j - 1] - x_f))
    inside = (x_f >= xcol[0]) & (x_f <= xcol[-1]) & (gap <= 2 * ppm)
    if not inside.any():
        return out
    fine = (base - np.interp(x_f, xv, yv)) / px_per_mv  # flat beyond the ends, so the filter sees no step there
    coarse = resample_poly(fine, 1, k) if k > 1 else fine
    keep = inside[::k]
    out[keep] = coarse[:len(out)][keep]
    return out


def panel_window(n: int, fs: float, span_s: float, ncol: int, j: int) -> np.ndarray:
    """Which of n output samples fall in panel j of a row of ncol panels spanning span_s seconds."""
    t = np.arange(n) / fs
    return (t >= j * span_s / ncol) & (t < (j + 1) * span_s / ncol)


def rhythm_match(rows: list[np.ndarray], r: int, fs: float, span_s: float) -> tuple[str, float]:
    """Which lead the rhythm strip in row r (under a 3x4 page: rows 0-2 hold the panels) is: the panel whose stretch
    it repeats best, as the SNR (dB) of the strip's reading against the panel's over the panel's samples, offset
    removed; (lead, SNR). A correlation would confuse II with aVF, which differ mostly in size; aVF is often II's
    near copy all the same, so the usual rhythm leads (RHYTHM_GUESS) win ties within 3 dB."""
    best = ("", -np.inf)
    for pr in range(3):
        for j in range(4):
            win = panel_window(len(rows[r]), fs, span_s, 4, j)
            a, b = rows[r][win], rows[pr][win]
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() < 0.5 * win.sum() or ok.sum() < 10:
                continue
            e = (a[ok] - b[ok]) - np.mean(a[ok] - b[ok])
            snr = 10 * np.log10(np.sum(b[ok] ** 2) / max(np.sum(e ** 2), 1e-12))
            lead = LEADS[3 * j + pr]
            if snr + (3.0 if lead in RHYTHM_GUESS else 0.0) > best[1] + (3.0 if best[0] in RHYTHM_GUESS else 0.0):
                best = (lead, float(snr))
    return best


def boundary_marks(mask: np.ndarray, bases, xs, ppm: float) -> float:
    """Share of (row, x) places that show a panel's start: a separator tick (a column inked over the 4.6 mm around
    the baseline) or a lead name (ink in the box 0.8-4 mm right of x, 3.8-7 mm above the baseline)."""
    h, w = mask.shape
    hits = []
    for b in bases:
        for x in xs:
            x = int(round(x))
            t0, t1 = max(0, int(b - 2.3 * ppm)), min(h, int(b + 2.3 * ppm) + 1)
            c0, c1 = max(0, x - int(0.6 * ppm) - 1), min(w, x + int(0.6 * ppm) + 2)
            tick = c1 > c0 and t1 > t0 and float(mask[t0:t1, c0:c1].mean(0).max()) >= 0.9
            l0, l1 = max(0, int(b - 7 * ppm)), max(0, int(b - 3.8 * ppm))
            k0, k1 = max(0, x + int(0.8 * ppm)), min(w, x + int(4 * ppm) + 1)
            name = l1 > l0 and k1 > k0 and float(mask[l0:l1, k0:k1].mean()) >= 0.04
            hits.append(tick or name)
    return float(np.mean(hits)) if hits else 0.0


def digitize_image(img: np.ndarray, layout: str = "auto", fs: float = 100.0, seconds: float = 10.0,
                   method: str = "classical", net: str = "") -> Digitised:
    """RGB uint8 image -> Digitised (see the module docstring). `layout`: auto or one of render.LAYOUTS. `method`
    learned follows the traces on the trace network's mask (checkpoint `net`, default default_net_path()) instead of
    the thresholded ink map; grid, rows and calibration are found classically either way."""
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected auto or one of {LAYOUTS}")
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {METHODS}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got {img.dtype} {img.shape}")
    n = int(round(seconds * fs))
    problems: list[str] = []
    signal = np.full((len(LEADS), n), np.nan, np.float32)
    conf = np.zeros(len(LEADS), np.float32)
    got = np.zeros(len(LEADS), np.float32)

    def give_up(why: str, used: str) -> Digitised:
        problems.append(why)
        return Digitised(signal, float(fs), conf, used, problems)

    page, found = find_page(img, problems)
    page, angle = deskew(page)
    if angle:
        problems.append(f"tilt {angle:+.2f} deg corrected")
    ink, mask = ink_mask(page)
    ppm, strength = grid_pitch(page, mask)
    trust = 1.0
    if ppm is None:
        pw, ph = min(PAPERS_MM.values(), key=lambda s: abs(math.log(s[0] / s[1] * page.shape[0] / page.shape[1])))
        ppm = page.shape[1] / pw
        trust = 0.7
        problems.append(f"no grid found: scale {ppm:.2f} px/mm from the page width")
    bases = find_baselines(mask, ppm)
    if len(bases) == 0:
        return give_up("no trace rows found", "3x4" if layout == "auto" else layout)
    ext = [_row_extent(mask, b, ppm) for b in bases]
    longest = max((e[1] - e[0] for e in ext if e is not None), default=0)
    short = [e is None or e[1] - e[0] < 0.6 * longest or (e[1] - e[0] < 0.85 * longest and e[2] < 0.85) for e in ext]
    # header and footer text lines are short or gappy rows above and below the traces (a row inside may be short:
    # blank panels)
    lo, hi = 0, len(bases)
    while lo < hi and short[lo]:
        lo += 1
    while hi > lo and short[hi - 1]:
        hi -= 1
    bases, ext = bases[lo:hi], ext[lo:hi]
    if len(bases) == 0:
        return give_up("no trace rows found", "3x4" if layout == "auto" else layout)
    used = layout
    if layout == "auto":
        used = layout_for_rows(len(bases))
        if used is None:
            return give_up(f"{len(bases)} trace rows: no known layout has that many", "3x4")
    panels = row_panels(used, len(bases))
    if len(bases) != len(panels):
        problems.append(f"{len(bases)} trace rows found, layout {used} has {len(panels)}: read the first")
        bases, ext = bases[:len(panels)], ext[:len(panels)]
    if used in ("2x1", "1x1"):
        problems.append(f"strips read as {', '.join(STRIP_GUESS[:len(bases)])} (lead names are not read)")

    xa = int(np.median([e[0] for e in ext if e is not None]))
    xe = int(np.median([e[1] for e in ext if e is not None]))
    cals = [c for b, e in zip(bases, ext) if e is not None and (c := calibration(mask, b, e[0], ppm)) is not None]
    if 2 * len(cals) > sum(e is not None for e in ext):  # most rows agree there is one (not a cut-off remnant)
        gain = float(np.median([c[0] for c in cals]))
        speed = float(np.median([c[1] for c in cals]))
        if trust < 1:  # no grid: the pulse (its gain snapped at the page width's scale) is a better ruler
            ppm = float(np.median([c[2] for c in cals])) / gain
            # finer still: a page showing `seconds` from the pulse's start to the trace's end, if it agrees within 6 %
            span = (xe - xa) / ((0.2 * speed + 2.5) + seconds * speed)
            how = "the trace's length" if abs(math.log(span / ppm)) < 0.06 else "the calibration pulse"
            ppm = span if abs(math.log(span / ppm)) < 0.06 else ppm
            problems.append(f"scale {ppm:.2f} px/mm from {how} ({gain:g} mm/mV, {speed:g} mm/s)")
        xs = float(np.median([c[3] for c in cals]))
    else:
        gain, speed = 10.0, 25.0
        problems.append("no calibration pulse: assumed 10 mm/mV, 25 mm/s")
        # the trace's left end, unless the page was cut on the left: then it ends `seconds` after its start
        xs = float(xa) if xe - xa < 0.9 * seconds * speed * ppm else xe - seconds * speed * ppm
    span_px = xe - xs
    if span_px < 10 * ppm:
        return give_up("trace rows too short to read", used)
    spacing = float(np.median(np.diff(bases))) if len(bases) > 1 else 0.4 * page.shape[0]
    x_t = xs + np.arange(n) / fs * speed * ppm
    x0 = max(0, int(xs))
    if method == "learned":
        ink, mask = learned_ink(page, net or str(default_net_path()))
    ys = trace_rows(ink, mask, bases, 0.75 * spacing, 0.6 * spacing, x0, xe, ppm)
    rows = [row_signal(y, np.arange(x0, xe + 1, dtype=np.float64), x_t, b, gain * ppm, ppm) for y, b in zip(ys, bases)]
    span_s = span_px / (speed * ppm)
    if layout == "auto" and len(bases) == 6:  # 6x2, or 3x4 with three rhythm strips?
        top = bases[:3]
        quarter = boundary_marks(mask, top, [xs + k * span_px / 8 for k in (2, 6)], ppm)
        half = boundary_marks(mask, top, [xs + span_px / 2], ppm)
        control = boundary_marks(mask, top, [xs + k * span_px / 8 for k in (1, 3, 5, 7)], ppm)
        if quarter - control >= 0.5 and quarter >= 0.7 * half:  # panel marks (names, ticks) at 1/4, 1/2 and 3/4
            used = "3x4"
        elif half - control >= 0.5:  # ... at 1/2 only
            used = "6x2"
        else:  # no marks: 6x2 (the likelier page) unless rows 4-6 clearly repeat the panels of rows 1-3
            fit = [rhythm_match(rows, r, fs, span_s)[1] for r in range(3, 6)]
            used = "3x4" if min(fit) >= RHYTHM_MIN_DB + 3 else "6x2"
        panels = row_panels(used, len(bases))
    if used == "3x4" and len(bases) > 3:
        named = []
        for r in range(3, len(bases)):
            lead, corr = rhythm_match(rows, r, fs, span_s)
            if corr < RHYTHM_MIN_DB or lead in named:
                lead = next(g for g in RHYTHM_GUESS if g not in named)
                problems.append(f"rhythm strip {r - 2} read as {lead} (no panel matches it; names are not read)")
            named.append(lead)
            panels[r] = [lead]
    for sig_r, leads in zip(rows, panels):
        for j, lead in enumerate(leads):
            li = LEADS.index(lead)
            win = panel_window(n, fs, span_s, len(leads), j)
            frac = float(np.isfinite(sig_r[win]).mean()) if win.any() else 0.0
            if frac < 0.5:
                continue
            sig = np.where(win, sig_r, np.nan).astype(np.float32)
            # read twice (a rhythm strip and its panel): the longer read, the other filling its gaps
            longer = np.isfinite(sig).sum() > np.isfinite(signal[li]).sum()
            first, second = (sig, signal[li]) if longer else (signal[li], sig)
            signal[li] = np.where(np.isfinite(first), first, second)
            got[li] = max(got[li], frac * trust)
    conf[:] = np.clip(got, 0, 1)
    missing = [lead for lead, c in zip(LEADS, conf) if c == 0 and any(lead in p for p in panels)]
    if missing:
        problems.append(f"no trace read for {', '.join(missing)}: left NaN")
    return Digitised(signal, float(fs), conf, used, problems)


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def digitize_file(path, **kw) -> Digitised:
    """digitize_image of an image file; ImageReadError naming the file when it cannot be read."""
    from .utils import imread
    return digitize_image(imread(path), **kw)


def write_digitised(out_dir, id: str, d: Digitised) -> None:
    """<out_dir>/<id>.hea + .dat (signals.write_wfdb: atomic, NaN kept as WFDB's missing sample), with the layout, the
    per-lead confidences and the problems in the header's comments."""
    comments = [f"layout: {d.layout}", "confidence: " + " ".join(f"{c:.3f}" for c in d.confidence)]
    comments += [f"problem: {p}" for p in d.problems]
    write_wfdb(Path(out_dir), id, np.clip(np.asarray(d.signal, np.float64), -32.0, 32.0), d.fs, comments)


def read_digitised(out_dir, id: str) -> tuple[np.ndarray, float]:
    """(signal [12, n] float32 mV with NaN where not read, fs) of a record written by write_digitised."""
    import wfdb
    rec = wfdb.rdrecord(str(Path(out_dir) / id))
    return rec.p_signal.T.astype(np.float32), float(rec.fs)


def read_confidence(out_dir, id: str) -> np.ndarray:
    """The per-lead confidences write_digitised kept in the header."""
    import wfdb
    for c in wfdb.rdheader(str(Path(out_dir) / id)).comments:
        if c.startswith("confidence:"):
            return np.array(c.split(":", 1)[1].split(), np.float32)
    raise ValueError(f"{Path(out_dir) / id}.hea: no confidence line")


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DigitizeConfig:
    """Digitise every ECG image of a folder into WFDB records (mV) with per-lead confidences."""
    images: str = ""  # folder of images (.png/.jpg, searched recursively), e.g. a competition split folder
    out: str = ""  # output folder for <id>.hea/.dat and digitised.csv (default: input/digitised/<images folder name>)
    layout: str = "auto"  # auto | 3x4 | 6x2 | 12x1 | 2x1 | 1x1
    fs: float = 100.0  # output samples per second
    seconds: float = 10.0  # output length, s (t = 0 at the page's left trace edge)
    method: str = "classical"  # classical | learned (the trace network's mask; train it with --fit)
    net: str = ""  # trace network checkpoint (default outputs/digitize/trace_net.pt)
    fit: bool = False  # train the trace network on pages the kit draws, save it to --net, and stop
    fit_pages: int = 24  # pages drawn for --fit
    fit_steps: int = 400  # optimiser steps for --fit
    workers: int = 0  # processes (0 = one per core, 1 = inline)


def find_images(folder: Path) -> list[Path]:
    """Images under a folder (recursive), masks written beside them left out, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith("_mask"))


class _Job:
    def __init__(self, cfg: DigitizeConfig, out: Path):
        self.cfg, self.out = cfg, out

    def __call__(self, path: Path) -> dict:
        cfg = self.cfg
        try:
            d = digitize_file(path, layout=cfg.layout, fs=cfg.fs, seconds=cfg.seconds, method=cfg.method,
                              net=cfg.net)
        except (OSError, ValueError, cv2.error) as e:  # utils.ImageReadError is an OSError
            return {"id": path.stem, "status": "error", "layout": "", "problems": str(e),
                    **{lead: 0.0 for lead in LEADS}}
        write_digitised(self.out, path.stem, d)
        return {"id": path.stem, "status": "ok", "layout": d.layout, "problems": "; ".join(d.problems),
                **{lead: round(float(c), 3) for lead, c in zip(LEADS, d.confidence)}}


def main(argv=None) -> None:
    import pandas as pd
    from .utils import parallel_map, write_csv
    cfg = parse_args(DigitizeConfig, argv)
    if cfg.fit:
        out = fit_trace_net(cfg.net or default_net_path(), pages=cfg.fit_pages, steps=cfg.fit_steps)
        print(f"[digitize] trace network -> {out}")
        return
    try:  # a path, or a dataset slug under the input roots (a Kaggle mount such as <competition>/train)
        src = find_input(cfg.images)
    except FileNotFoundError:
        src = Path(cfg.images)
    if not cfg.images or not src.is_dir():
        raise SystemExit(f"--images={cfg.images}: not a folder; pass a folder of ECG images (.png/.jpg), e.g. "
                         f"--images=input/ecg-synth-comp/train")
    if cfg.layout != "auto" and cfg.layout not in LAYOUTS:
        raise SystemExit(f"--layout must be auto or one of {', '.join(LAYOUTS)}")
    if cfg.method not in METHODS:
        raise SystemExit(f"--method must be one of {', '.join(METHODS)}")
    if cfg.method == "learned" and not Path(cfg.net or default_net_path()).exists():
        raise SystemExit(f"{cfg.net or default_net_path()}: no trace network; train one with "
                         f"`python -m src.digitize --fit` or use --method=classical")
    if cfg.fs <= 0 or cfg.seconds <= 0:
        raise SystemExit("--fs and --seconds must be positive")
    images = find_images(src)
    if not images:
        raise SystemExit(f"--images={cfg.images}: no .png/.jpg images in it; pass the folder that holds them")
    out = Path(cfg.out) if cfg.out else paths().input / "digitised" / src.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    table = out / "digitised.csv"
    old = pd.read_csv(table, dtype={"id": str}) if table.exists() else pd.DataFrame(columns=["id"])
    todo = [p for p in images if not (out / f"{p.stem}.hea").exists()]
    rows = list(parallel_map(_Job(cfg, out), todo, workers=cfg.workers, desc="digitise"))
    new = pd.DataFrame(rows, columns=["id", "status", "layout", *LEADS, "problems"])
    done = {p.stem for p in images} - {r["id"] for r in rows}
    kept = old[old["id"].isin(done)] if len(old) else old
    df = pd.concat([kept, new], ignore_index=True).sort_values("id").reset_index(drop=True)
    write_csv(table, df)
    bad = new[new["status"] != "ok"]
    for _, r in bad.iterrows():
        print(f"[digitize] skipped {r['id']}: {r['problems']}")
    print(f"[digitize] {len(new) - len(bad)} digitised, {len(bad)} skipped, {len(images) - len(todo)} already done "
          f"-> {out} (<id>.hea/.dat, digitised.csv)")


if __name__ == "__main__":
    main()
