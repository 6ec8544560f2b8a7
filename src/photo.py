"""Photo-like camera model: a rendered ECG page (src/render.py) becomes a phone photograph of the printout.

Used through `compose.make_image(..., style="photo")` or directly:
    page, meta = render.render_ecg(signal, fs, render.RenderParams(dpi=150), rng)
    img, meta = photograph(page, meta, sample_photo_params(rng), rng)

Pipeline (page pixels -> photo pixels): the page is tilted in 3D (up to ~30 degrees), rolled in plane, projected
through a pinhole camera and fitted into the frame (a homography H), after an optional paper bend (a smooth
displacement d in page coordinates that is zero at the four page corners). So every page point s lands at
    photo = H(s + d(s)).
`meta["homography"]` is H: exact for the page corners (d vanishes there, so it maps the page corners onto the paper
quad exactly) and for every point when there is no bend; with a bend the metadata coordinates (traces, boxes, grid
outline) went through the full map above, the same one the pixels went through (cv2.remap with its inverse).
The background (procedural desk/cloth/paper textures, clutter, the paper's drop shadow), lighting (gradient,
vignette, soft hand/phone shadows from Catmull-Rom outlines, white balance, exposure) and glare are smooth, so they
are made at 1/4-1/8 resolution and upsampled; blur, sensor noise and JPEG run at full resolution.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from .pixels import add_noise, catmull_rom, finalize_meta, jpeg, multiply_gain, pick, transform_meta

BACKGROUNDS = ("wood", "cloth", "paper", "plain")


@dataclasses.dataclass
class PhotoParams:
    out_hw: tuple[int, int] = (1900, 3460)  # photo height, width (BHF-like landscape)
    fill: float = 0.85  # page's projected extent / frame extent along the binding axis
    center: tuple[float, float] = (0.5, 0.5)  # where the page sits in the free space (0..1, 0..1)
    tilt: float = 12.0  # out-of-plane camera tilt, degrees (<= ~30)
    tilt_dir: float = 0.0  # direction of the tilt axis in the page plane, degrees
    roll: float = 0.0  # in-plane rotation, degrees
    focal: float = 0.65  # focal length / frame diagonal (0.6 ~ phone main camera)
    curl: float = 0.0  # paper bend amplitude / page size (0 = flat)
    curl_axis: int = 0  # 0: the bend moves points vertically (top/bottom edges bow), 1: horizontally
    curl_shape: tuple[float, float] = (1.0, 0.0)  # bend = curl * sin(pi u) * (a + b (v - 0.5))
    background: str = "wood"  # wood | cloth | paper | plain
    bg_rgb: tuple[int, int, int] = (120, 84, 52)  # base colour of the background
    clutter: int = 2  # objects lying around the page
    light_grad: float = 0.2  # brightness fall-off across the frame
    vignette: float = 0.2  # corner darkening
    shadows: int = 0  # hand/phone shadows falling on the page
    shadow_strength: float = 0.35  # how dark those shadows are
    glare: float = 0.0  # specular highlight strength (0 = none)
    exposure: float = 1.0  # global brightness
    wb: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance gains R, G, B
    defocus: float = 0.0  # Gaussian blur sigma, px
    motion: float = 0.0  # motion blur length, px
    motion_angle: float = 0.0  # motion direction, degrees
    noise: float = 3.0  # sensor noise std, grey levels
    jpeg: int = 0  # JPEG quality (0 = no compression)

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r}: expected one of {BACKGROUNDS}")
        self.out_hw = (int(self.out_hw[0]), int(self.out_hw[1]))


def sample_photo_params(rng: np.random.Generator, out_hw: tuple[int, int] | None = None) -> PhotoParams:
    """Random phone-photo conditions (BHF-like: mostly mild, sometimes harsh) for a photo of `out_hw` (height, width;
    default PhotoParams.out_hw)."""
    roll = rng.normal(0, 5)
    u = rng.random()
    roll += 90 * rng.choice([-1, 1]) if u < 0.05 else (180 if u < 0.08 else 0)
    bg = pick(rng, BACKGROUNDS, [0.3, 0.2, 0.2, 0.3])
    base = {"wood": [(128, 88, 54), (160, 118, 76), (92, 62, 40), (185, 150, 110)],
            "cloth": [(60, 70, 100), (110, 40, 40), (70, 90, 70), (150, 150, 155)],
            "paper": [(225, 222, 214), (205, 205, 200), (235, 230, 215), (190, 195, 200)],
            "plain": [(40, 40, 44), (200, 200, 196), (90, 100, 110), (150, 140, 120)]}[bg]
    t = rng.normal(0, 0.05)
    return PhotoParams(
        out_hw=tuple(out_hw) if out_hw else PhotoParams.out_hw, fill=float(rng.uniform(0.7, 0.95)),
        center=(float(rng.random()), float(rng.random())), tilt=float(30 * rng.beta(1.5, 3.0)),
        tilt_dir=float(rng.uniform(0, 360)), roll=float(roll), focal=float(rng.uniform(0.55, 0.9)),
        curl=float(rng.uniform(0.003, 0.02)) if rng.random() < 0.5 else 0.0, curl_axis=int(rng.integers(2)),
        curl_shape=(float(rng.choice([-1, 1]) * rng.uniform(0.3, 1)), float(rng.uniform(-1, 1))),
        background=bg, bg_rgb=base[int(rng.integers(len(base)))], clutter=int(rng.integers(0, 6)),
        light_grad=float(rng.uniform(0, 0.35)), vignette=float(rng.uniform(0, 0.35)),
        shadows=int(pick(rng, (0, 1, 2), [0.5, 0.4, 0.1])), shadow_strength=float(rng.uniform(0.15, 0.5)),
        glare=float(rng.uniform(0.2, 1.0)) if rng.random() < 0.3 else 0.0, exposure=float(rng.uniform(0.9, 1.08)),
        wb=(float(1 + t), 1.0, float(1 - t)), defocus=float(rng.uniform(0.3, 1.6)) if rng.random() < 0.6 else 0.0,
        motion=float(rng.uniform(2, 8)) if rng.random() < 0.15 else 0.0, motion_angle=float(rng.uniform(0, 180)),
        noise=float(rng.uniform(1, 6)), jpeg=int(rng.integers(60, 96)) if rng.random() < 0.6 else 0)


# ----------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------
def _homography(page_w: int, page_h: int, p: PhotoParams) -> np.ndarray:
    """Page px -> photo px: tilt + roll in 3D, pinhole projection, then fit into the frame."""
    H, W = p.out_hw
    c = np.array([[0, 0], [page_w - 1, 0], [page_w - 1, page_h - 1], [0, page_h - 1]], float)
    xy = c - [(page_w - 1) / 2, (page_h - 1) / 2]
    a = math.radians(p.tilt_dir)
    k = np.array([math.cos(a), math.sin(a), 0.0])  # tilt axis in the page plane (Rodrigues rotation)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    th = math.radians(p.tilt)
    r_tilt = np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * kx @ kx
    r = math.radians(p.roll)
    r_roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    pts3 = (r_roll @ r_tilt @ np.c_[xy, np.zeros(4)].T).T
    f = p.focal * math.hypot(W, H)
    dist = f * max(page_w, page_h) / (p.fill * max(W, H))  # page about `fill` of the frame
    proj = f * pts3[:, :2] / (dist + pts3[:, 2:3])
    lo, hi = proj.min(0), proj.max(0)
    s = min(p.fill * W / (hi[0] - lo[0]), p.fill * H / (hi[1] - lo[1]))
    size = (hi - lo) * s
    off = np.array([(W - 1 - size[0]) * p.center[0], (H - 1 - size[1]) * p.center[1]])
    dst = (proj - lo) * s + off
    return cv2.getPerspectiveTransform(c.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


class _Bend:
    """Paper bend in page px: one coordinate moves by curl * extent * sin(pi t) * (a + b (r - 0.5)), t the other
    coordinate and r the moved one, both normalised to 0..1. It is zero along two opposite page edges (so at all four
    corners), and linear in the moved coordinate, so its inverse is exact in closed form (no iteration)."""

    def __init__(self, page_w: int, page_h: int, p: PhotoParams):
        self.a, self.b = p.curl_shape
        self.moved = 1 if p.curl_axis == 0 else 0  # axis 0: points move vertically (top/bottom edges bow)
        ext = (page_w, page_h)
        self.n_moved, self.n_other = ext[self.moved], ext[1 - self.moved]
        self.curl = p.curl

    def _k(self, s: np.ndarray) -> np.ndarray:
        return self.curl * self.n_moved * np.sin(np.pi * s[:, 1 - self.moved] / max(1, self.n_other - 1))

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """flat page px -> bent page px"""
        out = np.array(s, np.float64)
        r = out[:, self.moved] / max(1, self.n_moved - 1)
        out[:, self.moved] += self._k(out) * (self.a + self.b * (r - 0.5))
        return out

    def inverse(self, q: np.ndarray) -> np.ndarray:
        """bent page px -> flat page px: the other coordinate is unchanged, so k is known and r solves a linear
        equation"""
        out = np.array(q, np.float64)
        k = self._k(out)
        m = self.moved
        out[:, m] = (out[:, m] - k * (self.a - 0.5 * self.b)) / (1 + k * self.b / max(1, self.n_moved - 1))
        return out


def _bend(page_w: int, page_h: int, p: PhotoParams) -> _Bend | None:
    return _Bend(page_w, page_h, p) if p.curl > 0 else None


def _apply_h(hm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(pts, np.asarray(hm, np.float64)).reshape(-1, 2)


def point_map(hm: np.ndarray, bend: _Bend | None):
    """page px -> photo px, exactly what the pixels went through."""
    if bend is None:
        return lambda s: _apply_h(hm, s)
    return lambda s: _apply_h(hm, bend(s))


def inverse_point_map(hm: np.ndarray, bend: _Bend | None):
    """photo px -> page px: the exact inverse of point_map (the pixels are pulled through it)."""
    hinv = np.linalg.inv(hm)
    if bend is None:
        return lambda q: _apply_h(hinv, q)
    return lambda q: bend.inverse(_apply_h(hinv, q))


# ----------------------------------------------------------------------------------------------------------------
# Background, light, shadows
# ----------------------------------------------------------------------------------------------------------------
def _smooth_noise(rng, h, w, cells, amp):
    n = rng.normal(0, amp, (cells[1], cells[0])).astype(np.float32)
    if cells[0] < 32:  # cubic only where its smoothness shows, and only to 1/4 size: a field this smooth is then
        n = cv2.resize(n, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_CUBIC)  # linear (<0.2% off)
    return cv2.resize(n, (w, h), interpolation=cv2.INTER_LINEAR)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur for large sigmas, cheaply: blur a downscaled copy and scale back (the result is smooth)."""
    f = max(1, int(sigma / 2))
    if f == 1:
        return cv2.GaussianBlur(mask, (0, 0), sigma)
    h, w = mask.shape[:2]
    small = cv2.resize(mask, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / f), (w, h), interpolation=cv2.INTER_LINEAR)


