"""src/render.py: the page is where the metadata says, at the scale the parameters say; masks from the metadata."""
import json

import numpy as np
import pytest

from src import pixels, render
from src.config import LEADS

FS = 500


def spikes_signal(seconds=10.0, fs=FS):
    """Smooth per-lead waves (|v| < 1.2 mV) plus, in lead II, 1 mV spikes 20 ms wide at t = 0.5, 1.5, ... s."""
    t = np.arange(int(seconds * fs)) / fs
    sig = np.stack([0.6 * np.sin(2 * np.pi * (0.7 + 0.13 * i) * t + i) for i in range(12)]).astype(np.float32)
    ii = LEADS.index("II")
    sig[ii] = 0.0
    for c in np.arange(0.5, seconds, 1.0):
        sig[ii] += np.clip(1 - np.abs(t - c) / 0.01, 0, None)
    return sig


def grey(img):
    return img.astype(np.float32).mean(2)


def page_coords(meta, lead):
    """Sample pixel coordinates mapped back to page pixels through the stored planar transform."""
    x, y = np.array(lead["x"], float), np.array([np.nan if v is None else v for v in lead["y"]], float)
    inv = np.linalg.inv(np.array(meta["page_to_image"]))
    q = np.c_[x, np.nan_to_num(y), np.ones_like(x)] @ inv.T
    return q[:, 0] / q[:, 2], np.where(np.isfinite(y), q[:, 1] / q[:, 2], np.nan)


def check_round_trip(meta, sig, fs):
    """JSON pixel coordinates -> seconds and mV, against the signal, in pixels of error."""
    p, ppm = meta["params"], meta["page_px_per_mm"]
    assert ppm == p["dpi"] / 25.4
    for lead in meta["leads"]:
        x, y = page_coords(meta, lead)
        k = np.arange(len(x))
        t_true = (lead["i0"] + k) / fs
        t_back = (x - lead["x0_px"]) / (p["speed"] * ppm)
        assert np.max(np.abs(t_back - t_true)) * p["speed"] * ppm <= 0.5, lead["name"]
        v_true = sig[LEADS.index(lead["name"]), lead["i0"] + k]
        ok = np.isfinite(v_true)
        assert np.array_equal(np.isfinite(y), ok), "NaN samples must be exactly the undrawn ones"
        # the printer clips at the grid edge, like real ones: compare in mV where not clipped, else to the edge
        top, bottom = meta["grid_box_mm"][1] * ppm, meta["grid_box_mm"][3] * ppm
        y_true = lead["baseline_px"] - v_true * p["gain"] * ppm
        inside = ok & (y_true > top) & (y_true < bottom)
        v_back = (lead["baseline_px"] - y) / (p["gain"] * ppm)
        assert np.max(np.abs(v_back[inside] - v_true[inside]), initial=0) * p["gain"] * ppm <= 0.5, lead["name"]
        assert np.max(np.abs(y - np.clip(y_true, top, bottom))[ok]) <= 0.5
        assert lead["clipped"] == int((ok & ~inside).sum())


def dark_fraction(img, meta, thr=110):
    g = grey(img)
    hits = total = 0
    for lead in meta["leads"]:
        x, y = np.array(lead["x"], float), np.array([np.nan if v is None else v for v in lead["y"]], float)
        ok = np.isfinite(y)
        xi, yi = np.round(x[ok]).astype(int), np.round(y[ok]).astype(int)
        inside = (xi >= 0) & (yi >= 0) & (xi < g.shape[1]) & (yi < g.shape[0])
        hits += int((g[yi[inside], xi[inside]] < thr).sum())
        total += len(xi)
    return hits / total


def test_round_trip_trace_is_where_meta_says():
    sig = spikes_signal()
    sig[LEADS.index("V2"), 2800:3200] = np.nan  # a gap (V2 shows 5-7.5 s): must stay undrawn
    params = render.RenderParams(dpi=100, rhythm=("II",), trace_mm=0.3)
    img, meta = render.render_ecg(sig, FS, params, np.random.default_rng(0))
    assert img.shape == (round(215.9 / 25.4 * 100), round(279.4 / 25.4 * 100), 3)
    assert meta["px_per_mm"] == 100 / 25.4
    json.dumps(meta)
    check_round_trip(meta, sig, FS)
    assert dark_fraction(img, meta) > 0.99

    ppm, p = meta["px_per_mm"], meta["params"]
    # undrawn: along the baseline of the V2 gap the paper shows (grid lines are lighter than ink)
    v2 = next(lead for lead in meta["leads"] if lead["name"] == "V2")
    gap = [k for k, v in enumerate(v2["y"]) if v is None]
    xs = np.round(np.array(v2["x"])[gap[5:-5]]).astype(int)
    assert (grey(img)[round(v2["baseline_px"]), xs] > 150).mean() > 0.95

    # independent of the stored coordinates: find the spikes in the pixels of the lead II rhythm strip
    strip = next(lead for lead in meta["leads"] if lead["name"] == "II" and lead["rhythm"])
    b = strip["baseline_px"]
    band = grey(img)[int(b - 14 * ppm):int(b - 0.5 * p["gain"] * ppm)]  # above half a millivolt
    cols = np.flatnonzero((band < 110).any(0))
    cols = cols[cols > strip["x0_px"] + 6 * ppm]  # right of the printed lead name
    groups = np.split(cols, np.flatnonzero(np.diff(cols) > 3) + 1)
    peaks_x = np.array([g.mean() for g in groups])
    expect_x = strip["x0_px"] + np.arange(0.5, 10, 1.0) * p["speed"] * ppm
    assert len(peaks_x) == 10
    assert np.max(np.abs(peaks_x - expect_x)) <= 1.0  # seconds -> px from the image itself
    r0 = int(b - 14 * ppm)
    tops = [r0 + np.flatnonzero(grey(img)[r0:int(b), int(round(x))] < 110)[0] for x in expect_x]
    # 1 mV spike apex (the line's half width sits above it); mV -> px from the image itself
    assert np.allclose(b - np.array(tops), p["gain"] * ppm, atol=0.5 * params.trace_mm * ppm + 1.2)


