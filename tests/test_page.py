"""Page geometry alone (src.page): corner order and distance, the outline cover at the frame's edge, and the trace
map. The geometry as preprocessing uses it (rectified corners, fallbacks) is tested in tests/test_preprocess.py."""
import cv2
import numpy as np
import pytest

from src.page import _outline_cover, corner_distance, order_corners, trace_map


def test_order_corners_and_corner_distance():
    quad = np.float64([[10, 12], [200, 8], [210, 150], [5, 140]])  # TL, TR, BR, BL
    for perm in ([2, 0, 3, 1], [3, 2, 1, 0], [1, 2, 3, 0]):
        assert np.array_equal(order_corners(quad[perm]), quad)
    assert corner_distance(quad, np.roll(quad, 1, axis=0)) == 0.0  # the best cyclic match: a turned page
    moved = quad + [[0, 0], [3, 4], [0, 0], [0, 0]]
    assert corner_distance(quad, moved) == 5.0
    assert np.allclose(corner_distance(quad, np.stack([quad, moved])), [0.0, 5.0])


def test_outline_cover_counts_a_side_along_the_frame_edge():
    """Canny marks no edge in a frame's outermost pixels, so a sheet whose side runs there (a page photographed up
    to the frame's edge) has that side off the edge map; it still bounds the page and must not count as a gap.
    A side that crosses the inside of the frame without edges still does."""
    edges = np.zeros((100, 200), np.uint8)
    cv2.rectangle(edges, (0, 10), (150, 90), 255, 1)
    edges[:, :3] = 0  # what Canny gives at the frame: nothing
    quad = np.float64([[1, 10], [150, 10], [150, 90], [1, 90]])
    assert _outline_cover(quad, edges) == 1.0
    edges[:, 60:] = 0  # the right side and most of the top and bottom gone: a guessed outline
    assert _outline_cover(quad, edges) < 0.5


def _ruled_page(grid_rgb, h=200, w=800, seed=0):
    """Paper with a shadow gradient, a ruled grid in grid_rgb (minor every 8 px, major every 40 px) and a black
    sine trace drawn over it; returns (RGB page, bool mask of the trace)."""
    rng = np.random.default_rng(seed)
    page = np.full((h, w, 3), (250, 247, 238), np.float32)
    for k in range(0, w, 8):
        page[:, k] = page[:, k] * 0.6 + np.float32(grid_rgb) * 0.4 if k % 40 else grid_rgb
    for k in range(0, h, 8):
        page[k] = page[k] * 0.6 + np.float32(grid_rgb) * 0.4 if k % 40 else grid_rgb
    page *= np.linspace(0.55, 1.0, w, dtype=np.float32)[None, :, None]  # a shadow across the sheet
    x = np.arange(20, w - 20)
    y = h / 2 + 40 * np.sin(x / 23.0) + rng.normal(0, 1, len(x))
    pts = np.round(np.stack([x, y], 1)).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [pts], False, 255, 2)
    page[mask > 0] = (18, 18, 22)
    return np.clip(page, 0, 255).astype(np.uint8), mask > 0


@pytest.mark.parametrize("grid_rgb", [(235, 120, 120), (150, 150, 150), (70, 70, 70)], ids=["red", "grey", "black"])
def test_trace_map_keeps_the_ink_and_drops_grid_and_shadow(grid_rgb):
    page, trace = _ruled_page(grid_rgb)
    out = trace_map(page)
    assert out.shape == trace.shape and out.dtype == np.uint8
    assert np.median(out[trace]) < 60  # the trace stays black
    away = ~cv2.dilate(trace.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.mean(out[away] < 200) < 0.01  # grid lines (even black ones) and the shadow are gone
    raw = page.max(axis=2)
    assert np.mean(raw[away] < 200) > 0.05  # ... and they were there to begin with


def test_trace_map_keeps_a_flat_baseline_that_spans_the_row():
    """A 3x4 row's isoelectric line covers most of the page width, like a ruled line; the beats leaving it are what
    tells them apart, and the baseline must survive (a row median would erase it)."""
    page, _ = _ruled_page((150, 150, 150))
    h, w = page.shape[:2]
    base = np.zeros((h, w), np.uint8)
    x = np.arange(20, w - 20)
    y = np.full(len(x), 33.0)
    for beat in range(60, w - 40, 70):  # a QRS spike every 70 px: ~15 % of the row off the baseline
        y[(x > beat) & (x < beat + 10)] = 33 - 20 * np.sin(np.pi * (x[(x > beat) & (x < beat + 10)] - beat) / 10)
    cv2.polylines(base, [np.round(np.stack([x, y], 1)).astype(np.int32)], False, 255, 2)
    page[base > 0] = (18, 18, 22)
    out = trace_map(page)
    flat = (base > 0) & (np.abs(np.arange(h)[:, None] - 33) <= 1)
    assert flat.sum() > 0.7 * (w - 40) and np.median(out[flat]) < 80
