"""Page geometry: where the sheet lies in a photo, how to flatten it, and the trace map of a flattened page.

  page_quad(img)            the sheet's four corners and whether to trust them (find_paper_quad, then quad_problem):
                            what the `full` and `trace` strategies of src.preprocess decide on, and what
                            bench/page_finder.py measures
  rectify(img, quad, size)  the quad warped to a top-down page of size (H, W)
  trace_map(page)           the ink alone, black on white: paper colour, grid, shadows and lighting taken out
  order_corners, corner_distance   quads as TL, TR, BR, BL, and how far two quads are apart
  find_page(img, problems)  the flattened sheet at the nearest paper's aspect, or the whole image (said in problems)
  deskew(page)              a small residual rotation found from the sharpest row profile, undone
  grid_pitch(page, ink)     px per mm from the printed grid's 5 mm period (src.digitize reads the page with these)

Arrays in, arrays out: the settings, the fallback to the grid crop and the cache live in src.preprocess.
"""
from __future__ import annotations

import math
from collections import Counter

import cv2
import numpy as np

from .render import PAPERS_MM
from .roi import downscale, paper_mask

MIN_EDGE_SUPPORT = 8.0  # grey levels per px that every side of a sheet's outline must show (see refine_quad);
# at 4, once line candidates came in, 3 more wrong quads got through on the demo photos (bench/page_finder.py)


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


