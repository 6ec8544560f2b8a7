"""Preprocessing: the ROI crop keeps every lead, rectification lands the page corners on the output corners, and the
cache skips broken images, resumes, refuses mixed settings, shards and merges."""
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from src import compose, photo, render, synth
from src.preprocess import (PreprocessConfig, _outline_cover, build_cache, in_shard, load_config, main, parse_shard,
                            preprocess_image, read_cache, resolve_sources)
from src.utils import imread, imwrite


def _photo(seed, hw=(352, 640)):
    rng = np.random.default_rng([seed, 5])
    signal, smeta = synth.synthesize(rng)
    return compose.make_image(signal, smeta["fs"], rng, style="photo", hw=hw)


@pytest.fixture(scope="module")
def photos():
    return [_photo(s) for s in range(10)]


def test_roi_clahe_crop_contains_every_lead(photos):
    cfg = PreprocessConfig(strategy="roi_clahe", size=(128, 192))
    complete, covered = 0, []
    for img, meta in photos:
        out, info = preprocess_image(img, cfg)
        assert out.shape == (128, 192, 3) and out.dtype == np.uint8
        x0, y0, x1, y1 = info["box"]
        h, w = img.shape[:2]
        inside = []
        for lead in meta["leads"]:
            bx0, by0, bx1, by1 = np.clip(lead["bbox"], 0, [w, h, w, h])
            if bx1 <= bx0 or by1 <= by0:
                continue  # off-frame in this photo
            ix = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
            inside.append(ix / ((bx1 - bx0) * (by1 - by0)))
        complete += min(inside) > 0.97
        covered += inside
    # the OpenCV fallback (no weights here) crops every lead on ~9 in 10 tiny renders; YOLO does better
    assert complete >= 8, complete
    assert np.mean(covered) > 0.97


def _clean_photo(seed, tilt, tilt_dir, roll, background, hw=(450, 800)):
    """A controlled photo: no bend, clutter or shadows, page fully in frame; exact corners from its homography."""
    rng = np.random.default_rng(seed)
    signal, smeta = synth.synthesize(rng)
    page, meta = render.render_ecg(signal, smeta["fs"], render.RenderParams(dpi=80, grid="red"), rng)
    p = photo.PhotoParams(out_hw=hw, fill=0.8, center=(0.5, 0.5), tilt=tilt, tilt_dir=tilt_dir, roll=roll,
                          curl=0.0, background=background, bg_rgb=(70, 60, 50), clutter=0, light_grad=0.1,
                          vignette=0.1, shadows=0, glare=0.0, defocus=0.0, motion=0.0, noise=2.0, jpeg=0)
    return photo.photograph(page, meta, p, rng)


@pytest.mark.parametrize("seed,tilt,tilt_dir,roll,background", [(1, 14, 30, 3, "plain"), (2, 22, 200, -6, "wood"),
                                                                 (3, 8, 120, 1, "cloth")])
def test_full_rectification_maps_page_corners(seed, tilt, tilt_dir, roll, background):
    img, meta = _clean_photo(seed, tilt, tilt_dir, roll, background)
    cfg = PreprocessConfig(strategy="full", size=(256, 384))
    out, info = preprocess_image(img, cfg)
    assert info["fallback"] == "" and info["quad"] is not None
    h, w = cfg.size
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) - 0.5
    m = cv2.getPerspectiveTransform(np.float32(info["quad"]), corners)
    mapped = cv2.perspectiveTransform(np.float32(meta["paper_quad"]).reshape(-1, 1, 2), m).reshape(-1, 2)
    assert np.abs(mapped - corners).max() < 3.0, mapped - corners
    assert out.shape == (256, 384, 3)


def test_full_finds_a_page_lying_on_a_blank_sheet():
    """A blank sheet under the page's edge merges with it in the paper mask and in the edge outlines (the commonest
    fallback on the demo photos); the page's four straight sides still give its corners."""
    img, meta = _clean_photo(5, 10, 70, 4, "wood")
    h, w = img.shape[:2]
    page = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(page, np.round(meta["paper_quad"]).astype(np.int32), 1)
    blank = np.zeros((h, w), np.uint8)
    box = cv2.boxPoints(((0.22 * w, 0.45 * h), (0.5 * w, 0.75 * h), 20.0))
    cv2.fillConvexPoly(blank, np.round(box).astype(np.int32), 1)
    under = (blank > 0) & (page == 0)
    assert under.sum() > 0.05 * h * w and (blank & page).sum() > 0  # the blank sheet reaches under the page
    img = img.copy()
    img[under] = (215, 218, 225)  # a bluish-grey blank sheet, like the demo clutter
    out, info = preprocess_image(img, PreprocessConfig(strategy="full", size=(64, 96)))
    assert info["fallback"] == "", info["fallback"]
    truth = np.float64(meta["paper_quad"])
    q = np.float64(info["quad"])
    err = min(np.linalg.norm(np.roll(q, k, axis=0) - truth, axis=1).max() for k in range(4))
    assert err < 0.01 * np.linalg.norm(truth[2] - truth[0]), err


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


