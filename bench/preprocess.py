"""How much preprocessing costs on top of just reading a BHF-sized photo, on one core.

    python -m bench.preprocess                       # 3 photo renders of 3460 x 1900 px, OpenCV ROI detector
    python -m bench.preprocess --weights=outputs/roi/yolov8n/best.pt     # also time the YOLO detector
    python -m bench.preprocess --n=5 --repeats=5 --size=512,768

Prints per image (median over repeats): PNG decode alone (the floor: the cache has to read every photo), the whole
roi_clahe step as build_cache runs it (decode + detect + crop/resize + CLAHE + PNG write) and its ratio to decode
(target <= 1.5), a breakdown of the extra work, and the check behind running CLAHE after the resize: the mean
absolute difference between CLAHE-then-resize and resize-then-CLAHE, with both timings.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from src import preprocess as P
from src import synth
from src.compose import make_image
from src.config import parse_args
from src.roi import downscale, classical_roi, detect_roi_info
from src.utils import imread, imwrite, set_threads


@dataclasses.dataclass
class BenchConfig:
    """Time decode vs the full roi_clahe step on BHF-sized photo PNGs (one core)."""
    n: int = 3  # photos (rendered once into a temp folder)
    photo_hw: tuple[int, ...] = (1900, 3460)  # photo height H, width W (BHF photos)
    size: tuple[int, ...] = (512, 768)  # preprocess output H W
    repeats: int = 3  # timings are medians over this many runs
    weights: str = ""  # YOLO ROI weights to time as well ('' = OpenCV detector only)
    seed: int = 2024  # render seed


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None):
    cfg = parse_args(BenchConfig, argv)
    set_threads(1)  # one core: the cache builder runs one such process per core
    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    try:
        return _run(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(cfg: BenchConfig, tmp: Path) -> dict:
    files = []
    for i in range(cfg.n):
        rng = np.random.default_rng([cfg.seed, i])
        signal, smeta = synth.synthesize(rng)
        img, _ = make_image(signal, smeta["fs"], rng, style="photo", hw=tuple(cfg.photo_hw))
        imwrite(tmp / f"photo{i}.png", img)
        files.append(tmp / f"photo{i}.png")
    mb = np.mean([f.stat().st_size for f in files]) / 2**20
    print(f"{cfg.n} photo PNGs {cfg.photo_hw[1]}x{cfg.photo_hw[0]} ({mb:.1f} MB each), output "
          f"{cfg.size[0]}x{cfg.size[1]}, 1 thread, median of {cfg.repeats}")

    job = P.CacheJob(strategy="roi_clahe", size=tuple(cfg.size), dst=str(tmp / "out"))
    rows = {k: [] for k in ("decode", "roi_clahe", "yolo", "downscale", "detect", "crop+resize", "clahe", "write",
                            "clahe_full", "diff")}
    for f in files:
        rows["decode"].append(_median_time(lambda: imread(f), cfg.repeats))
        rows["roi_clahe"].append(_median_time(lambda: P._cache_one((f.stem, str(f)), job), cfg.repeats))
        if cfg.weights:
            yjob = dataclasses.replace(job, roi_weights=cfg.weights, dst=str(tmp / "outy"))
            P._cache_one((f.stem, str(f)), yjob)  # load the model once
            rows["yolo"].append(_median_time(lambda: P._cache_one((f.stem, str(f)), yjob), cfg.repeats))
        img = imread(f)
        rows["downscale"].append(_median_time(lambda: downscale(img, 640), cfg.repeats))
        rows["detect"].append(_median_time(lambda: classical_roi(img), cfg.repeats))
        x0, y0, x1, y1 = (int(v) for v in detect_roi_info(img)["box"])
        crop = img[y0:y1, x0:x1]
        rows["crop+resize"].append(_median_time(lambda: P._resize(crop, job.size), cfg.repeats))
        small = P._resize(crop, job.size)
        rows["clahe"].append(_median_time(lambda: P.clahe_lightness(small, 2.0, 8), cfg.repeats))
        out = P.clahe_lightness(small, 2.0, 8)
        rows["write"].append(_median_time(lambda: imwrite(tmp / "w.png", out, png_compression=job.png_compression),
                                          cfg.repeats))
        # CLAHE on the full-resolution crop, then resize: what the cheaper order is compared against
        rows["clahe_full"].append(_median_time(lambda: P._resize(P.clahe_lightness(crop, 2.0, 8), job.size), 1))
        ref = P._resize(P.clahe_lightness(crop, 2.0, 8), job.size)
        rows["diff"].append(float(np.abs(ref.astype(np.int16) - out.astype(np.int16)).mean()))

    ms = {k: 1000 * np.mean(v) for k, v in rows.items() if v and k != "diff"}
    print(f"  decode alone (imread)                   {ms['decode']:7.1f} ms")
    print(f"  roi_clahe, OpenCV detector (whole step) {ms['roi_clahe']:7.1f} ms   = "
          f"{ms['roi_clahe'] / ms['decode']:.2f} x decode (target <= 1.5)")
    if rows["yolo"]:
        print(f"  roi_clahe, YOLO detector (whole step)   {ms['yolo']:7.1f} ms   = "
              f"{ms['yolo'] / ms['decode']:.2f} x decode")
    print("  breakdown of the extra work:")
    for k in ("downscale", "detect", "crop+resize", "clahe", "write"):
        note = " (includes the downscale)" if k == "detect" else ""
        print(f"    {k:<12} {ms[k]:7.1f} ms{note}")
    print(f"  CLAHE on the full-res crop then resize: {ms['clahe_full']:7.1f} ms vs "
          f"{ms['crop+resize'] + ms['clahe']:.1f} ms resize-then-CLAHE; mean |difference| "
          f"{np.mean(rows['diff']):.2f} grey levels (of 255)")
    return ms


if __name__ == "__main__":
    main()