def test_geometric_artefacts_move_the_metadata():
    sig = spikes_signal()
    params = render.RenderParams(dpi=90, trace_mm=0.35, artefacts={"rotate": [1, 1.0], "crop": [1, 1.0]})
    img, meta = render.render_ecg(sig, FS, params, np.random.default_rng(3))
    assert abs(meta["applied"]["rotate"]) > 0.1 and "crop_box" in meta["applied"]
    assert list(img.shape[1::-1]) == meta["size"]
    check_round_trip(meta, sig, FS)
    assert dark_fraction(img, meta) > 0.97
    x0, y0, x1, y1 = meta["roi_box"]
    for lead in meta["leads"]:
        bx0, by0, bx1, by1 = lead["bbox"]
        assert x0 <= bx0 <= bx1 <= x1 and y0 <= by0 <= by1 <= y1


def _pitch(profile, lo, hi):
    """Period (px) of the strongest spectral peak with period in [lo, hi], sub-bin by parabolic interpolation."""
    prof = (profile - profile.mean()) * np.hanning(len(profile))
    n = 1 << 18
    spec = np.abs(np.fft.rfft(prof, n))
    f = np.fft.rfftfreq(n)
    band = np.flatnonzero((f > 1 / hi) & (f < 1 / lo))
    k = band[np.argmax(spec[band])]
    a, b, c = np.log(spec[k - 1:k + 2])
    return 1 / (f[k] + 0.5 * (a - c) / (a - 2 * b + c) / n)


@pytest.mark.parametrize("dpi,grid,minor", [(100, "red", "lines"), (173, "green", "lines"), (120, "bw", "dots")])
def test_grid_pitch_is_exact(dpi, grid, minor):
    sig = np.zeros((12, 5000), np.float32)
    params = render.RenderParams(dpi=dpi, grid=grid, grid_minor=minor, header=False, lead_names=False,
                                 calibration=False, separators=False)
    img, meta = render.render_ecg(sig, FS, params, np.random.default_rng(0))
    ppm = dpi / 25.4
    x0, y0, x1, y1 = (int(v) for v in meta["roi_box"])
    dark = 255 - grey(img)[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
    for prof in (dark.mean(0), dark.mean(1)):  # columns (time axis) and rows (voltage axis)
        assert abs(_pitch(prof, 0.7 * ppm, 1.4 * ppm) / ppm - 1) < 0.01
        assert abs(_pitch(prof, 3.5 * ppm, 7 * ppm) / (5 * ppm) - 1) < 0.01


@pytest.mark.parametrize("layout,extra,n_leads", [
    ("3x4", dict(rhythm=("II", "V1", "V5")), 15), ("3x4", dict(rhythm=()), 12), ("6x2", {}, 12),
    ("12x1", dict(gain=5.0), 12), ("2x1", dict(strip_leads=("II", "V5")), 2), ("1x1", dict(strip_leads=("V1",)), 1),
    ("3x4", dict(speed=50.0, paper="a4"), 13), ("12x1", dict(speed=12.5, gain=20.0, grid="none"), 12)])
def test_layouts(layout, extra, n_leads):
    sig = spikes_signal()
    img, meta = render.render_ecg(sig, FS, render.RenderParams(layout=layout, dpi=60, **extra),
                                  np.random.default_rng(1))
    assert len(meta["leads"]) == n_leads
    check_round_trip(meta, sig, FS)
    assert dark_fraction(img, meta) > 0.97
    span = meta["seconds"]
    assert span == (5.0 if extra.get("speed") == 50 else 10.0)  # 50 mm/s: what fits; else the whole signal
    for lead in meta["leads"]:
        assert lead["name_box"] is not None and lead["bbox"][2] > lead["bbox"][0]


def test_absent_leads_and_short_signals():
    sig = spikes_signal()
    sig[6:] = np.nan  # limb leads only
    img, meta = render.render_ecg(sig, FS, render.RenderParams(dpi=60), np.random.default_rng(0))
    assert {lead["name"] for lead in meta["leads"]} == set(LEADS[:6])
    with pytest.raises(ValueError, match="too short"):
        render.render_ecg(sig[:, :2000], FS, render.RenderParams(dpi=60, seconds=10.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[12, n\]"):
        render.render_ecg(sig[:3], FS, render.RenderParams(dpi=60), np.random.default_rng(0))


def test_masks_follow_the_traces():
    sig = spikes_signal()
    img, meta = render.render_ecg(sig, FS, render.RenderParams(dpi=80), np.random.default_rng(0))
    lab = pixels.masks_from_meta(meta, "leads")
    assert lab.shape == img.shape[:2]
    lead = meta["leads"][4]
    xi, yi = np.round(lead["x"]).astype(int), np.round(lead["y"]).astype(int)
    assert (lab[yi, xi] == 5).mean() > 0.9
    ink = grey(img) < 110
    trace = pixels.masks_from_meta(meta, "trace") > 0
    assert (ink & trace).sum() / trace.sum() > 0.6  # the mask sits on the ink
