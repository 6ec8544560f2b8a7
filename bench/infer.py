"""Inference speed: images/s for one fold model and for the k-fold ensemble, and where the time goes.

    python -m bench.infer                                   # convnext_atto 256x512, 5 random-weight folds, 32 photos
    python -m bench.infer --arch=convnext_base --size=512,768 --n=16 --batch_size=8
    python -m bench.infer --run=outputs/train/stage2       # the run's own fold models and preprocessing

Without --run, random-weight fold checkpoints are written to a temp folder (speed does not depend on the weights) and
photo-style test images are rendered at --photo_hw (rendering is not timed). Prints, per image:
  preprocess   imread + src.preprocess.preprocess_image in this process (one core's worth)
  model        forward passes only on ready uint8 batches (normalise + forward + sigmoid), 1 fold and all folds
  end to end   src.infer.predict as the CLI runs it (loader workers preprocess while the models run), 1 fold and all
               folds, with the split: preprocessing seconds summed over workers vs model seconds vs wall time.
Thread count and device are printed with the figures; a busy neighbour process distorts CPU numbers.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from src.config import config_dict, parse_args
from src.utils import imread, imwrite, set_threads, torch_save, write_text


@dataclasses.dataclass
class BenchConfig:
    """Time inference: one fold model vs the k-fold ensemble, preprocessing vs model."""
    run: str = ""  # Stage II run folder to time (default: random-weight folds of --arch in a temp folder)
    arch: str = "convnext_atto"  # timm architecture of the random-weight folds
    size: tuple[int, ...] = (256, 512)  # model input H W (random-weight folds; a run uses its preprocess.yaml)
    strategy: str = "roi_clahe"  # preprocessing strategy of the random-weight folds
    folds: int = 5  # random-weight fold models
    n: int = 32  # test photos
    photo_hw: tuple[int, ...] = (640, 1152)  # rendered photo height H, width W
    batch_size: int = 16  # images per forward pass
    workers: int = -1  # loader workers for the end-to-end figure (-1: one per core, at most 8)
    threads: int = 0  # torch threads (0: one per core)
    amp: str = "auto"  # auto | off | bf16 | fp16 (as src.infer)
    seed: int = 0  # render seed


def fake_run(root: Path, arch: str, n_folds: int, size, strategy: str) -> Path:
    """A run folder with random-weight fold checkpoints and the preprocess.yaml infer reads."""
    import torch
    import yaml
    from src.model import norm_tensors
    from src.model import create_model
    from src.config import LABELS as labels
    from src.preprocess import PreprocessConfig
    run = root / "run"
    for k in range(n_folds):
        torch.manual_seed(k)
        m = create_model(arch, len(labels), drop_rate=0.0)
        mean, std = (t.flatten().tolist() for t in norm_tensors(m, "cpu"))
        torch_save({"model": m.state_dict(), "arch": arch, "labels": list(labels), "config": {}, "epoch": 0,
                    "input": {"size": list(size), "mean": mean, "std": std}}, run / f"fold{k}" / "best.pt")
    write_text(run / "preprocess.yaml", yaml.safe_dump(config_dict(PreprocessConfig(strategy=strategy,
                                                                                     size=tuple(size)))))
    write_text(run / "config.yaml", yaml.safe_dump({"arch": arch}))
    return run


def render_photos(folder: Path, n: int, photo_hw, seed: int) -> list[str]:
    from src import compose, synth
    files = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        signal, meta = synth.synthesize(rng)
        img, _ = compose.make_image(signal, meta["fs"], rng, style="photo", hw=tuple(photo_hw))
        imwrite(folder / f"t{i:04d}.png", img)
        files.append(str(folder / f"t{i:04d}.png"))
    return files


def main(argv=None):
    cfg = parse_args(BenchConfig, argv)
    set_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as d:
        bench(cfg, Path(d))


def bench(cfg: BenchConfig, tmp: Path) -> None:
    import torch
    from src import infer
    from src.engine import autocast, loader_workers, setup_runtime, to_input
    from src.preprocess import preprocess_image
    from src.run import RunFolder, gather_folds, load_fold_models, resolve_run
    run = resolve_run(cfg.run) if cfg.run else RunFolder(fake_run(tmp, cfg.arch, cfg.folds, cfg.size, cfg.strategy))
    pcfg = run.preprocess_config()
    rt = setup_runtime(cfg)
    folds = load_fold_models(gather_folds([run], "all"), None, rt.device)
    print(f"rendering {cfg.n} photos {cfg.photo_hw[1]}x{cfg.photo_hw[0]} ...", flush=True)
    files = render_photos(tmp / "test", cfg.n, cfg.photo_hw, cfg.seed)
    ids = [Path(f).stem for f in files]
    workers = loader_workers(cfg.workers)
    print(f"{len(folds)} fold(s) of {folds[0].arch} at {pcfg.size[0]}x{pcfg.size[1]}, preprocess {pcfg.strategy}; "
          f"{rt.device.type} amp {rt.amp_dtype}, {torch.get_num_threads()} torch thread(s), batch {cfg.batch_size}, "
          f"{workers} loader worker(s)")

    # preprocessing alone, in this process
    t0 = time.perf_counter()
    imgs = [preprocess_image(imread(f), pcfg)[0] for f in files]
    pre = (time.perf_counter() - t0) / len(files)

    # model alone on ready batches
    x = torch.from_numpy(np.stack([i.transpose(2, 0, 1) for i in imgs]))
    batches = [x[i:i + cfg.batch_size] for i in range(0, len(x), cfg.batch_size)]

    def forward(fs):
        with torch.inference_mode():
            for b in batches:
                for f in fs:
                    with autocast(rt):
                        torch.sigmoid(f.model(to_input(b, rt.device, *f.norm)).float()).cpu()

    forward(folds[:1])  # warm-up (kernel selection, allocator)
    t0 = time.perf_counter()
    forward(folds[:1])
    one = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    forward(folds)
    ens = (time.perf_counter() - t0) / len(x)

    # end to end as src.infer runs it
    e2e = {}
    for name, fs in (("1 fold", folds[:1]), (f"{len(folds)} folds", folds)):
        r = infer.predict(fs, infer.TestImages(files, ids, pcfg), rt, cfg.batch_size, workers)
        e2e[name] = r["seconds"]

    print(f"\n{'stage':<34}{'ms/image':>10}{'images/s':>10}")
    print(f"{'preprocess (1 process)':<34}{pre * 1e3:>10.1f}{1 / pre:>10.1f}")
    print(f"{'model, 1 fold':<34}{one * 1e3:>10.1f}{1 / one:>10.1f}")
    print(f"{f'model, {len(folds)}-fold ensemble':<34}{ens * 1e3:>10.1f}{1 / ens:>10.1f}")
    for name, s in e2e.items():
        print(f"{f'end to end, {name}':<34}{s['wall'] / cfg.n * 1e3:>10.1f}{s['images_per_s']:>10.1f}"
              f"   (preprocess {s['preprocess']:.1f}s summed over workers, model {s['model']:.1f}s, "
              f"wall {s['wall']:.1f}s)")
    share = ens / (ens + pre)
    print(f"\nmodel share of the work for the {len(folds)}-fold ensemble: {share:.0%} (preprocessing {1 - share:.0%})")


if __name__ == "__main__":
    main()
