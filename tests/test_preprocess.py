"""Preprocessing: the ROI crop keeps every lead, rectification lands the page corners on the output corners, and the
cache skips broken images, resumes, refuses mixed settings, shards and merges, and still reads the old preprocess.yaml
format. (The page geometry alone: tests/test_page.py.)"""
import dataclasses
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from src import compose, photo, render, synth
from src.preprocess import (CacheJob, PreprocessConfig, build_cache, in_shard, load_config, main, parse_shard,
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


def test_full_falls_back_when_no_page_is_found():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8), (0, 0), 3)  # no sheet at all
    out, info = preprocess_image(img, PreprocessConfig(strategy="full", size=(64, 96)))
    assert info["fallback"] and out.shape == (64, 96, 3)
    assert info["box"] is not None  # roi_clahe did the work


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
    job = CacheJob(src=str(src), dst=str(dst), size=(64, 96), workers=1)
    idx = build_cache(job)
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
    build_cache(job)
    assert "4 already cached, 2 to do" in capsys.readouterr().out
    assert (dst / "images" / "ok1.png").stat().st_mtime_ns == mtime
    assert (dst / "index.csv").stat().st_mtime_ns == index_mtime  # nothing changed: not rewritten (read-only media)
    # other image settings into the same cache are refused
    with pytest.raises(SystemExit, match="other settings"):
        build_cache(dataclasses.replace(job, clahe_clip=4.0))
    # ... but other job settings are not: they change no pixel
    build_cache(dataclasses.replace(job, png_compression=6, limit=5))
    assert "4 already cached, 1 to do" in capsys.readouterr().out


def test_a_cache_from_other_preprocessing_code_is_refused(tmp_path, photos, monkeypatch):
    import yaml
    from src import preprocess as pp
    src = _folder(tmp_path, photos, n=2)
    dst = tmp_path / "cache"
    job = CacheJob(src=str(src), dst=str(dst), size=(64, 96), workers=1)
    build_cache(job)
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
        build_cache(job)
    with pytest.raises(SystemExit, match="version 1, this code makes version 2.*retrain"):
        load_config(dst)


def test_preprocess_yaml_records_the_pixel_settings_and_still_reads_the_old_format(tmp_path, photos, capsys):
    """preprocess.yaml holds the pixel settings (PreprocessConfig), the weights' digest, the code version and the
    source, not the job's. Caches and run folders written before that split recorded every option (dst, workers,
    shard, limit, png_compression too): they still load, and such a cache is still resumed into."""
    import yaml
    from src.preprocess import export_config
    src = _folder(tmp_path, photos, n=2)
    dst = tmp_path / "cache"
    job = CacheJob(src=str(src), dst=str(dst), strategy="full", size=(64, 96), workers=1, limit=3)
    build_cache(job)
    saved = yaml.safe_load((dst / "preprocess.yaml").read_text())
    pixel_keys = {f.name for f in dataclasses.fields(PreprocessConfig)}
    assert set(saved) == pixel_keys | {"roi_weights_sha256", "pixels_version", "src"} and saved["src"] == str(src)
    old = (f"src: {src}\ndst: {dst}\nstrategy: full\nsize:\n- 64\n- 96\nmargin: 0.02\nclahe_clip: 2.0\n"
           f"clahe_grid: 8\nroi_weights: ''\nroi_conf: 0.25\nout_ext: .png\njpeg_quality: 95\npng_compression: 1\n"
           f"workers: 1\nshard: ''\nlimit: 3\nroi_weights_sha256: ''\npixels_version: 1\n")  # as the old code wrote
    (dst / "preprocess.yaml").write_text(old)
    assert load_config(dst) == PreprocessConfig(strategy="full", size=(64, 96))
    capsys.readouterr()
    build_cache(dataclasses.replace(job, limit=0))
    assert "2 already cached, 2 to do" in capsys.readouterr().out  # resumed, not refused
    assert (dst / "preprocess.yaml").read_text() == old  # and left as it was
    run = tmp_path / "run"  # a run folder carries the cache's file (src.train copies it): infer reads the same
    run.mkdir()
    export_config(dst, run)
    assert load_config(run) == load_config(dst)


def test_shards_and_merge(tmp_path, photos):
    src = _folder(tmp_path, photos, n=5)
    df = resolve_sources(src)
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("3/3")
    with pytest.raises(SystemExit, match="shard '2/2'"):  # on the command line: a message, before any image
        main([f"--src={src}", f"--dst={tmp_path / 'never'}", "--shard=2/2"])
    assert not (tmp_path / "never").exists()
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
