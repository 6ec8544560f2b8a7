"""ROI detector quality: mean IoU of predicted vs true grid box on held-out photo renders, YOLO and OpenCV fallback.

    python -m bench.roi --weights=outputs/roi/yolov8n/best.pt      # evaluate trained weights
    python -m bench.roi                                            # no weights: train a small YOLO here first (CPU,
                                                                   #   capped at --minutes), then evaluate it
    python -m bench.roi --n_train=300 --imgsz=320 --minutes=4.5 --n_test=60

The held-out photos come from their own seed, never used by make_data. Training photos (when training here) are
written as a YOLO set under outputs/bench/roi/ (reused by later runs) and the run goes to outputs/bench/roi/run/.
Prints mean / median IoU, the share with IoU >= 0.9, and ms per image for YOLO alone, the fallback alone, and the
two combined as preprocessing uses them (YOLO, fallback below --conf); timings on one thread.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import numpy as np

from src import render, synth
from src import roi
from src.config import parse_args, paths
from src.utils import parallel_map, set_threads


@dataclasses.dataclass
class RoiBenchConfig:
    """Mean IoU of the ROI detectors on held-out photo renders."""
    weights: str = ""  # YOLO weights to evaluate; '' = train a small one here first
    n_test: int = 60  # held-out photos
    n_train: int = 300  # training photos when training here (80% train, 20% val)
    photo_size: tuple[int, ...] = (1152, 640)  # photo W H (make_data's demo size)
    imgsz: int = 160  # YOLO input size when training here (a page-sized box needs few pixels; 4x faster than 320)
    epochs: int = 60  # upper bound on epochs; --minutes usually stops first
    minutes: float = 4.5  # training time cap
    batch: int = 16  # training batch
    overrides: str = "warmup_epochs=1"  # more ultralytics train arguments (see src.roi train --overrides)
    conf: float = 0.25  # YOLO confidence below which the combined detector uses the fallback
    seed: int = 777  # render seed of the held-out photos (training photos use seed + 1)
    workers: int = 0  # render processes (0: one per core)
    out: str = ""  # work folder (default outputs/bench/roi)


def _render(i: int, seed: int, size: tuple[int, int]):
    rng = np.random.default_rng([seed, i])
    signal, smeta = synth.synthesize(rng)
    img, meta = render.make_image(signal, smeta["fs"], rng, style="photo", size=size)
    return i, img, meta["roi_box"]


def _photos(n, seed, size, workers, desc):
    out = sorted(parallel_map(partial(_render, seed=seed, size=tuple(size)), range(n), workers=workers, desc=desc),
                 key=lambda r: r[0])
    return [(img, box) for _, img, box in out]


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
    test = _photos(cfg.n_test, cfg.seed, cfg.photo_size, cfg.workers, "render test")
    if not weights:
        data = work / "data" / "dataset.yaml"
        if not data.exists():
            train = _photos(cfg.n_train, cfg.seed + 1, cfg.photo_size, cfg.workers, "render train")
            n_val = max(1, cfg.n_train // 5)
            roi.write_yolo_dataset(work / "data", [(f"p{i:05d}", "val" if i < n_val else "train", img, box)
                                                   for i, (img, box) in enumerate(train)])
            del train
        t0 = time.time()
        m = roi.train(roi.RoiTrainConfig(data=str(data), out=str(work / "run"), epochs=cfg.epochs, imgsz=cfg.imgsz,
                                         batch=cfg.batch, minutes=cfg.minutes, workers=2, overrides=cfg.overrides))
        weights = str(work / "run" / "best.pt")
        print(f"trained YOLOv8n from scratch: {m['epochs']} epochs at {cfg.imgsz} px on {cfg.n_train} photos in "
              f"{time.time() - t0:.0f} s (CPU)")
    # Timed on one thread, as each cache worker runs: with two, a busy neighbour on one core stalls OpenMP barriers
    # and single predictions swing from 20 ms to ~900 ms.
    set_threads(1)
    rows = {"YOLO": _evaluate(test, weights, cfg.conf, True),
            "fallback (OpenCV)": _evaluate(test, None, cfg.conf, False),
            f"combined (conf {cfg.conf})": _evaluate(test, weights, cfg.conf, False)}
    print(f"ROI IoU on {cfg.n_test} held-out {cfg.photo_size[0]}x{cfg.photo_size[1]} photo renders (seed {cfg.seed}):")
    for name, r in rows.items():
        print(f"  {name:<22} mean {r['mean_iou']:.3f}  median {r['median_iou']:.3f}  IoU>=0.9 "
              f"{100 * r['frac_iou_ge_0.9']:5.1f}%  {r['ms']:6.1f} ms/img  methods {r['methods']}")
    return rows


if __name__ == "__main__":
    main()