def test_full_falls_back_when_no_page_is_found():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8), (0, 0), 3)  # no sheet at all
    out, info = preprocess_image(img, PreprocessConfig(strategy="full", size=(64, 96)))
    assert info["fallback"] and out.shape == (64, 96, 3)
    assert info["box"] is not None  # roi_clahe did the work


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
    from src.preprocess import trace_map
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
    from src.preprocess import trace_map
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


def test_trace_strategy_keeps_the_leads_where_the_page_has_them():
    img, meta = _clean_photo(4, 12, 60, 2, "wood")
    cfg = PreprocessConfig(strategy="trace", size=(128, 384))
    out, info = preprocess_image(img, cfg)
    assert out.shape == (128, 384, 3) and info["fallback"] == ""
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # grey, stored as RGB
    h, w = cfg.size
    m = cv2.getPerspectiveTransform(np.float32(info["quad"]), np.float32([[0, 0], [w, 0], [w, h], [0, h]]) - 0.5)
    pts = np.concatenate([np.stack([lead["x"], lead["y"]], 1) for lead in meta["leads"]]).astype(np.float32)
    pts = pts[np.isfinite(pts).all(1)]
    xy = np.round(cv2.perspectiveTransform(pts.reshape(-1, 1, 2), m).reshape(-1, 2)).astype(int)
    xy = xy[(xy[:, 0] >= 1) & (xy[:, 0] < w - 1) & (xy[:, 1] >= 1) & (xy[:, 1] < h - 1)]
    grey = out[..., 0]
    darkest = np.min([grey[xy[:, 1] + dy, xy[:, 0] + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    assert np.mean(darkest < 160) > 0.9, np.mean(darkest < 160)  # the traces survive where the geometry puts them
    assert np.mean(grey < 128) < 0.08  # and little else is ink: the grid is gone


def test_raw_and_clahe(photos):
    img, _ = photos[0]
    raw, info = preprocess_image(img, PreprocessConfig(strategy="raw", size=(100, 150)))
    assert raw.shape == (100, 150, 3) and info["box"] is None
    ref = cv2.resize(img, (150, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(raw.astype(int) - ref).mean() < 6  # the two-step shrink is close to one INTER_AREA
    flat = (img.astype(np.float32) * 0.3 + 100).astype(np.uint8)  # a washed-out photo
    a, _ = preprocess_image(flat, PreprocessConfig(size=(128, 192), clahe_clip=0))
    b, _ = preprocess_image(flat, PreprocessConfig(size=(128, 192), clahe_clip=3.0))
    lum = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2LAB)[..., 0].std()  # noqa: E731
    assert lum(b) > 1.3 * lum(a)
    with pytest.raises(ValueError):
        preprocess_image(img[..., 0], PreprocessConfig())
    with pytest.raises(ValueError, match="strategy"):
        PreprocessConfig(strategy="crop")


def _folder(tmp_path, photos, n=4):
    src = tmp_path / "src"
    for i, (img, _) in enumerate(photos[:n]):
        imwrite(src / f"ok{i}.png", img)
    data = (src / "ok0.png").read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    (src / "garbage.jpg").write_bytes(b"not an image at all")
    return src


def test_cache_skips_broken_resumes_and_matches_the_function(tmp_path, photos, capsys):
    src = _folder(tmp_path, photos)
    dst = tmp_path / "cache"
    cfg = PreprocessConfig(size=(64, 96), workers=1)
    idx = build_cache(resolve_sources(src), dst, cfg)
    assert len(idx) == 6 and set(idx["id"]) == {"ok0", "ok1", "ok2", "ok3", "truncated", "garbage"}
    bad = idx[idx["status"] == "skipped"].set_index("id")
    assert set(bad.index) == {"truncated", "garbage"}
    assert "truncated.png" in bad.loc["truncated", "error"] and "garbage.jpg" in bad.loc["garbage", "error"]
    assert (dst / "index.csv").exists() and (dst / "preprocess.yaml").exists()
    assert "skipped truncated" in capsys.readouterr().out
    cache = read_cache(dst)
    assert len(cache) == 4
    # the cached PNG is exactly what preprocess_image returns: one code path for train and infer
    cached = imread(cache.set_index("id").loc["ok1", "path"])
    direct, _ = preprocess_image(imread(src / "ok1.png"), load_config(dst))
    assert np.array_equal(cached, direct)
    # resume: only the two broken ones are tried again; finished images are not rewritten
    mtime = (dst / "images" / "ok1.png").stat().st_mtime_ns
    index_mtime = (dst / "index.csv").stat().st_mtime_ns
    build_cache(resolve_sources(src), dst, cfg)
    assert "4 already cached, 2 to do" in capsys.readouterr().out
    assert (dst / "images" / "ok1.png").stat().st_mtime_ns == mtime
    assert (dst / "index.csv").stat().st_mtime_ns == index_mtime  # nothing changed: not rewritten (read-only media)
    # other image settings into the same cache are refused
    with pytest.raises(SystemExit, match="other settings"):
        build_cache(resolve_sources(src), dst, PreprocessConfig(size=(64, 96), clahe_clip=4.0))


def test_a_cache_from_other_preprocessing_code_is_refused(tmp_path, photos, monkeypatch):
    import yaml
    from src import preprocess as pp
    src = _folder(tmp_path, photos, n=2)
    dst = tmp_path / "cache"
    cfg = PreprocessConfig(size=(64, 96), workers=1)
    build_cache(resolve_sources(src), dst, cfg)
    assert yaml.safe_load((dst / "preprocess.yaml").read_text())["pixels_version"] == pp.PIXELS_VERSION
    # a cache written before the version was recorded counts as version 1
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    d = yaml.safe_load((dst / "preprocess.yaml").read_text())
    del d["pixels_version"]
    (legacy / "preprocess.yaml").write_text(yaml.safe_dump(d))
    assert load_config(legacy).size == (64, 96)
    # the code changes what it draws: the old cache is neither resumed into nor trusted for inference
    monkeypatch.setattr(pp, "PIXELS_VERSION", pp.PIXELS_VERSION + 1)
    with pytest.raises(SystemExit, match=rf"{re.escape(str(dst))}.*version 1, this code makes version 2.*delete"):
        build_cache(resolve_sources(src), dst, cfg)
    with pytest.raises(SystemExit, match="version 1, this code makes version 2.*retrain"):
        load_config(dst)


def test_shards_and_merge(tmp_path, photos):
    src = _folder(tmp_path, photos, n=5)
    df = resolve_sources(src)
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("3/3")
    parts = [in_shard(df["id"], (i, 2)) for i in range(2)]
    assert (np.add(*parts) == 1).all()  # every id in exactly one shard
    dst = tmp_path / "cache"
    main([f"--src={src}", f"--dst={dst}", "--size", "48", "72", "--workers=1", "--shard=0/2"])
    with pytest.raises(SystemExit, match="other settings"):
        main([f"--src={src}", f"--dst={dst}", "--size", "48", "64", "--workers=1", "--shard=1/2"])
    main([f"--src={src}", f"--dst={dst}", "--size", "48", "72", "--workers=1", "--shard=1/2"])
    assert not (dst / "index.csv").exists()
    main(["merge", f"--dst={dst}"])
    idx = pd.read_csv(dst / "index.csv", dtype={"id": str})
    assert sorted(idx["id"]) == sorted(df["id"]) and (idx["status"] == "ok").sum() == 5
    assert imread(dst / "images" / "ok4.png").shape == (48, 72, 3)


def test_sources(tmp_path, photos):
    src = _folder(tmp_path, photos, n=2)
    pd.DataFrame({"id": ["a", "b"], "path": ["src/ok0.png", str(src / "ok1.png")]}).to_csv(tmp_path / "l.csv",
                                                                                           index=False)
    df = resolve_sources(tmp_path / "l.csv")
    assert list(df["id"]) == ["a", "b"] and df["path"].map(lambda p: (tmp_path / p).exists()).all()
    comp = tmp_path / "comp"
    for split, name in (("train", "t1"), ("test", "u1")):
        imwrite(comp / split / f"{name}.png", photos[0][0][:50, :80])
    pd.DataFrame({"id": ["t1"], "MI": [1]}).to_csv(comp / "train.csv", index=False)
    assert sorted(resolve_sources(comp)["id"]) == ["t1", "u1"]  # competition root: train/ and test/
    assert list(resolve_sources(comp / "train.csv")["id"]) == ["t1"]  # CSV with images in train/
    # the id column is sample_submission.csv's first column, whatever its name
    pd.DataFrame({"record": ["t1"], "MI": [1]}).to_csv(comp / "train.csv", index=False)
    pd.DataFrame({"record": ["u1"], "MI": [0.5]}).to_csv(comp / "sample_submission.csv", index=False)
    assert list(resolve_sources(comp / "train.csv")["id"]) == ["t1"]
    pd.DataFrame({"id": ["t1"], "MI": [1]}).to_csv(comp / "train.csv", index=False)
    with pytest.raises(SystemExit, match=r"\['record'\] of sample_submission.csv are missing"):
        resolve_sources(comp / "train.csv")
    with pytest.raises(SystemExit, match="no images"):
        resolve_sources(tmp_path / "comp" / "..")
