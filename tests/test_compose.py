"""src/compose.py: sampled images at the asked (H, W), the page dpi rule, the image job's sidecars and resume, the
render CLI."""
import json

import cv2
import numpy as np
import pandas as pd

from src import compose, photo, render
from src.config import LEADS
from tests.test_render import check_round_trip
from tests.test_signals import _write_record


def test_make_image_deterministic_and_sized():
    from src import synth
    sig, smeta = synth.synthesize(synth.record_rng(0, 7))
    a, ma = compose.make_image(sig, smeta["fs"], np.random.default_rng(11), "scan", hw=(425, 550))
    b, mb = compose.make_image(sig, smeta["fs"], np.random.default_rng(11), "scan", hw=(425, 550))
    c, _ = compose.make_image(sig, smeta["fs"], np.random.default_rng(12), "scan", hw=(425, 550))
    assert a.shape == (425, 550, 3) and np.array_equal(a, b) and ma == mb and not np.array_equal(a, c)
    assert json.loads(json.dumps(ma)) == ma
    for seed in range(6):  # sampled diversity keeps every label consistent
        img, meta = compose.make_image(sig, smeta["fs"], np.random.default_rng(seed), "scan", hw=(425, 550))
        assert meta["size"] == [550, 425] and img.shape == (425, 550, 3)
        x0, y0, x1, y1 = meta["roi_box"]
        assert all(x0 <= lead["bbox"][0] and lead["bbox"][2] <= x1 and y0 <= lead["bbox"][1] and
                   lead["bbox"][3] <= y1 for lead in meta["leads"])
        check_round_trip(meta, sig, smeta["fs"])


def test_page_dpi_fits_the_page_to_the_image():
    letter = render.RenderParams(paper="letter", dpi=123.0)  # 11 x 8.5 in
    assert compose.page_dpi(letter, None, None) == 123.0  # no size asked: the page's own dpi
    assert compose.page_dpi(letter, (425, 550), None) == 50.0  # 550 / 11 = 425 / 8.5 = 50: fits exactly
    assert compose.page_dpi(letter, (425, 1000), None) == 50.0  # the height limits
    assert compose.page_dpi(letter, (100, 100), None) == 40.0  # never below 40 dpi
    # a photographed page: its height is `fill` of the frame's, rounded to 5 dpi
    assert compose.page_dpi(letter, (425, 550), photo.PhotoParams(out_hw=(1900, 3460), fill=0.85)) == 190.0
    a4 = render.RenderParams(paper="a4")  # 297 x 210 mm: 1170 px / 11.69 in and 827 px / 8.27 in both hold 100 dpi
    assert compose.page_dpi(a4, (827, 1170), None) == 100.0


def test_image_job_writes_image_then_sidecar_and_reads_it_back(tmp_path):
    from src import synth
    from src.utils import imread
    sig, smeta = synth.synthesize(synth.record_rng(0, 2))
    job = compose.ImageJob(str(tmp_path / "a.png"), str(tmp_path / "a.json"), (7, 1), "photo", (176, 320), "leads")
    assert not job.done()
    img, meta = job.draw(sig, smeta["fs"])
    ref, _ = compose.make_image(sig, smeta["fs"], np.random.default_rng([7, 1]), "photo", (176, 320))
    assert np.array_equal(img, ref) and img.shape == (176, 320, 3)
    job.write(img, meta, {"row": {"id": "a"}, "size": meta["size"]})
    assert job.done() and job.read() == {"row": {"id": "a"}, "size": [320, 176]}
    assert np.array_equal(imread(tmp_path / "a.png"), img)
    mask = cv2.imread(str(tmp_path / "a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (176, 320) and mask.max() > 0 and set(np.unique(mask)) <= set(range(len(meta["leads"]) + 1))


def test_cli_windows_resume_and_bad_records(tmp_path):
    src_dir, out = tmp_path / "signals", tmp_path / "out"
    src_dir.mkdir()
    _write_record(src_dir, "long", 25.0, fs=200, names=LEADS)  # 25 s: two 10-s pages
    _write_record(src_dir, "short", 3.0, fs=200, names=LEADS)  # shorter than a page: an error naming it
    (src_dir / "broken.hea").write_text("broken 12 500\n")  # header naming no signal lines
    argv = ["--signals", str(src_dir), "--out", str(out), "--hw", "340,440", "--workers", "1", "--preview",
            "--masks", "trace", "--layout", "3x4", "--seed", "4"]
    compose.main(argv)
    idx = pd.read_csv(out / "index.csv")
    ok = idx[idx.status == "ok"]
    assert sorted(ok.id) == ["long_00_w00", "long_00_w01"]
    bad = idx[idx.status == "error"].set_index("id").error
    assert len(bad) == 2 and "broken.hea" in bad["broken_00"] and "short.hea" in bad["short_00"]
    assert "3 s long" in bad["short_00"]
    side = json.loads((out / "long_00_w01.json").read_text())
    assert side["rng_seed"][0] == 4 and side["params"]["t0"] == 10.0 and side["size"] == [440, 340]
    assert side["config"]["hw"] == [340, 440]
    assert (out / "preview.png").exists() and (out / "long_00_w00_mask.png").exists()
    stamp = (out / "long_00_w00.png").stat().st_mtime_ns
    compose.main(argv)  # resume: nothing is redrawn
    assert (out / "long_00_w00.png").stat().st_mtime_ns == stamp
    assert pd.read_csv(out / "index.csv").equals(idx)


def test_cli_default_synthesises(tmp_path):
    compose.main(["--out", str(tmp_path), "--n-synth", "2", "--hw", "340,440", "--workers", "1"])
    idx = pd.read_csv(tmp_path / "index.csv")
    assert list(idx.status) == ["ok", "ok"] and {"MI", "AF"} <= set(idx.columns)
