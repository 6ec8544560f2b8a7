"""Training / inference throughput of a backbone at an input size, and the data loader's throughput from a cache.

    python -m bench.train --arch=convnext_atto --size=192,384 --batch_size=8 --steps=5
    python -m bench.train --arch=convnext_base --size=512,1024 --cache=input/cache-comp --workers=0,1,2,4

The loader must out-run the model (on Kaggle's 2xT4 with 4 CPU cores the GPU should be the bottleneck): compare the
loader's images/s (decode + augmentation, per worker) with the training images/s. Without --cache, ECG-like pages
(pale grid + dark traces, which PNG-compress like real ones, unlike noise) are written to a temporary cache first.
Figures depend on the machine's load: the thread count and load average are printed beside them.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from src.config import parse_args


@dataclasses.dataclass
class BenchConfig:
    arch: str = "convnext_atto"  # timm backbone
    size: tuple[int, ...] = (192, 384)  # input H,W (the cache's size when --cache is given)
    batch_size: int = 8  # images per training step (inference uses twice this)
    steps: int = 5  # timed steps per measurement, after one warm-up step
    amp: str = "auto"  # as in training: auto | off | bf16 | fp16
    channels_last: bool = True  # NHWC layout, as in training
    threads: int = 0  # torch threads (0: one per core)
    cache: str = ""  # cache folder to read for the loader figure (empty: write a temporary one)
    loader_images: int = 96  # images read per loader measurement
    workers: tuple[int, ...] = (0, 1, 2)  # loader worker counts to measure
    aug: str = "medium"  # augmentation preset applied by the loader


def fake_cache(dst: Path, n: int, size: tuple[int, int]) -> Path:
    """ECG-paper-like PNGs + index.csv in the cache layout."""
    import cv2
    import pandas as pd
    from src.utils import imwrite
    rng = np.random.default_rng(0)
    h, w = size
    (dst / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((h, w, 3), (250, 238, 238), np.uint8)
        step = max(4, w // 100)
        img[:, ::step] = img[::step, :] = (240, 190, 190)
        for r in range(4):
            y0 = (r + 0.5) * h / 4
            ys = y0 + np.cumsum(rng.normal(0, 0.6, w)) + 8 * (rng.random(w) < 0.01) * rng.normal(0, 3, w)
            pts = np.stack([np.arange(w), np.clip(ys, 0, h - 1)], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, (20, 20, 20), 1)
        imwrite(dst / "images" / f"f{i:05d}.png", img)
    pd.DataFrame({"id": [f"f{i:05d}" for i in range(n)], "cache_path": [f"images/f{i:05d}.png" for i in range(n)],
                  "status": "ok"}).to_csv(dst / "index.csv", index=False)
    return dst


def bench_model(cfg: BenchConfig, rt) -> dict:
    import torch
    from src.engine import autocast, build_optimizer, masked_bce, to_input
    from src.model import norm_tensors
    from src.model import create_model
    h, w = cfg.size
    model = create_model(cfg.arch, 5).to(rt.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    norm = norm_tensors(model, rt.device)
    opt = build_optimizer(model, 1e-4, 1e-2)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    x8 = torch.randint(0, 256, (cfg.batch_size, 3, h, w), dtype=torch.uint8)
    y = (torch.rand(cfg.batch_size, 5) < 0.3).float().to(rt.device)

    def sync():
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast(rt):
            loss = masked_bce(model(to_input(x8, rt.device, *norm, cfg.channels_last)), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    model.train()
    train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        train_step()
    sync()
    train = cfg.batch_size * cfg.steps / (time.perf_counter() - t0)
    model.eval()
    xi = torch.cat([x8, x8])
    with torch.no_grad():
        with autocast(rt):
            model(to_input(xi, rt.device, *norm, cfg.channels_last))
        sync()
        t0 = time.perf_counter()
        for _ in range(cfg.steps):
            with autocast(rt):
                model(to_input(xi, rt.device, *norm, cfg.channels_last))
        sync()
    infer = len(xi) * cfg.steps / (time.perf_counter() - t0)
    return {"train": train, "infer": infer}


def bench_loader(cfg: BenchConfig, cache: Path, workers: int) -> float:
    from src.data import CacheDataset, ShardedSampler, build_transform, make_loader, read_cache
    files = list(read_cache(cache)["file"])
    n = min(cfg.loader_images, len(files))
    ds = CacheDataset(files[:n], np.zeros((n, 5), np.float32), build_transform(cfg.aug))
    loader = make_loader(ds, ShardedSampler(n, True, 0), 8, workers, True)
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    t0, count = time.perf_counter(), 0
    for x, _, _ in it:
        count += len(x)
    return count / max(time.perf_counter() - t0, 1e-9) if count else float(len(first[0]))


def main(argv=None) -> dict:
    import torch
    from src.engine import FitConfig, setup_runtime
    cfg = parse_args(BenchConfig, argv)
    if len(cfg.size) != 2:
        raise SystemExit("--size needs H,W")
    rt = setup_runtime(FitConfig(amp=cfg.amp, threads=cfg.threads, workers=0))
    load = os.getloadavg()
    print(f"[bench.train] {cfg.arch} at {cfg.size[0]}x{cfg.size[1]}, batch {cfg.batch_size}, device {rt.device}, "
          f"amp {rt.amp_dtype}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {load[0]:.2f} {load[1]:.2f}")
    m = bench_model(cfg, rt)
    print(f"model  train {m['train']:.2f} img/s   inference {m['infer']:.2f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(cfg.cache) if cfg.cache else fake_cache(Path(tmp), cfg.loader_images, tuple(cfg.size))
        loader = {}
        for wk in cfg.workers:
            loader[wk] = bench_loader(cfg, cache, wk)
            print(f"loader workers={wk}: {loader[wk]:.1f} img/s ({loader[wk] / max(wk, 1):.1f} per worker, "
                  f"aug {cfg.aug}, from {'--cache' if cfg.cache else 'a temporary ECG-like cache'})")
    return {"model": m, "loader": loader}


if __name__ == "__main__":
    main()
