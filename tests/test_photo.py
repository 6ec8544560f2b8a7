"""src/photo.py: the camera moves every label with the pixels; paper corners, ROI box and lead boxes are right."""
import json

import cv2
import numpy as np
import pytest

from src import compose, photo, render
from tests.test_render import FS, dark_fraction, grey, spikes_signal


def _page(dpi=60, **kw):
    return render.render_ecg(spikes_signal(), FS, render.RenderParams(dpi=dpi, trace_mm=0.4, **kw),
                             np.random.default_rng(0))


def _plain_camera(**kw):
    """Dark uniform desk, no clutter, even light: paper vs background is then unambiguous in the pixels."""
    base = dict(out_hw=(540, 960), background="plain", bg_rgb=(30, 30, 34), clutter=0, light_grad=0.0,
                vignette=0.0, shadows=0, glare=0.0, noise=1.0, defocus=0.0, jpeg=0)
    return photo.PhotoParams(**{**base, **kw})


def _apply(h, pts):
    q = np.c_[pts, np.ones(len(pts))] @ np.asarray(h).T
    return q[:, :2] / q[:, 2:3]


@pytest.mark.parametrize("cam", [dict(tilt=25, tilt_dir=40, roll=8), dict(tilt=10, tilt_dir=200, roll=-95),
                                 dict(tilt=18, tilt_dir=300, roll=3, curl=0.02, curl_axis=0),
                                 dict(tilt=5, roll=180, curl=0.015, curl_axis=1, curl_shape=(-1.0, 0.5))])
def test_homography_maps_page_corners_onto_paper_edges(cam):
    page, meta = _page()
    img, m = photo.photograph(page, meta, _plain_camera(**cam), np.random.default_rng(1))
    assert img.shape == (540, 960, 3) and m["size"] == [960, 540]
    json.dumps(m)
    ph, pw = page.shape[:2]
    corners = np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], float)
    quad = _apply(m["homography"], corners)
    assert np.allclose(quad, m["paper_quad"], atol=1e-6)
    # in the pixels: just inside each corner is paper (bright), just outside is the dark desk
    g = grey(img)
    centre = quad.mean(0)
    for c in quad:
        u = (centre - c) / np.linalg.norm(centre - c)
        inside, outside = np.round(c + 6 * u).astype(int), np.round(c - 6 * u).astype(int)
        assert g[inside[1], inside[0]] > 120, (c, "paper expected")
        if 0 <= outside[0] < 960 and 0 <= outside[1] < 540:
            assert g[outside[1], outside[0]] < 80, (c, "background expected")
    # and the paper edge itself: mid-points of each side (through the full map, bend included) separate the two
    if not cam.get("curl"):
        for k in range(4):
            a, b = quad[k], quad[(k + 1) % 4]
            mid, n = (a + b) / 2, np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a)
            n = n if np.dot(centre - mid, n) > 0 else -n
            pin, pout = np.round(mid + 4 * n).astype(int), np.round(mid - 4 * n).astype(int)
            assert g[pin[1], pin[0]] > 120 and g[pout[1], pout[0]] < 80
    # traces are where the metadata says, bend or not
    assert dark_fraction(img, m, thr=120) > 0.9


