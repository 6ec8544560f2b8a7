"""ECG page drawing: a 12-lead signal (mV) becomes a printed ECG page (a scan-like image), with exact free labels.

    img, meta = render_ecg(signal, fs, RenderParams(layout="6x2", dpi=150), rng)    # explicit params
    img, meta = render_ecg(signal, fs, sample_params(rng, "scan"), rng)             # sampled, diverse params

Sampled pages at a requested size, photographs of them (src/photo.py) and the command line are in src/compose.py.

Geometry is exact: the page is laid out in millimetres and drawn at px_per_mm = dpi / 25.4 (no rounding), grid lines
at float positions with box-filter anti-aliasing, traces with sub-pixel cv2.polylines. Pixel coordinates follow
OpenCV's convention (integer = pixel centre). `meta` (JSON-serialisable) holds, for every drawn lead, the pixel (x, y)
of every plotted sample (y = None where the sample is NaN and left undrawn), so the image is its own label.
Geometric artefacts (rotation, crop; the camera in src/photo.py; resizing) move every coordinate in `meta` with the
pixels, through pixels.transform_meta.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from .config import LEADS
from .pixels import add_noise, affine_fn, catmull_rom, finalize_meta, jpeg, multiply_gain, pick, refresh_boxes, \
    transform_meta

PAPERS_MM = {"letter": (279.4, 215.9), "a4": (297.0, 210.0)}  # landscape width, height
LAYOUTS = ("3x4", "6x2", "12x1", "2x1", "1x1")
SPEEDS = (12.5, 25.0, 50.0)
GAINS = (5.0, 10.0, 20.0)
# grid presets: (minor line RGB, major line RGB)
GRIDS = {
    "red": ((244, 188, 188), (226, 112, 112)), "pink": ((249, 208, 218), (238, 150, 172)),
    "orange": ((250, 208, 168), (238, 150, 88)), "green": ((194, 228, 194), (118, 186, 122)),
    "blue": ((192, 212, 240), (118, 158, 218)), "grey": ((212, 212, 212), (162, 162, 162)),
    "bw": ((200, 200, 200), (120, 120, 120)), "none": None,
}
# Applied in this order; geometric ones (rotate, crop) update the metadata.
ARTEFACTS = ("stamp", "scribble", "crease", "wrinkle", "color_temp", "rotate", "crop", "blur", "noise", "salt", "jpeg")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX)


@dataclasses.dataclass
class RenderParams:
    layout: str = "3x4"  # 3x4 | 6x2 | 12x1 | 2x1 | 1x1
    rhythm: tuple[str, ...] = ("II",)  # full-length rhythm strips under a 3x4 page (0-3 leads)
    strip_leads: tuple[str, ...] = ("II", "V1")  # leads of the 2x1 / 1x1 layouts
    paper: str = "letter"  # letter | a4, landscape
    dpi: float = 200.0  # px per inch; px_per_mm = dpi / 25.4 exactly
    speed: float = 25.0  # paper speed, mm/s
    gain: float = 10.0  # amplitude scale, mm/mV
    seconds: float = 0.0  # page span in s; 0 = as much as fits the paper (and the signal)
    t0: float = 0.0  # where in the signal the page starts, s
    grid: str = "red"  # red | pink | orange | green | blue | grey | bw | none
    grid_minor: str = "lines"  # lines | dots (some printers dot the 1 mm grid)
    paper_rgb: tuple[int, int, int] = (252, 251, 248)  # paper tint
    trace_rgb: tuple[int, int, int] = (18, 18, 22)  # ink of the traces
    trace_mm: float = 0.25  # trace line width, mm
    header: bool = True  # fake demographics + device text above the grid, speed/gain line below
    lead_names: bool = True  # print lead names
    calibration: bool = True  # 1 mV calibration pulse at the start of each row
    separators: bool = True  # column separator ticks
    font: int = 0  # index into FONTS (Hershey, built into OpenCV)
    artefacts: dict = dataclasses.field(default_factory=dict)  # name -> [probability, strength 0..1]

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: expected one of {LAYOUTS}")
        if self.paper not in PAPERS_MM:
            raise ValueError(f"paper {self.paper!r}: expected one of {tuple(PAPERS_MM)}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid {self.grid!r}: expected one of {tuple(GRIDS)}")
        bad = set(self.artefacts) - set(ARTEFACTS)
        if bad:
            raise ValueError(f"unknown artefacts {sorted(bad)}; known: {ARTEFACTS}")
        for lead in (*self.rhythm, *self.strip_leads):
            if lead not in LEADS:
                raise ValueError(f"lead {lead!r} not in {LEADS}")
        if self.dpi <= 0 or self.speed <= 0 or self.gain <= 0:
            raise ValueError("dpi, speed and gain must be positive")
        self.rhythm, self.strip_leads = tuple(self.rhythm), tuple(self.strip_leads)
        self.paper_rgb, self.trace_rgb = tuple(map(int, self.paper_rgb)), tuple(map(int, self.trace_rgb))


# ----------------------------------------------------------------------------------------------------------------
# Parameter sampling: the diversity of Stage I and of the photo stand-in
# ----------------------------------------------------------------------------------------------------------------
def sample_params(rng: np.random.Generator, style: str = "scan") -> RenderParams:
    """Random, diverse page parameters. `photo` pages get paper-level artefacts only (the camera adds the rest)."""
    layout = pick(rng, LAYOUTS, [0.6, 0.16, 0.14, 0.05, 0.05])
    rhythm = pick(rng, [(), ("II",), ("II", "V1"), ("II", "V1", "V5"), ("V1",)], [0.2, 0.5, 0.1, 0.1, 0.1])
    strips = tuple(str(v) for v in rng.choice(np.array(LEADS), 2, replace=False)) if rng.random() < 0.5 \
        else ("II", "V1")
    grid = pick(rng, tuple(GRIDS), [0.34, 0.14, 0.1, 0.05, 0.05, 0.1, 0.17, 0.05])
    bw = grid == "bw"
    paper = (255, 255, 255) if bw else tuple(int(v) for v in 255 - rng.uniform(0, 1) * np.array([3, 5, 12]))
    ink = (15, 15, 15) if bw else pick(rng, [(18, 18, 22), (10, 20, 70), (40, 40, 40), (15, 60, 25)],
                                        [0.75, 0.12, 0.08, 0.05])
    if style == "scan":
        probs = dict(stamp=0.15, scribble=0.2, crease=0.3, wrinkle=0.3, color_temp=0.4, rotate=0.5, crop=0.3,
                     blur=0.3, noise=0.4, salt=0.1, jpeg=0.4)
    elif style == "photo":  # the camera model does geometry, light, blur, noise and compression
        probs = dict(stamp=0.15, scribble=0.2, crease=0.35, wrinkle=0.4)
    else:
        raise ValueError(f"style {style!r}: expected scan or photo")
    gain = pick(rng, GAINS, [0.5, 0.5, 0.0] if layout == "12x1" else [0.1, 0.8, 0.1])  # 12 rows: smaller gain
    return RenderParams(
        layout=layout, rhythm=rhythm, strip_leads=strips[:1] if layout == "1x1" else strips,
        paper=pick(rng, ("letter", "a4"), [0.6, 0.4]), dpi=float(pick(rng, (150, 200, 250, 300), [2, 5, 2, 1])),
        speed=pick(rng, SPEEDS, [0.05, 0.87, 0.08]), gain=gain,
        grid=grid, grid_minor="dots" if rng.random() < 0.08 else "lines", paper_rgb=paper, trace_rgb=ink,
        trace_mm=float(rng.uniform(0.15, 0.4)), header=bool(rng.random() < 0.85),
        lead_names=bool(rng.random() < 0.97), calibration=bool(rng.random() < 0.9),
        separators=bool(rng.random() < 0.8), font=int(rng.integers(len(FONTS))),
        artefacts={k: [p, round(float(rng.uniform(0.2, 1.0)), 3)] for k, p in probs.items()})


# ----------------------------------------------------------------------------------------------------------------
# Page layout (millimetres) and the cached grid image
# ----------------------------------------------------------------------------------------------------------------
def page_layout(params: RenderParams, n: int, fs: float, present: set[str]) -> dict:
    """Where everything goes, in mm: grid box, and per row a baseline and its (lead, t_start, t_end) panels."""
    pw, ph = PAPERS_MM[params.paper]
    top, bottom = (30.0, 11.0) if params.header else (12.0, 10.0)
    gw, gh = math.floor((pw - 10) / 5) * 5, math.floor((ph - top - bottom) / 5) * 5
    gx0, gy0 = (pw - gw) / 2, top if params.header else (ph - gh) / 2
    cal_w = 0.2 * params.speed + 4 if params.calibration else 2.0
    tx0 = gx0 + cal_w
    avail = gx0 + gw - 2 - tx0
    have = n / fs - params.t0
    if params.seconds > 0:
        span = params.seconds
        if span > have + 1e-9:
            raise ValueError(f"signal too short: page needs {span:g} s from t0={params.t0:g} s, signal has {n / fs:g} s")
    else:
        span = min(math.floor(avail / params.speed * 2) / 2, have)
        if span <= 0:
            raise ValueError(f"signal too short: {n} samples at {fs:g} Hz leave nothing after t0={params.t0:g} s")
    if span * params.speed > avail + 1e-6:
        raise ValueError(f"{span:g} s at {params.speed:g} mm/s needs {span * params.speed:g} mm; "
                         f"the {params.paper} grid has {avail:g} mm")
    if params.layout == "3x4":
        cols = [LEADS[0:3], LEADS[3:6], LEADS[6:9], LEADS[9:12]]
        rows = [[(c[r], j) for j, c in enumerate(cols)] for r in range(3)] + [[(l, -1)] for l in params.rhythm]
        ncol = 4
    elif params.layout == "6x2":
        rows, ncol = [[(LEADS[r], 0), (LEADS[r + 6], 1)] for r in range(6)], 2
    else:
        leads = LEADS if params.layout == "12x1" else params.strip_leads[:int(params.layout[0])]
        rows, ncol = [[(l, -1)] for l in leads], 1
    t0, seg = params.t0, span / ncol
    row_h = gh / len(rows)
    out_rows = []
    for r, row in enumerate(rows):
        panels = []
        for lead, j in row:
            a, b = (t0, t0 + span) if j < 0 else (t0 + j * seg, t0 + (j + 1) * seg)
            if lead in present:
                panels.append({"lead": lead, "t_a": a, "t_b": b, "rhythm": j < 0 and params.layout == "3x4"})
        out_rows.append({"baseline": gy0 + row_h * (r + 0.62), "top": gy0 + row_h * r, "panels": panels})
    return {"page": (pw, ph), "grid": (gx0, gy0, gx0 + gw, gy0 + gh), "tx0": tx0, "span": span, "seg": seg,
            "ncol": ncol, "rows": out_rows, "row_h": row_h}


def _line_alpha(n: int, positions: np.ndarray, width: float) -> np.ndarray:
    """Coverage (0..1) of pixels 0..n-1 by lines of `width` px centred at float `positions` (box-filter AA)."""
    i = np.arange(n, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(n)
    pos = np.r_[-1e9, positions, 1e9]  # sentinels: no clipping of neighbour indices, no double counting
    k = np.searchsorted(pos, i)
    out = np.zeros(n)
    for kk in (k - 1, k):  # the two lines either side of each pixel centre (pitch > width + 1 px)
        c = pos[kk]
        out += np.clip(np.minimum(i + 0.5, c + width / 2) - np.maximum(i - 0.5, c - width / 2), 0, 1)
    return np.minimum(out, 1)


def _grid_image(wh: tuple[int, int], ppm: float, box_mm: tuple, grid: str, minor_style: str,
                paper_rgb: tuple) -> np.ndarray:
    """Paper + grid. Each pixel row is fully determined by how much horizontal line (minor, major; 16 AA levels
    each) crosses it, so only the few distinct rows are computed and the page is gathered from them: ~1 copy of
    the image, whatever the dpi (no cache needed when every page has its own scale and tint)."""
    w, h = wh
    paper = np.asarray(paper_rgb, np.uint8)
    if GRIDS[grid] is None:
        return np.broadcast_to(paper, (h, w, 3)).copy()
    minor_rgb, major_rgb = GRIDS[grid]
    gx0, gy0, gx1, gy1 = box_mm
    nx, ny = round((gx1 - gx0)), round((gy1 - gy0))
    wmin, wmaj = max(0.6, 0.08 * ppm), max(1.0, 0.16 * ppm)
    xs, ys = (gx0 + np.arange(nx + 1)) * ppm, (gy0 + np.arange(ny + 1)) * ppm
    major_x, major_y = np.arange(nx + 1) % 5 == 0, np.arange(ny + 1) % 5 == 0
    q = lambda a: np.round(np.asarray(a) * 15).astype(np.int32)  # 16 AA levels per line family
    ax_min, ax_maj = _line_alpha(w, xs[~major_x], wmin), _line_alpha(w, xs[major_x], wmaj)
    ay_min, ay_maj = _line_alpha(h, ys[~major_y], wmin), _line_alpha(h, ys[major_y], wmaj)
    # lines exist only inside the grid box (plus the half width of the border lines)
    c0, c1 = max(0, math.floor(gx0 * ppm - wmaj)), min(w, math.ceil(gx1 * ppm + wmaj) + 1)
    r0, r1 = max(0, math.floor(gy0 * ppm - wmaj)), min(h, math.ceil(gy1 * ppm + wmaj) + 1)
    inside = np.zeros(w, bool)
    inside[c0:c1] = True
    # colour of every (major, minor) coverage pair: minor ink over paper, major ink over that
    am, aM = (np.arange(256) % 16) / 15.0, (np.arange(256) // 16) / 15.0
    lut = np.round((np.asarray(paper_rgb) * (1 - am[:, None]) + np.asarray(minor_rgb) * am[:, None]) *
                   (1 - aM[:, None]) + np.asarray(major_rgb) * aM[:, None]).astype(np.uint8)
    qx_min, qx_maj = q(ax_min), q(ax_maj)
    ax_any = np.maximum(ax_min, ax_maj)
    ay_key = np.maximum(ay_min, ay_maj) if minor_style == "dots" else ay_min
    row_key = np.full(h, -1)
    row_key[r0:r1] = q(ay_maj[r0:r1]) * 16 + q(ay_key[r0:r1])
    keys, row_index = np.unique(row_key, return_inverse=True)
    table = np.empty((len(keys), w, 3), np.uint8)
    for i, k in enumerate(keys):
        if k < 0:
            table[i] = paper
            continue
        kM, km = divmod(int(k), 16)
        if minor_style == "dots":  # a dot where two 1 mm lines would cross
            amin = q(np.minimum(1.0, 2.5 * ax_any * km / 15))
        else:
            amin = np.maximum(qx_min, km)
        idx = np.maximum(qx_maj, kM) * 16 + amin
        table[i] = np.where(inside[:, None], lut[idx], paper)
    return table[row_index.ravel()]


# ----------------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------------
def _text(img, s, org, height_px, color, font=0, thickness=None):
    """putText with the cap height in px; returns the text box [x0, y0, x1, y1]."""
    f = FONTS[font]
    scale = height_px / cv2.getTextSize("H", f, 1.0, 1)[0][1]
    th = thickness or max(1, round(height_px / 12))
    (tw, tht), base = cv2.getTextSize(s, f, scale, th)
    cv2.putText(img, s, (int(round(org[0])), int(round(org[1]))), f, scale, color, th, cv2.LINE_AA)
    return [float(org[0]), float(org[1] - tht), float(org[0] + tw), float(org[1] + base)]


def _fake_header(rng) -> tuple[list[str], list[str]]:
    syl = ["an", "bel", "cor", "da", "el", "fi", "gar", "hol", "in", "jo", "ka", "lin", "mar", "no", "ost", "per",
           "ri", "sa", "tor", "ul", "ven", "wil", "yr", "zan"]
    name = lambda k: "".join(rng.choice(syl, k)).capitalize()
    age, sex = int(rng.integers(18, 95)), pick(rng, ("Male", "Female"), [1, 1])
    day = f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(2005, 2025))}"
    left = [f"{name(2).upper()}, {name(2)}", f"ID: {int(rng.integers(1e7, 1e8))}   {age} yr   {sex}",
            f"{day}  {int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}:{int(rng.integers(0, 60)):02d}",
            f"Loc: {int(rng.integers(1, 40))}  Room: {int(rng.integers(1, 600))}"]
    right = [pick(rng, ["Resting 12-lead ECG", "12 Lead; Standard Placement", "ECG report"], [1, 1, 1]),
             f"Device: {pick(rng, ['CardioPrint', 'ECG-KA', 'RhythmWriter', 'Electrocardiograph'], [1, 1, 1, 1])}"
             f" {int(rng.integers(100, 999))}", "Unconfirmed - requires review"]
    return left, right


def _ink_lines(img: np.ndarray, polys: list[np.ndarray], ink, width_px: float) -> None:
    """Anti-aliased polylines of `width_px`, fast: OpenCV's thick AA lines cost ~4 us a segment, so draw 1 px AA
    lines (Wu) into a coverage mask, widen it by a symmetric grey dilation, and blend ink only where covered."""
    h, w = img.shape[:2]
    w8 = -(-w // 8) * 8  # padded to whole 8-byte words: finding ink is then a scan of uint64s
    if not polys:
        return
    cov = np.zeros((h, w8), np.uint8)
    cv2.polylines(cov, [np.round(p * 16).astype(np.int32) for p in polys], False, 255, 1, cv2.LINE_AA, 4)
    if width_px >= 1.6:
        k = 3 if width_px < 3.2 else 5
        shape = cv2.MORPH_CROSS if width_px < 2.4 or (4 <= width_px < 4.6) else cv2.MORPH_ELLIPSE
        cov = cv2.dilate(cov, cv2.getStructuringElement(shape, (k, k)))
    cov[:, w:] = 0
    words = np.flatnonzero(cov.view(np.uint64).ravel())
    pix = (words[:, None] * 8 + np.arange(8)).ravel()
    val = cov.ravel()[pix]
    keep = val > 0
    pix, val = pix[keep], val[keep]
    idx = pix // w8 * w + pix % w8
    # a 1-px Wu line spreads its ink over two pixels: boost coverage so thin traces print as dark as thick ones
    boost = 1.6 if width_px < 1.6 else 1.15
    a = np.minimum(val.astype(np.float32) * (boost / 255), 1)[:, None]
    flat = img.reshape(-1, 3)
    flat[idx] = (flat[idx] * (1 - a) + np.asarray(ink, np.float32) * a + 0.5).astype(np.uint8)


def _draw_page(img, lay, sig, fs, params: RenderParams, rng, ppm: float) -> tuple[list[dict], dict]:
    ink = params.trace_rgb
    text_rgb = (25, 25, 25)
    thick = params.trace_mm * ppm
    gx0, gy0, gx1, gy1 = lay["grid"]
    ylo, yhi = gy0 * ppm, gy1 * ppm
    polys, leads = [], []
    small = 2.6 * ppm  # 2.6 mm cap height for printed labels
    for row in lay["rows"]:
        base = row["baseline"] * ppm
        if params.calibration and row["panels"]:
            x = (gx0 + 1.5) * ppm
            w1, wp, up = 1.0 * ppm, 0.2 * params.speed * ppm, params.gain * ppm
            cal = np.array([[x, base], [x + w1, base], [x + w1, base - up], [x + w1 + wp, base - up],
                            [x + w1 + wp, base], [x + 2 * w1 + wp, base]])
            polys.append(cal)
        for p in row["panels"]:
            li = LEADS.index(p["lead"])
            i_a = max(0, math.ceil(p["t_a"] * fs - 1e-6))
            i_b = min(sig.shape[1] - 1, math.floor(p["t_b"] * fs + 1e-6))
            idx = np.arange(i_a, i_b + 1)
            v = sig[li, i_a:i_b + 1].astype(np.float64)
            x = (lay["tx0"] + (idx / fs - params.t0) * params.speed) * ppm
            y = base - v * params.gain * ppm
            clipped = int(np.sum((y < ylo) | (y > yhi)))
            y = np.clip(y, ylo, yhi)
            ok = np.isfinite(y)
            # split into runs of finite samples: NaN samples are left undrawn
            edges = np.flatnonzero(np.diff(ok.astype(np.int8))) + 1
            for a, b in zip(np.r_[0, edges], np.r_[edges, len(ok)]):
                if ok[a] and b - a >= 1:
                    polys.append(np.stack([x[a:b], y[a:b]], 1) if b - a > 1 else
                                 np.array([[x[a], y[a]], [x[a] + 0.01, y[a]]]))
            name_box = None
            if params.lead_names:
                name_box = _text(img, p["lead"], ((x[0] + 1.0 * ppm), base - 4.0 * ppm), small, text_rgb,
                                 params.font)
            if params.separators and not p["rhythm"] and lay["ncol"] > 1 and p["t_a"] > params.t0 + 1e-9:
                polys.append(np.array([[x[0], base - 2.5 * ppm], [x[0], base + 2.5 * ppm]]))
            leads.append({"name": p["lead"], "rhythm": bool(p["rhythm"]), "t0": float(i_a / fs), "fs": float(fs),
                          "i0": int(i_a), "x": x, "y": np.where(ok, y, base), "undrawn": ~ok,
                          "name_box": name_box,
                          "baseline_px": float(base), "x0_px": float(lay["tx0"] * ppm - params.t0 *
                                                                     params.speed * ppm),
                          "clipped": clipped})
    _ink_lines(img, polys, ink, params.trace_mm * ppm)
    header = {}
    if params.header:
        left, right = _fake_header(rng)
        hh = 3.0 * ppm
        for k, s in enumerate(left):
            _text(img, s, (gx0 * ppm, (7 + 5 * k) * ppm), hh, text_rgb, params.font, max(1, round(hh / 9)) if k == 0
                  else None)
        for k, s in enumerate(right):
            _text(img, s, ((gx0 + 0.55 * (gx1 - gx0)) * ppm, (7 + 5 * k) * ppm), hh, text_rgb, params.font)
        footer = (f"{params.speed:g} mm/s   {params.gain:g} mm/mV   0.05-{pick(rng, ['40', '100', '150'], [1, 1, 2])}"
                  f" Hz   {pick(rng, ['50', '60'], [1, 1])} Hz notch")
        _text(img, footer, (gx0 * ppm, (gy1 + 6.5) * ppm), hh, text_rgb, params.font)
        header = {"left": left, "right": right, "footer": footer}
    return leads, {"trace_px": float(max(1.0, thick)), **header}


# ----------------------------------------------------------------------------------------------------------------
# Paper artefacts
# ----------------------------------------------------------------------------------------------------------------
def _scribble(img, rng, ppm, s):
    h, w = img.shape[:2]
    ink = pick(rng, [(20, 40, 150), (20, 20, 25), (170, 25, 30)], [3, 2, 1])
    for _ in range(int(rng.integers(1, 2 + round(3 * s)))):
        x0, y0 = rng.uniform(0.05 * w, 0.8 * w), rng.uniform(0.05 * h, 0.95 * h)
        if rng.random() < 0.5:  # cursive-like scrawl: a drifting pen with loops of varying size and slant
            n = int(rng.integers(3, 10))
            r = rng.uniform(1.0, 2.5) * ppm
            t = np.linspace(0, n * 2 * np.pi, n * 10)
            rad = r * (0.6 + 0.8 * np.abs(np.sin(t / 2 + rng.uniform(0, 3))))  # letters of different heights
            slant = rng.uniform(-0.4, 0.1)
            y = -rad * (0.5 + 0.5 * np.sin(t)) + np.cumsum(rng.normal(0, 0.04 * r, len(t)))
            x = t / (2 * np.pi) * r * rng.uniform(1.4, 2.6) + 0.7 * r * np.cos(t) + slant * y
            pts = np.stack([x0 + x, y0 + y], 1)
        elif rng.random() < 0.5:  # a free stroke: arrow, circle-ish or underline
            k = int(rng.integers(4, 9))
            pts = catmull_rom(np.stack([x0 + np.cumsum(rng.normal(6, 8, k)) * ppm,
                                        y0 + np.cumsum(rng.normal(0, 4, k)) * ppm], 1), 10)
        else:
            # deliberately no diagnostic words: a note must not leak (or contradict) a label
            word = pick(rng, ["ok", "seen", "rpt", "noted", "cf old", "file", "copy to GP", "12/3", "JK", "Dr M"],
                         [1] * 10)
            _text(img, word, (x0, y0), rng.uniform(3, 7) * ppm, ink, 0, max(1, round(0.35 * ppm)))
            continue
        th = max(1, int(round(rng.uniform(0.25, 0.6) * ppm)))
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, ink, th, cv2.LINE_AA, 4)


def _stamp(img, rng, ppm, s):
    h, w = img.shape[:2]
    pw, ph = int(rng.uniform(35, 55) * ppm), int(rng.uniform(16, 26) * ppm)
    patch = np.zeros((ph, pw), np.uint8)
    th = max(1, int(0.6 * ppm))
    if rng.random() < 0.5:
        cv2.rectangle(patch, (th, th), (pw - th - 1, ph - th - 1), 255, th, cv2.LINE_AA)
    else:
        cv2.ellipse(patch, (pw // 2, ph // 2), (pw // 2 - th, ph // 2 - th), 0, 0, 360, 255, th, cv2.LINE_AA)
    word = pick(rng, ["RECEIVED", "COPY", "REVIEWED", "CONFIDENTIAL", "ARCHIVE", "SCANNED"], [1] * 6)
    tbox = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, 1.0, 2)[0]
    scale = 0.7 * pw / tbox[0]
    cv2.putText(patch, word, (int(0.15 * pw), int(0.5 * ph + 0.5 * tbox[1] * scale - 0.12 * ph)),
                cv2.FONT_HERSHEY_DUPLEX, scale, 255, max(1, int(scale * 2)), cv2.LINE_AA)
    date = f"{int(rng.integers(1, 29)):02d} {pick(rng, ['JAN', 'MAR', 'JUN', 'SEP', 'NOV'], [1] * 5)} " \
           f"{int(rng.integers(2005, 2025))}"
    cv2.putText(patch, date, (int(0.22 * pw), int(0.85 * ph)), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.55, 255,
                max(1, int(scale)), cv2.LINE_AA)
    ang = rng.uniform(-25, 25)
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), ang, 1.0)
    d = int(math.hypot(pw, ph)) + 2
    m[:, 2] += ((d - pw) / 2, (d - ph) / 2)
    patch = cv2.warpAffine(patch, m, (d, d))
    if d >= min(h, w):
        return
    # uneven ink: multiply by smooth noise so the stamp is patchy like a real one
    blot = cv2.resize(rng.uniform(0.3, 1.0, (8, 8)).astype(np.float32), (d, d))
    alpha = patch.astype(np.float32) / 255 * blot * rng.uniform(0.5, 0.9) * (0.5 + 0.5 * s)
    x, y = int(rng.uniform(0, w - d)), int(rng.uniform(0, h - d))
    ink = np.array(pick(rng, [(200, 40, 50), (40, 60, 170), (110, 40, 130)], [2, 2, 1]), np.float32)
    roi = img[y:y + d, x:x + d].astype(np.float32)
    # multiply blend: ink darkens what is under it, as on paper
    roi *= 1 - alpha[..., None] * (1 - ink / 255)
    img[y:y + d, x:x + d] = np.clip(roi, 0, 255).astype(np.uint8)


def _crease_wrinkle_gain(shape, rng, s_crease, s_wrinkle, down=4) -> np.ndarray:
    """Low-res multiplicative shading: folds (a dark/light pair along a line) and crumple facets."""
    h, w = shape[0] // down + 1, shape[1] // down + 1
    g = np.zeros((h, w), np.float32)
    if s_crease > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):
            vertical = rng.random() < 0.6
            frac = pick(rng, [1 / 2, 1 / 3, 2 / 3, 1 / 4, 3 / 4], [3, 2, 2, 1, 1]) + rng.normal(0, 0.01)
            ang = math.radians(rng.normal(0, 1.0))
            if vertical:
                d = (xx - frac * w) * math.cos(ang) + (yy - h / 2) * math.sin(ang)
            else:
                d = (yy - frac * h) * math.cos(ang) - (xx - w / 2) * math.sin(ang)
            width = rng.uniform(1.5, 5.0)
            a = 0.12 * s_crease
            g += -a * np.exp(-np.abs(d) / width) * np.sign(d + 1e-3) * rng.choice([-1, 1]) - \
                0.6 * a * np.exp(-(d / 0.8) ** 2)
    if s_wrinkle > 0:
        # crumple: random short ridges, each lit on one side and shaded on the other, then softened
        w_map = np.zeros((h, w), np.float32)
        for _ in range(int(10 + 40 * s_wrinkle)):
            p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            ang = rng.uniform(0, np.pi)
            ln = rng.uniform(0.05, 0.35) * max(h, w)
            dvec = np.array([math.cos(ang), math.sin(ang)]) * ln / 2
            nvec = np.array([-dvec[1], dvec[0]]) / max(1e-6, np.linalg.norm(dvec)) * rng.uniform(1.5, 6)
            a, b = p - dvec, p + dvec
            amp = rng.uniform(0.02, 0.07) * s_wrinkle
            cv2.fillPoly(w_map, [np.round(np.array([a, b, b + nvec, a + nvec]) * 4).astype(np.int32)], amp,
                         cv2.LINE_AA, 2)
            cv2.fillPoly(w_map, [np.round(np.array([a, b, b - nvec, a - nvec]) * 4).astype(np.int32)], -amp,
                         cv2.LINE_AA, 2)
        g += cv2.GaussianBlur(w_map, (0, 0), 1.2)
        coarse = cv2.resize(rng.normal(0, 0.025 * s_wrinkle, (6, 8)).astype(np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)
        g += coarse
    return 1.0 + g


def _apply_artefacts(img: np.ndarray, meta: dict, params: RenderParams, rng, ppm: float,
                     defer_gain: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    applied = {}
    on = {}
    for name in ARTEFACTS:  # one draw per artefact, always, so toggling one keeps the others' decisions
        p, s = params.artefacts.get(name, (0.0, 0.0))
        if rng.random() < p:
            on[name] = float(s)
    if "stamp" in on:
        _stamp(img, rng, ppm, on["stamp"])
    if "scribble" in on:
        _scribble(img, rng, ppm, on["scribble"])
    gain = None
    if "crease" in on or "wrinkle" in on:
        gain = _crease_wrinkle_gain(img.shape, rng, on.get("crease", 0.0), on.get("wrinkle", 0.0))
    if "color_temp" in on:  # warm (yellowish, old paper / tungsten) or cool (bluish) cast
        t = rng.choice([-1, 1]) * on["color_temp"] * 0.08
        cast = np.array([1 + t, 1.0, 1 - t], np.float32) * (1 - abs(t) / 2)
        gain = (np.ones((img.shape[0] // 4 + 1, img.shape[1] // 4 + 1), np.float32) if gain is None else gain)
        gain = gain[..., None] * cast
    deferred = None
    if gain is not None:
        if defer_gain and "rotate" not in on and "crop" not in on:
            deferred = gain  # the camera multiplies it into its own light map: one full-res pass, not two
        else:
            multiply_gain(img, gain)
    h, w = img.shape[:2]
    if "rotate" in on:
        ang = float(rng.uniform(-1, 1) * 4 * on["rotate"])
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), ang, 1.0)
        bed = tuple(int(v) for v in np.full(3, rng.choice([255, 235, 40])))  # scanner lid: white, grey or black
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=bed)
        transform_meta(meta, affine_fn(m), (w, h), np.vstack([m, [0, 0, 1]]))
        on["rotate"] = ang
    if "crop" in on:
        f = 0.07 * on["crop"]
        x0, y0 = int(rng.uniform(0, f) * w), int(rng.uniform(0, f) * h)
        x1, y1 = w - int(rng.uniform(0, f) * w), h - int(rng.uniform(0, f) * h)
        img = np.ascontiguousarray(img[y0:y1, x0:x1])
        m = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)
        transform_meta(meta, affine_fn(m), (x1 - x0, y1 - y0), m)
        applied["crop_box"] = [x0, y0, x1, y1]
    if "blur" in on:
        img = cv2.GaussianBlur(img, (0, 0), 0.4 + 1.2 * on["blur"])
    if "noise" in on:
        img, on["noise"] = add_noise(img, 2 + 10 * on["noise"], rng)
    if "salt" in on:
        k = int(img.shape[0] * img.shape[1] * 0.004 * on["salt"])
        ys, xs = rng.integers(0, img.shape[0], k), rng.integers(0, img.shape[1], k)
        img[ys, xs] = np.where(rng.random(k) < 0.5, 0, 255)[:, None].astype(np.uint8)
    if "jpeg" in on:
        q = int(round(95 - 65 * on["jpeg"]))
        img = jpeg(img, q)
        on["jpeg"] = q
    applied.update(on)
    meta["applied"] = applied
    return img, deferred


# ----------------------------------------------------------------------------------------------------------------
# Public rendering API
# ----------------------------------------------------------------------------------------------------------------
def _check_signal(signal, fs) -> np.ndarray:
    sig = np.asarray(signal, np.float32)
    if sig.ndim != 2 or sig.shape[0] != len(LEADS):
        raise ValueError(f"signal must be [12, n] in lead order {LEADS}, got shape {sig.shape}")
    if not fs or fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")
    return sig


def draw_page(signal, fs, params: RenderParams, rng, defer_gain: bool = False
              ) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """render_ecg without the final JSON conversion: (image, meta with array coordinates, paper gain). With
    `defer_gain` the paper's crease/wrinkle/colour shading is returned as a low-res gain map instead of applied (None
    when there is none, or when a rotation or crop already moved the page), for the camera (photo.camera) to multiply
    into its light in the same pass; without it the gain is always None."""
    sig = _check_signal(signal, fs)
    present = {l for i, l in enumerate(LEADS) if np.isfinite(sig[i]).any()}
    lay = page_layout(params, sig.shape[1], float(fs), present)
    ppm = params.dpi / 25.4
    pw, ph = lay["page"]
    wh = (int(round(pw * ppm)), int(round(ph * ppm)))
    gx0, gy0, gx1, gy1 = lay["grid"]
    img = _grid_image(wh, ppm, lay["grid"], params.grid, params.grid_minor, params.paper_rgb)
    leads, extra = _draw_page(img, lay, sig, fs, params, rng, ppm)
    for lead in leads:
        nb = lead.pop("name_box")
        lead["name_quad"] = None if nb is None else np.array([[nb[0], nb[1]], [nb[2], nb[1]], [nb[2], nb[3]],
                                                              [nb[0], nb[3]]])
    t = np.linspace(0, 1, 16, endpoint=False)[:, None]
    c = np.array([[gx0, gy0], [gx1, gy0], [gx1, gy1], [gx0, gy1]]) * ppm
    roi_poly = np.vstack([c[k] + (c[(k + 1) % 4] - c[k]) * t for k in range(4)])  # edges sampled: curl bends them
    meta = {"params": dataclasses.asdict(params), "px_per_mm": ppm, "page_px_per_mm": ppm, "size": list(wh),
            "paper": {"name": params.paper, "mm": list(lay["page"])}, "page_size": list(wh),
            "grid_box_mm": list(lay["grid"]), "seconds": lay["span"], "leads": leads, "roi_poly": roi_poly,
            "paper_quad": np.array([[0, 0], [wh[0] - 1, 0], [wh[0] - 1, wh[1] - 1], [0, wh[1] - 1]], float),
            "page_to_image": np.eye(3), **extra}
    refresh_boxes(meta)
    img, gain = _apply_artefacts(img, meta, params, rng, ppm, defer_gain)
    return img, meta, gain


def render_ecg(signal, fs, params: RenderParams, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw `signal` ([12, n] mV, NaN rows = absent leads) as a paper ECG. Returns (RGB uint8, JSON-able meta):

    params (all RenderParams), applied (artefacts that fired, with strength / angle / quality), size [W, H] (in the
    x, y order of every coordinate here), px_per_mm (image scale), page_px_per_mm (= dpi / 25.4, the scale the page
    was drawn at), paper, grid_box_mm,
    seconds (page span), roi_box [x0, y0, x1, y1] (printed grid area), roi_poly (its outline), paper_quad (page
    corners TL, TR, BR, BL), page_to_image (3x3: page px -> image px; identity unless rotated/cropped/resized),
    trace_px, header text, and per lead: name, rhythm, fs, i0 (first sample index), t0 (s), x, y (image px of every
    sample; y None = NaN sample, undrawn), bbox (bounds of the drawn samples), name_box, visible (fraction in frame),
    clipped (samples clipped at the grid edge, as printers do), baseline_px and x0_px (page px of 0 mV and of
    t = 0 s: t = (x - x0_px) / (speed * page_px_per_mm), mV = (baseline_px - y) / (gain * page_px_per_mm) in page px).
    """
    img, meta, _ = draw_page(signal, fs, params, rng)
    return img, finalize_meta(meta)


def adapt_layout(params: RenderParams, found, keep_layout: bool = False) -> RenderParams:
    """Fit the page to the leads a record has: fewer than 12 (Holter, rhythm strips, leads lost) get strip pages of
    the leads present (2x1 with two or more, else 1x1) unless `keep_layout`; rhythm strips only of present leads."""
    found = set(found)
    if len(found) < 12 and not keep_layout:
        params.layout = "2x1" if len(found) >= 2 else "1x1"
    if params.layout in ("2x1", "1x1") and len(found) < 12:
        params.strip_leads = tuple(lead for lead in LEADS if lead in found)[:int(params.layout[0])]
    params.rhythm = tuple(lead for lead in params.rhythm if lead in found)
    return params