def _odd(v: float) -> int:
    return max(3, int(v) // 2 * 2 + 1)


def trace_map(img: np.ndarray, column_q: float = 50.0) -> np.ndarray:
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
    `column_q`: the percentile taken out of each column (50: the median). A lower one keeps what covers up to
    1 - q/100 of a column: src.digitize keeps the calibration pulses' edges, which line up down a page of six rows
    at 20 mm/mV (a grid line covers ~80 % of a page's height).
    """
    w = img.shape[1]
    v = img.max(axis=2).astype(np.float32)
    paper = cv2.blur(cv2.dilate(v, np.ones((_odd(w / 110),) * 2, np.uint8)), (_odd(w / 25),) * 2)
    ink = np.clip(1 - v / np.maximum(paper, 1), 0, 1)
    rows = np.percentile(ink, 10, axis=1, keepdims=True)  # a ruled line crosses ~all of the grid's width; a baseline
    ink -= rows  # leaves it at each beat (a median would take it)
    ink -= np.percentile(ink, column_q, axis=0, keepdims=True)
    return (255 - 255 * np.clip(ink, 0, 1) + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# The top-down page, its tilt and the grid's scale (the digitiser reads the page from these)
# ----------------------------------------------------------------------------------------------------------------
def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def find_page(img: np.ndarray, problems: list[str]) -> tuple[np.ndarray, bool]:
    """(top-down page, whether it is the rectified sheet); the whole image when no trusted quad is found."""
    quad, why = page_quad(img)
    if quad is None or why:
        problems.append(f"page not found ({why or 'no quad'}): used the whole image")
        return img, False
    q = np.asarray(quad, np.float64)
    wpx = (np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2
    hpx = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
    ratio = wpx / max(hpx, 1.0)
    aspects = [w / h for w, h in PAPERS_MM.values()]
    aspect = min(aspects, key=lambda a: abs(math.log(a / ratio))) if ratio > 1 else ratio
    w = int(round(wpx))
    return rectify(img, q, (int(round(w / aspect)), w)), True


def _row_sharpness(dark: np.ndarray, angle: float) -> float:
    h, w = dark.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot = cv2.warpAffine(dark, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    prof = rot[:, w // 8: w - w // 8].mean(1)
    return float(np.sum(np.diff(prof) ** 2))


def deskew(page: np.ndarray, max_deg: float = 5.0) -> tuple[np.ndarray, float]:
    """Undo a small in-plane rotation: the angle (coarse 0.25 deg, then 0.05 deg steps) at which the row profile of
    the dark pixels (grid lines, baselines) is sharpest. Returns (page, angle in degrees)."""
    small, _ = downscale(page, 700)
    dark = 255 - _grey(small).astype(np.float32)
    coarse = np.arange(-max_deg, max_deg + 1e-6, 0.25)
    a0 = coarse[int(np.argmax([_row_sharpness(dark, a) for a in coarse]))]
    fine = a0 + np.arange(-0.2, 0.2 + 1e-6, 0.05)
    sharp = [_row_sharpness(dark, a) for a in fine]
    ang = float(fine[int(np.argmax(sharp))])
    if abs(ang) < 0.05 or max(sharp) <= 1.01 * _row_sharpness(dark, 0.0):  # level, or nothing to level by
        return page, 0.0
    h, w = page.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
    return cv2.warpAffine(page, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), ang


def _explained(p: np.ndarray, pad: int, periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(power spectrum of the detrended profile zero-padded to `pad` samples, and for each period P the power at all
    its harmonics m/P below 0.9 Nyquist, each the max within +-1 bin less the spectrum's median, over the spectrum's
    total): how much of the profile a pattern repeating every P px explains."""
    p = p - cv2.blur(p.reshape(1, -1).astype(np.float32), (min(len(p) | 1, 61), 1)).ravel().astype(np.float64)
    spec = np.abs(np.fft.rfft(p * np.hanning(len(p)), pad)) ** 2
    spec[0] = 0
    peak = np.maximum.reduce([spec, np.r_[spec[1:], 0], np.r_[0, spec[:-1]]])
    top = int(0.9 * (len(spec) - 1))
    floor = float(np.median(peak[1:top]))  # what any set of bins holds by chance: a long period's many harmonics
    out = np.array([np.sum(peak[np.round(np.arange(pad / per, top, pad / per)).astype(int)] - floor)
                    for per in periods])
    return spec, out / (spec.sum() + 1e-12)


def grid_pitch(page: np.ndarray, ink: np.ndarray) -> tuple[float | None, float]:
    """(px per mm, strength) from the printed grid. The grid's pattern repeats every 5 mm (major lines): a period P
    explains the dark pixels' column and row profiles (the lesser of the two counts: trace rows repeat along y only,
    beats along x only) as well as any multiple of it, and better than the 1 mm period, which misses the major lines'
    own part. So P is the shortest period explaining >= 90 % of the best (up to 2.5x the scale the page's width
    gives), refined to the nearby period whose harmonics gather the most power.
    Ink (the boolean `ink` mask, widened) is set to the median first. (None, strength) when nothing repeats."""
    g = 255 - _grey(page).astype(np.float32)
    g[cv2.dilate(ink.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = float(np.median(g))
    h, w = g.shape
    core = g[int(0.2 * h): int(0.8 * h), int(0.1 * w): int(0.9 * w)]
    px, py = core.mean(0), core.mean(1)
    n = max(len(px), len(py))
    if min(len(px), len(py)) < 40:
        return None, 0.0
    pad = 16 * n
    # 5 mm is at most 16 px (300+ dpi) and 2.5 times what it would be if the page were the image's width (a zoomed
    # crop of a page), and at least 6 px (30 dpi)
    longest = min(5 * 16.0, 2.5 * 5 * w / max(PAPERS_MM["a4"][0], PAPERS_MM["letter"][0]))
    if longest <= 7:
        return None, 0.0
    periods = pad / np.arange(max(1, int(pad / longest)), int(pad / 6.0) + 1)[::-1]  # one spectrum bin apart
    sx, ex = _explained(px, pad, periods)
    sy, ey = _explained(py, pad, periods)
    score = np.minimum(ex, ey)
    strength = float(score.max())
    if strength < 0.008:
        return None, strength
    i = int(np.flatnonzero(score >= 0.9 * strength)[0])
    # refine: the period (within +-3 %) whose harmonics below 0.9 Nyquist gather the most power of both spectra
    spec = sx + sy
    fine = periods[i] * (1 + np.linspace(-0.03, 0.03, 121))
    top = 0.9 * (len(spec) - 1)
    power = [np.interp(np.arange(pad / f, top, pad / f), np.arange(len(spec)), spec).sum() for f in fine]
    return float(fine[int(np.argmax(power))]) / 5.0, strength  # the 1 mm period in px