def test_roi_box_contains_all_lead_boxes_and_is_tight():
    page, meta = _page(dpi=50)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        pp = photo.sample_photo_params(rng, out_hw=(352, 640))
        img, m = photo.photograph(page, meta, pp, rng)
        x0, y0, x1, y1 = m["roi_box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 352
        for lead in m["leads"]:
            bx0, by0, bx1, by1 = lead["bbox"]
            assert x0 <= bx0 <= bx1 <= x1 and y0 <= by0 <= by1 <= y1, (seed, lead["name"])
        if pp.curl == 0:  # a pure homography: the box is exactly the bounds of the projected grid corners
            g = np.array(meta["grid_box_mm"]) * meta["page_px_per_mm"]
            c = _apply(m["homography"], np.array([[g[0], g[1]], [g[2], g[1]], [g[2], g[3]], [g[0], g[3]]]))
            want = [max(0, c[:, 0].min()), max(0, c[:, 1].min()), min(640, c[:, 0].max()), min(352, c[:, 1].max())]
            assert np.allclose(m["roi_box"], want, atol=1e-6)


def test_make_image_photo_is_deterministic_and_sized():
    sig = spikes_signal()
    a, ma = compose.make_image(sig, FS, np.random.default_rng(5), "photo", hw=(352, 640))
    b, mb = compose.make_image(sig, FS, np.random.default_rng(5), "photo", hw=(352, 640))
    c, _ = compose.make_image(sig, FS, np.random.default_rng(6), "photo", hw=(352, 640))
    assert a.shape == (352, 640, 3) and np.array_equal(a, b) and ma == mb and not np.array_equal(a, c)
    assert set(ma) >= {"paper_quad", "homography", "roi_box", "leads", "photo", "params", "size"}
    assert np.shape(ma["paper_quad"]) == (4, 2) and np.shape(ma["homography"]) == (3, 3)
    assert json.loads(json.dumps(ma)) == ma


def test_default_photo_is_bhf_sized_and_trace_aligned():
    assert photo.PhotoParams().out_hw == (1900, 3460)
    assert photo.sample_photo_params(np.random.default_rng(0)).out_hw == (1900, 3460)
    page, meta = _page(dpi=200, artefacts={"crease": [1, 0.8], "wrinkle": [1, 0.8]})
    pp = _plain_camera(out_hw=(1900, 3460), tilt=20, tilt_dir=120, curl=0.012, defocus=0.8, noise=3, jpeg=85,
                       background="wood", bg_rgb=(120, 84, 52), clutter=3, shadows=1, light_grad=0.2)
    img, m = photo.photograph(page, meta, pp, np.random.default_rng(2))
    assert img.shape == (1900, 3460, 3)
    assert dark_fraction(img, m, thr=120) > 0.9
    # px_per_mm after the camera is the local scale at the grid centre: page scale x |det J| ** 0.5
    assert 0.3 < m["px_per_mm"] / m["page_px_per_mm"] < 3


def box_map(inv, box, step: int = 8) -> np.ndarray:
    """The remap map (h, w, 2) of `box` built on its own coarse grid, as _warp_into builds each band's."""
    x0, y0, x1, y1 = box
    return photo._upsample_map(photo._coarse_inverse(inv, box, step), 0, 0, x1 - x0, y1 - y0, step)


@pytest.mark.parametrize("curl", [dict(curl=0.0), dict(curl=0.02, curl_axis=0, curl_shape=(1.0, 0.6)),
                                  dict(curl=0.015, curl_axis=1, curl_shape=(-0.7, -0.8))])
def test_bend_inverse_is_exact_and_maps_agree(curl):
    pw, ph = 900, 640
    pp = _plain_camera(tilt=22, tilt_dir=70, roll=12, **curl)
    hm, bend = photo._homography(pw, ph, pp), photo._bend(pw, ph, pp)
    fwd, inv = photo.point_map(hm, bend), photo.inverse_point_map(hm, bend)
    s = np.random.default_rng(0).uniform([0, 0], [pw - 1, ph - 1], (500, 2))
    assert np.abs(inv(fwd(s)) - s).max() < 1e-8
    if bend is not None:
        assert np.abs(bend.inverse(bend(s)) - s).max() < 1e-8 and np.abs(bend(s) - s).max() > 1
        corners = np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], float)
        assert np.abs(bend(corners) - corners).max() < 1e-9  # the bend vanishes at the corners
    # the remap maps (coarse grid, upsampled) stay within a small fraction of a pixel of the exact map, and bands
    # of the box give exactly the whole-box maps
    box = photo._bbox_of(fwd(photo._page_outline(pw, ph)), *pp.out_hw[::-1])
    xy = box_map(inv, box)
    assert xy.shape == (box[3] - box[1], box[2] - box[0], 2)
    yy, xx = np.mgrid[0:box[3] - box[1]:7, 0:box[2] - box[0]:7]
    exact = inv(np.c_[xx.ravel() + box[0], yy.ravel() + box[1]].astype(float))
    assert np.hypot(*(xy[yy, xx].reshape(-1, 2) - exact).T).max() < 0.1
    y_mid, x_mid = box[1] + 8 * ((box[3] - box[1]) // 16), box[0] + 8 * ((box[2] - box[0]) // 16)
    top = box_map(inv, (box[0], box[1], box[2], y_mid))
    bottom_left = box_map(inv, (box[0], y_mid, x_mid, box[3]))
    bottom_right = box_map(inv, (x_mid, y_mid, box[2], box[3]))
    assert np.array_equal(np.vstack([top, np.hstack([bottom_left, bottom_right])]), xy)


@pytest.mark.parametrize("cam", [dict(tilt=20, tilt_dir=30, roll=25), dict(tilt=15, tilt_dir=250, curl=0.02),
                                 dict(tilt=8, roll=-4, curl=0.02, curl_axis=1, curl_shape=(-1.0, 0.7))])
def test_page_points_land_where_the_map_says(cam):
    """Red dots on a white page, some 5 px from each corner and some mid-edge where the bend is largest: in the photo
    each dot's centroid is where point_map sends it (so where the metadata says), within a pixel."""
    page, meta = _page()
    ph, pw = page.shape[:2]
    page[:] = 255
    m = 5
    dots = np.array([[m, m], [pw - 1 - m, m], [pw - 1 - m, ph - 1 - m], [m, ph - 1 - m], [pw // 2, m],
                     [pw // 2, ph - 1 - m], [m, ph // 2], [pw - 1 - m, ph // 2], [pw // 3, ph // 3]], float)
    for x, y in dots.astype(int):
        page[y - 2:y + 3, x - 2:x + 3] = (255, 0, 0)
    pp = _plain_camera(noise=0.0, background="paper", bg_rgb=(255, 255, 255), **cam)
    img, m_out = photo.photograph(page, meta, pp, np.random.default_rng(3))
    fwd = photo.point_map(np.array(m_out["homography"]), photo._bend(pw, ph, pp))
    want = fwd(dots)
    red = np.clip(img[..., 0].astype(float) - img[..., 1], 0, None)
    for (x, y) in want:
        x0, y0 = int(round(x)) - 8, int(round(y)) - 8
        win = red[y0:y0 + 17, x0:x0 + 17]
        assert win.sum() > 0, (x, y)
        yy, xx = np.mgrid[y0:y0 + 17, x0:x0 + 17]
        got = np.array([(win * xx).sum(), (win * yy).sum()]) / win.sum()
        assert np.hypot(*(got - [x, y])) < 1.0, (cam, (x, y), got)
    quad = np.array(m_out["paper_quad"])
    assert np.abs(fwd(np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], float)) - quad).max() < 1e-6