def _background(p: PhotoParams, rng, h: int, w: int, quad: np.ndarray, down: int) -> np.ndarray:
    """Low-res uint8 RGB background with clutter, and the paper's drop shadow as a gain map (quad in photo px)."""
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    base = np.array(p.bg_rgb, np.float32)
    if p.background == "wood":  # grain: stretched sine rings disturbed by smooth noise, plank seams
        ang = rng.uniform(-0.3, 0.3) + (np.pi / 2 if rng.random() < 0.5 else 0)
        along = xx * math.cos(ang) + yy * math.sin(ang)
        across = -xx * math.sin(ang) + yy * math.cos(ang)
        warp = _smooth_noise(rng, h, w, (6, 4), 6.0)
        grain = np.sin(across * rng.uniform(0.25, 0.6) + warp + 0.02 * along)
        fine = _smooth_noise(rng, h, w, (w // 3, h // 3), 0.04)
        shade = 1 + 0.08 * grain + fine + _smooth_noise(rng, h, w, (5, 3), 0.06)
        plank = rng.uniform(60, 160) / down * 4
        t = across / plank
        shade[np.abs(t - np.rint(t)) < 0.01] *= 0.75  # seams: within 1% of a plank width of a multiple
    elif p.background == "cloth":  # weave + folds
        f = rng.uniform(0.6, 1.2)
        weave = np.sin(xx * f) * np.sin(yy * f)
        shade = 1 + 0.05 * weave + _smooth_noise(rng, h, w, (5, 4), 0.1)
    elif p.background == "paper":  # another sheet / pale desk: almost flat, faint blotches
        shade = 1 + _smooth_noise(rng, h, w, (8, 6), 0.03)
    else:  # fine texture would turn into a regular upsampling pattern here; the sensor noise adds grain later
        shade = 1 + _smooth_noise(rng, h, w, (4, 3), 0.07)
    img = cv2.merge([np.clip(shade * c, 0, 255).astype(np.uint8) for c in base])  # 8-bit: OpenCV AA needs it
    for _ in range(p.clutter):
        _clutter(img, rng, h, w)
    # the sheet lifts slightly: a soft shadow offset from its outline
    sh = np.zeros((h, w), np.uint8)
    a = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(0.002, 0.008) * max(h, w) * np.array([math.cos(a), math.sin(a)])
    cv2.fillPoly(sh, [np.round((quad / down + off) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    sh = _soft(sh, max(1.0, 0.006 * max(h, w))).astype(np.float32)
    return img, 1 - rng.uniform(0.35, 0.6) / 255 * sh


def _clutter(img, rng, h, w):
    kind = pick(rng, ("pen", "note", "sheet", "mug", "phone"), [3, 2, 2, 1, 1])
    c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    s = max(h, w)
    if kind == "pen":
        a = rng.uniform(0, np.pi)
        d = np.array([math.cos(a), math.sin(a)]) * rng.uniform(0.08, 0.15) * s
        col = pick(rng, [(20, 30, 120), (15, 15, 15), (180, 20, 20), (230, 230, 230)], [1, 1, 1, 1])
        cv2.line(img, tuple(np.round((c - d) * 16).astype(int)), tuple(np.round((c + d) * 16).astype(int)),
                 col, max(2, int(0.008 * s)), cv2.LINE_AA, 4)
    elif kind in ("note", "sheet", "phone"):
        half = {"note": (0.04, 0.04), "sheet": (0.2, 0.26), "phone": (0.035, 0.07)}[kind]
        col = {"note": (240, 225, 90), "sheet": (238, 238, 232), "phone": (25, 25, 28)}[kind]
        a = rng.uniform(0, np.pi)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        box = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.array(half) * s
        cv2.fillPoly(img, [np.round((box @ rot.T + c) * 16).astype(np.int32)], col, cv2.LINE_AA, 4)
    else:
        r = rng.uniform(0.04, 0.07) * s
        col = pick(rng, [(235, 235, 235), (60, 40, 30), (170, 40, 40)], [1, 1, 1])
        cv2.circle(img, tuple(np.round(c * 16).astype(int)), int(r * 16), col, -1, cv2.LINE_AA, 4)
        cv2.circle(img, tuple(np.round(c * 16).astype(int)), int(r * 0.8 * 16), (80, 50, 30), -1, cv2.LINE_AA, 4)


def _shadow_shape(rng, w: float, h: float) -> np.ndarray:
    """Outline of a hand (palm + fingers) or a phone held over the page, entering from a frame edge."""
    s = min(w, h)
    if rng.random() < 0.55:  # hand: wrist at the edge, palm, four finger tips
        pts = [(-0.25, 1.6), (-0.45, 0.6), (-0.5, 0.0)]
        for k, fx in enumerate((-0.38, -0.13, 0.12, 0.36)):
            ln = (0.9, 1.05, 1.0, 0.8)[k] * rng.uniform(0.9, 1.1)
            pts += [(fx - 0.09, -0.2), (fx, -0.2 - ln * 0.6), (fx + 0.09, -0.2)]
        pts += [(0.5, 0.1), (0.75, 0.4), (0.45, 0.7), (0.3, 1.6)]
        pts = np.array(pts) * rng.uniform(0.35, 0.55) * s
        n = 6
    else:  # phone with a holding hand: a rounded slab
        hw, hh = rng.uniform(0.12, 0.18) * s, rng.uniform(0.25, 0.35) * s
        pts = np.array([(-hw, -hh), (0, -hh * 1.02), (hw, -hh), (hw * 1.02, 0), (hw, hh * 3), (-hw, hh * 3),
                        (-hw * 1.02, 0)])
        n = 10
    curve = catmull_rom(pts, n, closed=True)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    curve = curve @ rot.T
    # centre the shape so it reaches in from outside the frame towards its middle
    direction = np.array([-math.sin(a), math.cos(a)])  # the "wrist" end points this way after rotation
    centre = np.array([w / 2, h / 2]) + direction * rng.uniform(0.25, 0.55) * np.array([w, h])
    return curve + centre


def _light(p: PhotoParams, rng, h: int, w: int) -> np.ndarray:
    """Low-res multiplicative light field (h, w, 3): exposure, gradient, vignette, soft shadows, white balance."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / max(1, w - 1) - 0.5, yy / max(1, h - 1) - 0.5
    a = rng.uniform(0, 2 * np.pi)
    g = p.exposure * (1 - p.light_grad * (0.5 + math.cos(a) * u + math.sin(a) * v))
    g *= 1 - p.vignette * (u * u + v * v) * 2
    for _ in range(p.shadows):
        m = np.zeros((h, w), np.float32)
        cv2.fillPoly(m, [np.round(_shadow_shape(rng, w, h) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
        m = _soft(m, rng.uniform(0.004, 0.02) * max(h, w) + 1)  # soft: light is diffuse
        g *= 1 - p.shadow_strength * m
    return g[..., None] * np.array(p.wb, np.float32)[None, None, :]


# ----------------------------------------------------------------------------------------------------------------
# The camera
# ----------------------------------------------------------------------------------------------------------------
def camera(page: np.ndarray, meta: dict, p: PhotoParams, rng, paper_gain: np.ndarray | None = None
           ) -> tuple[np.ndarray, dict]:
    """photograph without the copies and the final JSON conversion: `page` (its pixels are changed) and `meta` (array
    coordinates, as render.draw_page returns them) are worked on in place. `paper_gain`: the page's own shading that
    draw_page(defer_gain=True) left for this pass (multiplied into the light that falls on the page)."""
    H, W = p.out_hw
    ph, pw = page.shape[:2]
    hm = _homography(pw, ph, p)
    bend = _bend(pw, ph, p)
    fwd, inv = point_map(hm, bend), inverse_point_map(hm, bend)
    quad = _apply_h(hm, np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], float))

    # light in photo space at 1/8 res; the page gets it pulled back through H (ignoring the small bend) at 1/4 of
    # the page's res, times the paper's own crease/wrinkle shading if the renderer deferred it, in one pass
    d8 = 8
    light = _light(p, rng, H // d8 + 1, W // d8 + 1)
    page_low = (pw // 4 + 1, ph // 4 + 1)
    m = np.diag([1 / d8, 1 / d8, 1.0]) @ hm @ np.diag([4.0, 4.0, 1.0])  # page-low px -> photo-low px
    lpage = cv2.warpPerspective(light, m, page_low, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
    if bend is not None:  # a bent sheet is lit unevenly across the bend
        t = np.linspace(0, np.pi, page_low[0] if p.curl_axis == 0 else page_low[1], dtype=np.float32)
        ramp = 1 + 4 * p.curl * p.curl_shape[0] * np.cos(t)
        lpage *= (ramp[None, :, None] if p.curl_axis == 0 else ramp[:, None, None])
    if paper_gain is not None:
        lpage *= paper_gain if paper_gain.ndim == 3 else paper_gain[..., None]
    multiply_gain(page, np.clip(lpage, 0, 1.27))

    # background at 1/4 res, lit by the same field, then upsampled
    d4 = 4
    bh, bw = H // d4 + 1, W // d4 + 1
    bg, shadow = _background(p, rng, bh, bw, quad, d4)
    gain = cv2.resize(light, (bw, bh), interpolation=cv2.INTER_LINEAR) * shadow[..., None]
    bg = cv2.multiply(bg, gain, dtype=cv2.CV_8U)
    out = cv2.resize(bg, (W, H), interpolation=cv2.INTER_LINEAR)

    # the page itself, only inside its bounding box
    outline = fwd(_page_outline(pw, ph))
    box = _bbox_of(outline, W, H)
    if box is not None:
        _warp_into(out, page, hm, None if bend is None else inv, outline, box)  # flat: a plain homography
        _antialias_edge(out, page, outline, inv)

    if p.glare > 0:
        _glare(out, rng, p.glare, quad)
    # optics only where there is detail: the upsampled background is already smooth
    if box is not None and (p.defocus > 0.25 or p.motion >= 2):
        m = 8
        x0, y0, x1, y1 = max(0, box[0] - m), max(0, box[1] - m), min(W, box[2] + m), min(H, box[3] + m)
        roi = out[y0:y1, x0:x1]
        src = roi
        if p.defocus > 0.25:  # into a new array: an in-place Gaussian copies its input first and is slower
            src = cv2.GaussianBlur(roi, (0, 0), p.defocus)
        if p.motion >= 2:
            k = int(math.ceil(p.motion)) | 1
            ker = np.zeros((k, k), np.float32)
            a = math.radians(p.motion_angle)
            c, dx, dy = (k - 1) / 2, math.cos(a) * (k - 1) / 2, math.sin(a) * (k - 1) / 2
            cv2.line(ker, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
            cv2.filter2D(src, -1, ker / ker.sum(), dst=roi)  # written back into the frame
        elif src is not roi:
            roi[:] = src
    if p.noise > 0:
        add_noise(out, p.noise, rng, inplace=True)
    if p.jpeg and box is not None:
        # compress the page's region on the 16-px MCU grid of the full frame: identical blocks to compressing the
        # whole photo there, at a fraction of the cost (the smooth background barely changes under JPEG)
        x0, y0 = box[0] // 16 * 16, box[1] // 16 * 16
        out[y0:box[3], x0:box[2]] = jpeg(out[y0:box[3], x0:box[2]], p.jpeg)

    # metadata: everything through the same map as the pixels
    ppm = meta["px_per_mm"]  # of the image handed in (the page, possibly already scaled)
    gx = np.asarray(meta["roi_poly"], float).mean(0, keepdims=True)
    jac = (fwd(gx + [[1.0, 0]]) - fwd(gx)), (fwd(gx + [[0, 1.0]]) - fwd(gx))
    local = math.sqrt(abs(jac[0][0, 0] * jac[1][0, 1] - jac[0][0, 1] * jac[1][0, 0]))
    meta["page_size"] = [pw, ph]
    transform_meta(meta, fwd, (W, H), hm)
    meta["paper_quad"] = quad  # == fwd(corners): the bend is zero at the corners
    meta["homography"] = hm
    meta["px_per_mm"] = float(ppm * local)  # at the grid centre; perspective makes it vary across the photo
    if "trace_px" in meta:
        meta["trace_px"] = float(meta["trace_px"] * local)
    meta["photo"] = dataclasses.asdict(p)
    return out, meta


def photograph(img: np.ndarray, meta: dict, params: PhotoParams, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Photograph a rendered page. Returns (RGB uint8 of params.out_hw, JSON-able meta) with paper_quad
    (TL, TR, BR, BL), homography (3x3 page px -> photo px), roi_box (printed grid area) and moved lead boxes."""
    meta = {k: v for k, v in meta.items()}
    meta["leads"] = [dict(lead) for lead in meta["leads"]]
    out, meta = camera(img.copy(), meta, params, rng)
    return out, finalize_meta(meta)


def _page_outline(pw: int, ph: int, n: int = 32) -> np.ndarray:
    """The page border as a closed polygon (n points per side), in page px."""
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    c = np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], float)
    return np.vstack([c[k] + (c[(k + 1) % 4] - c[k]) * t for k in range(4)])


def _bbox_of(q: np.ndarray, W: int, H: int):
    x0, y0 = max(0, int(math.floor(q[:, 0].min())) - 2), max(0, int(math.floor(q[:, 1].min())) - 2)
    x1, y1 = min(W, int(math.ceil(q[:, 0].max())) + 3), min(H, int(math.ceil(q[:, 1].max())) + 3)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _antialias_edge(out: np.ndarray, page: np.ndarray, outline: np.ndarray, inv) -> None:
    """BORDER_TRANSPARENT leaves a stair-stepped paper edge; re-blend the pixels along it by their exact coverage.
    Works side by side in each side's own small bounding box (a full-box mask would cost a pass over the page)."""
    H, W = out.shape[:2]
    n = len(outline) // 4
    found = []
    for k in range(4):
        side = np.vstack([outline[k * n:(k + 1) * n], outline[((k + 1) * n) % len(outline)][None]])
        x0, y0 = np.maximum(np.floor(side.min(0)).astype(int) - 3, 0)
        x1, y1 = np.minimum(np.ceil(side.max(0)).astype(int) + 4, [W, H])
        if x1 <= x0 or y1 <= y0:
            continue
        band = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.polylines(band, [np.round((side - [x0, y0]) * 16).astype(np.int32)], False, 255, 4, cv2.LINE_8, 4)
        pts = cv2.findNonZero(band)
        if pts is None:
            continue
        pts = pts.reshape(-1, 2)
        cov = np.zeros_like(band)
        cv2.fillPoly(cov, [np.round((outline - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        c = cov[pts[:, 1], pts[:, 0]]
        keep = c > 0  # uncovered pixels keep the desk as they are
        found.append(np.c_[pts[keep, 0] + x0, pts[keep, 1] + y0, c[keep]])
    if not found:
        return
    allp = np.vstack(found)
    _, first = np.unique(allp[:, 1] * W + allp[:, 0], return_index=True)  # corners: blend each pixel once
    allp = allp[first]
    gx, gy, a = allp[:, 0], allp[:, 1], allp[:, 2:3].astype(np.float32) / 255
    # the page's colour at those pixels: inverse map, edge-replicated sampling
    q = inv(np.stack([gx, gy], 1).astype(np.float64))
    m = len(q)
    qq = np.zeros((-(-m // 1024) * 1024, 2), np.float32)  # remap maps must be < 32767 wide: fold into rows
    qq[:m] = q
    qq = qq.reshape(-1, 1024, 2)
    pc = cv2.remap(page, qq[..., 0], qq[..., 1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:m].astype(np.float32)
    flat, idx = out.reshape(-1, 3), gy * W + gx  # one flat index: cheaper than 2-D fancy indexing
    flat[idx] = (flat[idx].astype(np.float32) * (1 - a) + pc * a + 0.5).astype(np.uint8)


def _coarse_inverse(inv, box, step: int) -> np.ndarray:
    """The inverse map (photo px -> page px) over `box` (x0, y0, x1, y1) at the centres of step x step cells, starting
    one cell before the box: (rows, cols, 2) float32. Those centres are exactly where cv2.resize by the integer factor
    `step` puts its input samples, so upsampling reproduces them (see _upsample_map)."""
    x0, y0, x1, y1 = box
    gx = x0 - step + (step - 1) / 2 + step * np.arange(-(-(x1 - x0) // step) + 2)
    gy = y0 - step + (step - 1) / 2 + step * np.arange(-(-(y1 - y0) // step) + 2)
    return inv(np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)).astype(np.float32).reshape(len(gy), len(gx), 2)


def _upsample_map(coarse: np.ndarray, cx: int, cy: int, w: int, h: int, step: int) -> np.ndarray:
    """The (h, w, 2) remap map of the w x h box whose top-left pixel is cell (cx, cy) of the coarse grid: linear
    upsampling (the map is smooth: a few hundredths of a px from the exact one), cut from the interior, away from
    resize's clamped border. Boxes on the same cell lattice therefore get identical maps: tiles join seamlessly."""
    sub = coarse[cy:cy + -(-h // step) + 2, cx:cx + -(-w // step) + 2]
    up = cv2.resize(sub, (sub.shape[1] * step, sub.shape[0] * step), interpolation=cv2.INTER_LINEAR)
    return up[step:step + h, step:step + w]


def _warp_into(out: np.ndarray, page: np.ndarray, hm, inv, outline: np.ndarray, box, rows: int = 64,
               step: int = 8) -> None:
    """Draw the page into out[box]: through `hm` (warpPerspective) when `inv` is None, else pulled through the inverse
    map `inv` (cv2.remap with float maps). Pixels outside the page keep what is there.

    Why it looks like this: OpenCV's vectorised warps cover 4-channel images (3-channel ones take a scalar path about
    twice as slow), so the page is warped as RGBA into an RGBA copy of each band and converted back. Bands of `rows`
    rows keep that copy and the maps in cache (full-box float maps alone would be 8 bytes a pixel), and each band is
    only as wide as the page outline within it. Bands start on the `step` lattice of the box, so their maps come from
    one coarse grid and equal whole-box ones exactly."""
    x0, y0, x1, y1 = box
    rows = max(step, rows // step * step)
    page4 = cv2.cvtColor(page, cv2.COLOR_RGB2RGBA)
    coarse = None if inv is None else _coarse_inverse(inv, box, step)
    a, b = outline, np.roll(outline, -1, 0)
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    for ys in range(y0, y1, rows):
        ye = min(y1, ys + rows)
        hit = (hi >= ys - 1) & (lo <= ye)  # outline segments reaching into this band (their ends bound its width)
        if not hit.any():
            continue
        xs = np.r_[a[hit, 0], b[hit, 0]]
        bx0 = max(x0, x0 + (int(math.floor(xs.min())) - 2 - x0) // step * step)
        bx1 = min(x1, int(math.ceil(xs.max())) + 3)
        if bx1 <= bx0:
            continue
        dst = out[ys:ye, bx0:bx1]
        band = cv2.cvtColor(dst, cv2.COLOR_RGB2RGBA)
        if coarse is None:
            t = np.array([[1, 0, -bx0], [0, 1, -ys], [0, 0, 1]], float)
            cv2.warpPerspective(page4, t @ hm, (bx1 - bx0, ye - ys), dst=band, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_TRANSPARENT)
        else:
            xy = _upsample_map(coarse, (bx0 - x0) // step, (ys - y0) // step, bx1 - bx0, ye - ys, step)
            cv2.remap(page4, xy, None, cv2.INTER_LINEAR, dst=band, borderMode=cv2.BORDER_TRANSPARENT)
        cv2.cvtColor(band, cv2.COLOR_RGBA2RGB, dst=dst)


def _glare(img, rng, strength, quad):
    """Specular highlight: an additive soft ellipse somewhere on the page, worked on only inside the box where it
    adds at least one grey level."""
    H, W = img.shape[:2]
    c = quad.mean(0) + rng.normal(0, 0.2, 2) * (quad.max(0) - quad.min(0))
    r = rng.uniform(0.06, 0.2) * max(W, H)
    a = rng.uniform(0, np.pi)
    k = rng.uniform(0.3, 0.8)  # minor / major axis
    peak = 160 * strength
    if peak <= 1:
        return
    rho = math.sqrt(math.log(peak) / 1.5)  # peak * exp(-1.5 rho^2) = 1 there; uint8 truncation drops the rest
    hx = rho * r * math.hypot(math.cos(a), k * math.sin(a))  # half extents of that rotated ellipse
    hy = rho * r * math.hypot(math.sin(a), k * math.cos(a))
    x0, y0 = max(0, int(c[0] - hx)), max(0, int(c[1] - hy))
    x1, y1 = min(W, int(math.ceil(c[0] + hx)) + 1), min(H, int(math.ceil(c[1] + hy)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    # 1/8 resolution, samples where cv2.resize puts them
    w, h = x1 - x0, y1 - y0
    nw, nh = -(-w // 8) + 1, -(-h // 8) + 1
    xx = ((np.arange(nw, dtype=np.float32) + 0.5) * (w / nw) - 0.5 + x0 - c[0])[None, :]
    yy = ((np.arange(nh, dtype=np.float32) + 0.5) * (h / nh) - 0.5 + y0 - c[1])[:, None]
    u = (xx * math.cos(a) + yy * math.sin(a)) / r
    v = (-xx * math.sin(a) + yy * math.cos(a)) / (r * k)
    g = np.clip(peak * np.exp(-(u * u + v * v) * 1.5), 0, 255).astype(np.uint8)
    g = cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)
    roi = img[y0:y1, x0:x1]
    cv2.add(roi, cv2.merge([g, g, g]), dst=roi)
