"""ROI detector quality: mean IoU of predicted vs true grid box on held-out photo renders, YOLO and OpenCV fallback.

    python -m bench.roi --weights=outputs/roi/yolov8n/best.pt      # evaluate trained weights
    python -m bench.roi --weights=... --style=scan --n_test=300    # held-out scans instead (the Stage I images,
                                                                   #   cropped by the fallback in the CPU demo)
    python -m bench.roi                                            # no weights: train a small YOLO here first (CPU,
                                                                   #   capped at --minutes), then evaluate it
    python -m bench.roi --n_train=300 --imgsz=160 --minutes=4.5 --n_test=60      # a quick, weaker run

The held-out photos come from their own seed, never used by make_data. Training photos (when training here) are
written as a YOLO set under outputs/bench/roi/data-<n>-<W>x<H>/ (reused by later runs) and the run goes to
outputs/bench/roi/run/ (replaced by each training run).
Prints mean / median IoU, the share with IoU >= 0.9, and ms per image for YOLO alone, the fallback alone, and the
two combined as preprocessing uses them (YOLO, fallback below --conf); timings on one thread.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import numpy as np

from src import synth
from src.compose import make_image
from src import roi
from src.config import parse_args, paths
from src.utils import parallel_map, set_threads


@dataclasses.dataclass
class RoiBenchConfig:
    """Mean IoU of the ROI detectors on held-out photo renders."""
    weights: str = ""  # YOLO weights to evaluate; '' = train a small one here first
    n_test: int = 60  # held-out images
    style: str = "photo"  # held-out images: photo | scan (compose.make_image's styles); training is always on photos
    scan_hw: tuple[int, ...] = (680, 880)  # scan height H, width W with --style=scan (the demo scans' size)
    # Training here: YOLOv8n from scratch on one CPU thread. At 160 px one input pixel is ~8 photo pixels and 4.5 min
    # reached 0.83; these defaults reach the 0.90 target with room (mean IoU 0.96 after 20 min, 26 epochs, on a
    # shared 2-core machine; 35 min gave 0.965): 320 px trained as 320x192 rectangles (src.roi's rect) with one
    # optimiser step per batch (src.roi's nbs), and 1000 photos, since rendering is cheap (~50 photos/s).
    n_train: int = 1000  # training photos when training here (80% train, 20% val)
    photo_hw: tuple[int, ...] = (640, 1152)  # photo height H, width W
    imgsz: int = 320  # YOLO input size when training here
    epochs: int = 300  # upper bound on epochs; --minutes stops first (ultralytics fits the LR schedule into it)
    minutes: float = 20.0  # training time cap
    batch: int = 16  # training batch
    overrides: str = ""  # more ultralytics train arguments (see src.roi train --overrides)
    conf: float = 0.25  # YOLO confidence below which the combined detector uses the fallback
    seed: int = 777  # render seed of the held-out photos (training photos use seed + 1)
    workers: int = 0  # render processes (0: one per core)
    threads: int = 1  # torch threads and dataloader workers while training (1: fits a shared 2-core machine)
    out: str = ""  # work folder (default outputs/bench/roi)


def _render(i: int, seed: int, hw: tuple[int, int], style: str = "photo"):
    rng = np.random.default_rng([seed, i])
    signal, smeta = synth.synthesize(rng)
    img, meta = make_image(signal, smeta["fs"], rng, style=style, hw=hw)
    return i, img, meta["roi_box"]


def _photos(n, seed, hw, workers, desc, style="photo"):
    """[(RGB image, true box)] in index order."""
    return [(img, box) for _, img, box in sorted(_render_all(n, seed, hw, workers, desc, style),
                                                 key=lambda r: r[0])]


def _render_all(n, seed, hw, workers, desc, style="photo"):
    return parallel_map(partial(_render, seed=seed, hw=tuple(hw), style=style), range(n), workers=workers,
                        desc=desc)


def training_set(work: Path, n: int, seed: int, hw, workers: int) -> Path:
    """The YOLO set of n training photos (first n // 5 are val), rendered once per (n, hw) and reused."""
    root = work / f"data-{n}-{hw[1]}x{hw[0]}"
    if not (root / "dataset.yaml").exists():
        n_val = max(1, n // 5)
        # streamed to disk as rendered: 800 photos held in memory would take ~2 GB
        roi.write_yolo_dataset(root, ((f"p{i:05d}", "val" if i < n_val else "train", img, box)
                                      for i, img, box in _render_all(n, seed, hw, workers, "render train")))
    return root / "dataset.yaml"


def _evaluate(samples, weights, conf, yolo_only):
    roi.evaluate(samples[:1], weights, conf=conf, yolo_only=yolo_only)  # warm-up: model load is not per image
    t0 = time.perf_counter()
    r = roi.evaluate(samples, weights, conf=conf, yolo_only=yolo_only)
    r["ms"] = 1000 * (time.perf_counter() - t0) / max(1, len(samples))
    return r


def main(argv=None):
    cfg = parse_args(RoiBenchConfig, argv)
    work = Path(cfg.out) if cfg.out else paths().outputs / "bench" / "roi"
    weights = cfg.weights
    # Render before training: forking worker processes after torch has run its thread pool can hang them.
    if cfg.style not in ("photo", "scan"):
        raise SystemExit(f"--style must be photo or scan, got {cfg.style!r}")
    test_hw = cfg.photo_hw if cfg.style == "photo" else cfg.scan_hw
    test = _photos(cfg.n_test, cfg.seed, test_hw, cfg.workers, "render test", cfg.style)
    if not weights:
        data = training_set(work, cfg.n_train, cfg.seed + 1, cfg.photo_hw, cfg.workers)
        t0 = time.time()
        m = roi.train(roi.RoiTrainConfig(data=str(data), out=str(work / "run"), epochs=cfg.epochs, imgsz=cfg.imgsz,
                                         batch=cfg.batch, minutes=cfg.minutes, workers=cfg.threads,
                                         threads=cfg.threads, overrides=cfg.overrides))
        weights = str(work / "run" / "best.pt")
        print(f"trained YOLOv8n from scratch: {m['epochs']} epochs at {cfg.imgsz} px on {cfg.n_train} photos in "
              f"{time.time() - t0:.0f} s (CPU)")
    # Timed on one thread, as each cache worker runs: with two, a busy neighbour on one core stalls OpenMP barriers
    # and single predictions swing from 20 ms to ~900 ms.
    set_threads(1)
    rows = {"YOLO": _evaluate(test, weights, cfg.conf, True),
            "fallback (OpenCV)": _evaluate(test, None, cfg.conf, False),
            f"combined (conf {cfg.conf})": _evaluate(test, weights, cfg.conf, False)}
    print(f"ROI IoU on {cfg.n_test} held-out {test_size[0]}x{test_size[1]} {cfg.style} renders (seed {cfg.seed}):")
    for name, r in rows.items():
        print(f"  {name:<22} mean {r['mean_iou']:.3f}  median {r['median_iou']:.3f}  IoU>=0.9 "
              f"{100 * r['frac_iou_ge_0.9']:5.1f}%  IoU<0.5 {100 * r['frac_iou_lt_0.5']:5.1f}%  {r['ms']:6.1f} ms/img  "
              f"methods {r['methods']}")
    return rows


if __name__ == "__main__":
    main()
