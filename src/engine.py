"""The one training engine both stages use: runtime (device, DDP, AMP), loss, optimiser and schedule, the epoch
loops and the `fit()` loop with early stopping and exact resume, writing into a run folder (src.run).

Choices (why):
- AMP, one code path: CUDA with bf16 hardware (compute capability >= 8) -> bf16 autocast, no scaler; older GPUs
  (Kaggle's T4) -> fp16 autocast + GradScaler; CPU -> fp32 (the scaler object exists but is disabled, so the same
  calls run everywhere). torch's is_bf16_supported() says True on a T4 (emulation), hence the capability test.
- DDP: started from the torchrun environment (utils.dist_env). Training batches come from data.ShardedSampler (padded
  like DistributedSampler). Validation: every rank predicts its own disjoint, unpadded shard with the unwrapped model
  (no collectives inside, so unequal shard lengths are fine), then (row index, logits) are all-gathered and each row
  is kept once. All ranks compute the same metrics, so early stopping agrees without another broadcast, the work is
  split across GPUs, and no padding duplicate can bias the AUROC (the count is checked against the set's size).
- `batch_size` is the images per optimizer step over all ranks and accumulation steps (the paper's 32), so a
  1-GPU, 2-GPU or accumulated run follow the same recipe; micro-batch = batch_size / (ranks x accum_steps).
- Batch fit (CUDA, `--batch_fit`): before training, one forward + backward of the real model at the real input size
  and AMP is tried at decreasing micro-batch sizes (divisors of batch_size / ranks) until one fits below
  (1 - BATCH_FIT_HEADROOM) of the GPU's memory, with the optimizer state (and EMA copy, DDP buckets) held as a
  reserve block meanwhile; accumulation makes up the rest, so the recipe (images per optimizer step) never changes.
  Ranks take the smallest micro-batch any of them found; the result goes to <run>/batch_fit.json and the log. A resume
  probes again, so on another GPU type it may split the same batch differently (the recipe stays; the floating-point
  order does not). ConvNeXt-Base at 512x768 keeps ~0.85 GiB of activations per image under 16-bit autocast
  (bench/memory.py), so a 15 GB T4 cannot hold the paper's 16-32 images at once; --grad_checkpointing (timm's
  set_grad_checkpointing: each block's forward is run again in the backward pass, ~1/3 more compute) keeps only the
  blocks' inputs.
- Resume is exact at epoch boundaries: last.pt holds model, optimizer, scheduler, scaler, EMA, early-stopping state,
  history and every RNG state (per rank); samplers and augmentation are seeded from (seed, epoch), not from state.
- best.pt holds the weights that were validated (the EMA copy when EMA is on) and no optimizer: it is for inference.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from typing import Sequence

import numpy as np

from .config import config_dict
from .data import ShardedSampler, make_loader
from .model import norm_tensors
from .score import macro_auroc, per_class_auroc
from .utils import default_workers, dist_env, set_threads, write_json

@dataclasses.dataclass
class FitConfig:
    """Recipe shared by Stage I (src.pretrain) and Stage II (src.train); defaults are the paper's."""
    route: str = "image"  # image: preprocessed photos, timm backbone | signal: signals (Stage I: synthetic or real
    # signal sets; Stage II: the photos digitised by src.digitize) read by a 1D network (--arch=ecgka_sig1d)
    arch: str = "convnext_base"  # timm backbone (paper: ConvNeXt-Base, ImageNet-22k weights via --pretrained)
    pretrained: str = ""  # backbone init: hub (timm ImageNet; needs HF_HUB_OFFLINE=0) | weights file | empty: random
    drop_rate: float = 0.2  # dropout before the classifier head (paper: 0.2)
    drop_path_rate: float = 0.0  # stochastic depth rate inside the backbone (0 = off)
    epochs: int = 30  # maximum epochs
    batch_size: int = 32  # images per optimizer step over all ranks and accumulation steps (paper: 32)
    accum_steps: int = 1  # micro-batches accumulated per optimizer step (trades memory for time)
    batch_fit: bool = True  # CUDA: probe the largest micro-batch that fits and raise accum_steps to keep batch_size
    grad_checkpointing: bool = False  # recompute activations in the backward pass (timm): less memory, ~1/3 more compute
    lr: float = 1e-4  # AdamW peak learning rate (paper: 1e-4)
    weight_decay: float = 1e-2  # AdamW weight decay; norms and biases are not decayed
    warmup_epochs: float = 1.0  # linear warm-up length, then cosine decay, stepped per optimizer step
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    patience: int = 5  # early stopping: epochs without a better val macro-AUROC (0 = never stop early)
    clip_grad: float = 1.0  # max gradient L2 norm (0 = no clipping)
    ema_decay: float = 0.0  # EMA of weights per step, e.g. 0.999 (0 = off); validation and best.pt use the EMA
    pos_weight: str = "inverse"  # BCE positive weights: inverse (n_neg/n_pos on known labels) | none
    max_pos_weight: float = 50.0  # cap for inverse positive weights (a nearly absent class would dominate)
    aug: str = "medium"  # image augmentation strength: none | light | medium | strong (signals: src.data's own)
    amp: str = "auto"  # mixed precision: auto (bf16 on Ampere+, fp16+GradScaler on T4, off on CPU) | off | bf16 | fp16
    channels_last: bool = True  # NHWC memory layout (faster convolutions on GPU tensor cores; neutral on CPU)
    workers: int = -1  # loader processes per rank (-1: cores per rank; 0: load in the main process)
    threads: int = 0  # torch CPU threads per rank (0: cores / ranks)
    seed: int = 42  # one seed for init, sampling and augmentation (deterministic on CPU)
    resume: bool = False  # continue an interrupted run from its last.pt (exactly, at an epoch boundary)
    session_epochs: int = 0  # stop cleanly after this many epochs in this process (0 = no limit); for 12 h sessions


ROUTES = ("image", "signal")


def check_route(cfg: FitConfig) -> None:
    """A route and an architecture that read the same input, or a one-line error naming the fix."""
    from .model import SIGNAL_ARCHS
    if cfg.route not in ROUTES:
        raise SystemExit(f"--route={cfg.route}: choose {' or '.join(ROUTES)}")
    if (cfg.route == "signal") != (cfg.arch in SIGNAL_ARCHS):
        raise SystemExit(f"--route={cfg.route} with --arch={cfg.arch}: the signal route reads signals with a 1D "
                         f"network ({', '.join(SIGNAL_ARCHS)}), the image route images with a timm backbone; give "
                         f"both, e.g. --recipe=signal for the signal route")


# ----------------------------------------------------------------------------------------------------------------
# Runtime
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Runtime:
    device: object
    rank: int
    world: int
    amp_dtype: object  # torch dtype or None
    use_scaler: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def amp_dtype(mode: str, device):
    """The one AMP rule (see the module doc): auto -> bf16 on CUDA capability >= 8, fp16 on older GPUs, off on CPU."""
    import torch
    if mode not in ("auto", "off", "bf16", "fp16"):
        raise SystemExit(f"--amp={mode}: choose auto, off, bf16 or fp16")
    if mode == "auto":
        mode = "off" if device.type != "cuda" else (
            "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _cores_per_rank() -> int:
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist_env()[2]))
    return max(1, default_workers() // local_world)


def loader_workers(workers: int) -> int:
    """--workers resolved: -1 -> the cores of this rank, at most 8; otherwise as given."""
    return min(8, _cores_per_rank()) if workers < 0 else workers


def setup_runtime(cfg) -> Runtime:
    """Device, process group (when launched by torchrun), threads and AMP mode, from a config's `amp` and `threads`
    (FitConfig, InferConfig); the config is not changed."""
    import torch
    import torch.distributed as dist
    rank, local_rank, world = dist_env()
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
    set_threads(cfg.threads if cfg.threads > 0 else _cores_per_rank())
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dtype = amp_dtype(cfg.amp, device)
    return Runtime(device, rank, world, dtype, use_scaler=dtype == torch.float16 and device.type == "cuda")


def run_stage(main) -> None:
    """`if __name__ == "__main__"` of a training stage: run it, and always leave the process group cleanly (a torchrun
    rank that exits with the group still up makes the others hang or print NCCL/gloo warnings)."""
    try:
        main()
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(0)


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        import torch.distributed as dist
        dist.barrier()


def all_gather(rt: Runtime, obj) -> list:
    if not rt.distributed:
        return [obj]
    import torch.distributed as dist
    out = [None] * rt.world
    dist.all_gather_object(out, obj)
    return out


def autocast(rt: Runtime):
    """The AMP context of this runtime (a no-op when AMP is off)."""
    import torch
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)


def unwrap(model):
    return getattr(model, "module", model)


def to_input(x, device, mean, std, channels_last: bool = True):
    """A batch from the loader -> normalised float on the device: uint8 images [B, 3, H, W] scaled to [0, 1] (mean/std
    [1, 3, 1, 1]); float signals [B, 12, n] in mV as they are (mean/std [1, 1, 1]: src.model.norm_tensors)."""
    import torch
    x = x.to(device, non_blocking=True)
    x = (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()).sub(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# ----------------------------------------------------------------------------------------------------------------
# Memory: gradient checkpointing, batch fit
# ----------------------------------------------------------------------------------------------------------------
# Share of the GPU's memory the batch fit leaves free: the probe measures one step, while a long run also meets
# other cuDNN algorithms and workspaces, allocator fragmentation and the validation batches.
BATCH_FIT_HEADROOM = 0.10


def enable_grad_checkpointing(model, arch: str) -> None:
    """timm's set_grad_checkpointing; an architecture without it is refused by name."""
    if not hasattr(model, "set_grad_checkpointing"):
        raise SystemExit(f"--grad_checkpointing: {arch} does not support gradient checkpointing (timm's "
                         f"set_grad_checkpointing); pass --grad_checkpointing=false")
    model.set_grad_checkpointing(True)


def probe_step(model, rt: Runtime, norm, example, n: int, n_labels: int, channels_last: bool = True) -> None:
    """One training forward + backward of `n` random inputs (`example(n)`: the dataset's, e.g. uint8 images of the
    cache's size) under the runtime's AMP. Leaves the model as it found it: buffers (BatchNorm statistics) restored,
    RNG states forked, gradients cleared."""
    import torch
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[rt.device.index] if rt.device.type == "cuda" else []):
            x = example(n)
            y = torch.randint(0, 2, (n, n_labels)).float().to(rt.device)
            with autocast(rt):
                logits = model(to_input(x, rt.device, *norm, channels_last))
            masked_bce(logits, y).backward()
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.train(was_training)


def choose_micro_batch(per_rank: int, start: int, try_batch, limit: float, release=lambda: None,
                       gather=lambda v: [v]) -> dict:
    """The largest micro-batch m <= start that divides `per_rank` (images per optimizer step on one rank) and fits.

    try_batch(m) runs one step of m images and returns its peak memory in bytes, or raises
    torch.cuda.OutOfMemoryError; a try fits when it does not raise and its peak is <= limit. release() runs after every
    try, outside the exception handler (so the failed step's tensors are no longer referenced when memory is freed).
    gather(v) -> [v of every rank] (DDP): all ranks take the smallest choice. Returns {"micro_batch", "accum_steps",
    "tries": [{"micro_batch", "fits", "peak_bytes"}] on this rank, "rank_choices"}. No fitting size on some rank
    raises on every rank.
    """
    import torch
    tries, chosen = [], 0
    for m in [d for d in range(min(start, per_rank), 0, -1) if per_rank % d == 0]:
        try:
            peak = try_batch(m)
        except torch.cuda.OutOfMemoryError:
            peak = None
        release()
        fits = peak is not None and peak <= limit
        tries.append({"micro_batch": m, "fits": fits, "peak_bytes": None if peak is None else int(peak)})
        if fits:
            chosen = m
            break
    choices = list(gather(chosen))
    micro = min(choices)
    if micro == 0:
        raise SystemExit(f"batch fit: not even one image per step fits in {limit / 2**30:.1f} GiB on rank "
                         f"{choices.index(0)} (tries: {tries}); pass --grad_checkpointing=true, a smaller --arch or a "
                         f"cache with smaller images")
    return {"micro_batch": micro, "accum_steps": per_rank // micro, "tries": tries, "rank_choices": choices}


def fit_batch(cfg: FitConfig, rt: Runtime, model, train_ds, n_labels: int, run) -> tuple[int, int]:
    """(micro-batch, accum_steps) for this run: probed on CUDA when --batch_fit (see the module doc), else as
    configured. Recorded in the run's batch_fit.json and the log."""
    import gc
    import torch
    per_step = rt.world * cfg.accum_steps
    if cfg.batch_size % per_step:
        raise ValueError(f"--batch_size={cfg.batch_size} must divide by ranks x accum_steps = {per_step}")
    micro, per_rank = cfg.batch_size // per_step, cfg.batch_size // rt.world
    record = {"probed": False, "micro_batch": micro, "accum_steps": cfg.accum_steps, "ranks": rt.world,
              "batch_size": cfg.batch_size, "size": list(train_ds.size), "amp": str(rt.amp_dtype),
              "grad_checkpointing": cfg.grad_checkpointing}
    if not cfg.batch_fit or rt.device.type != "cuda":
        why = "off (--batch_fit=false)" if not cfg.batch_fit else f"a no-op on {rt.device.type}"
        record["reason"] = why
        msg = f"[fit] batch_fit {why}: micro-batch {micro} x accum {cfg.accum_steps} as configured"
    else:
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        # held during the probe: AdamW's two moments, plus the EMA copy and DDP's gradient buckets when used
        reserve_bytes = params * (2 + (cfg.ema_decay > 0) + rt.distributed)
        total = torch.cuda.get_device_properties(rt.device).total_memory
        limit = (1 - BATCH_FIT_HEADROOM) * total
        norm = norm_tensors(model, rt.device)

        def try_batch(m: int) -> int:
            torch.cuda.reset_peak_memory_stats(rt.device)
            probe_step(model, rt, norm, train_ds.example, m, n_labels, cfg.channels_last)
            torch.cuda.synchronize(rt.device)
            return torch.cuda.max_memory_reserved(rt.device)

        def release() -> None:
            gc.collect()
            torch.cuda.empty_cache()

        reserve = torch.empty(reserve_bytes, dtype=torch.uint8, device=rt.device)
        try:
            res = choose_micro_batch(per_rank, micro, try_batch, limit, release, lambda v: all_gather(rt, v))
        finally:
            del reserve
            release()
        micro = res["micro_batch"]
        record.update(res, probed=True, device=torch.cuda.get_device_name(rt.device), total_bytes=total,
                      limit_bytes=int(limit), reserve_bytes=reserve_bytes)
        tried = ", ".join(f"{t['micro_batch']}: " + ("out of memory" if t["peak_bytes"] is None else
                                                     f"{t['peak_bytes'] / 2**30:.1f} GiB") for t in res["tries"])
        msg = (f"[fit] batch_fit on {record['device']} ({total / 2**30:.1f} GiB, limit {limit / 2**30:.1f} GiB, "
               f"reserve {reserve_bytes / 2**30:.2f} GiB; tried {tried}) -> micro-batch {micro} x accum "
               f"{res['accum_steps']} x ranks {rt.world} = {cfg.batch_size}")
    if rt.main:
        write_json(run.batch_fit, record)
        print(msg, flush=True)
    return micro, record["accum_steps"]


# ----------------------------------------------------------------------------------------------------------------
# Loss, optimiser, schedule, early stopping
# ----------------------------------------------------------------------------------------------------------------
def positive_weights(targets: np.ndarray, mode: str = "inverse", cap: float = 50.0) -> np.ndarray:
    """Per-class BCE pos_weight = n_negative / n_positive over known (non-NaN) labels, clipped to [1/cap, cap]."""
    t = np.asarray(targets, dtype=float)
    if mode == "none":
        return np.ones(t.shape[1], np.float32)
    if mode != "inverse":
        raise ValueError(f"--pos_weight={mode}: choose inverse or none")
    pos, neg = np.nansum(t == 1, axis=0), np.nansum(t == 0, axis=0)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 1.0 / cap, cap).astype(np.float32)


def masked_bce(logits, targets, pos_weight=None):
    """Weighted BCE averaged over known labels only; NaN targets contribute neither loss nor gradient."""
    import torch
    import torch.nn.functional as F
    known = ~torch.isnan(targets)
    t = torch.where(known, targets, torch.zeros_like(targets))
    per = F.binary_cross_entropy_with_logits(logits.float(), t, pos_weight=pos_weight, reduction="none")
    return torch.where(known, per, torch.zeros_like(per)).sum() / known.sum().clamp(min=1)


def build_optimizer(model, lr: float, weight_decay: float):
    import torch
    from timm.optim import param_groups_weight_decay
    return torch.optim.AdamW(param_groups_weight_decay(model, weight_decay), lr=lr)


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, min_ratio: float):
    """Linear warm-up to the peak lr, then cosine to min_ratio x peak; the scheduler is stepped per optimizer step."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        prog = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EarlyStopping:
    """Tracks the best validation macro-AUROC; `stop` once `patience` epochs pass without improvement."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.bad = patience, -math.inf, -1, 0

    def step(self, value: float, epoch: int) -> bool:
        # the first epoch is always "best" so a best.pt exists even when AUROC is undefined (NaN) on a tiny val set
        improved = self.best_epoch < 0 or (not math.isnan(value) and value > self.best)
        if improved:
            self.best, self.best_epoch, self.bad = (value if not math.isnan(value) else -math.inf), epoch, 0
        else:
            self.bad += 1
        return improved

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_epoch, self.bad = d["best"], d["best_epoch"], d["bad"]


# ----------------------------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation
# ----------------------------------------------------------------------------------------------------------------
def train_one_epoch(model, loader, optimizer, scheduler, scaler, rt: Runtime, norm, pos_weight, accum_steps: int = 1,
                    clip_grad: float = 0.0, ema=None, channels_last: bool = True, desc: str = "train") -> dict:
    """Returns {"loss": mean over batches and ranks, "images": seen over ranks, "images_per_s", "lr"}."""
    import torch
    from tqdm import tqdm
    model.train()
    n_batches = len(loader)
    loss_sum, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, total=n_batches, disable=not rt.main, dynamic_ncols=True, leave=False)
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y, _) in enumerate(bar):
        x = to_input(x, rt.device, *norm, channels_last)
        y = y.to(rt.device, non_blocking=True)
        step_now = (i + 1) % accum_steps == 0 or i + 1 == n_batches
        sync = model.no_sync() if (rt.distributed and not step_now) else contextlib.nullcontext()
        with sync:
            with autocast(rt):
                logits = model(x)
            loss = masked_bce(logits, y, pos_weight)
            scaler.scale(loss / accum_steps).backward()
        if step_now:
            if clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(unwrap(model))
        loss_sum = loss_sum + loss.detach()  # stays on the device: no sync per step
        count += x.shape[0]
        if rt.main and (i % 10 == 0 or i + 1 == n_batches):
            bar.set_postfix(loss=f"{float(loss_sum) / (i + 1):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    bar.close()
    sums = all_gather(rt, (float(loss_sum), n_batches, count))
    secs = time.perf_counter() - t0
    images = sum(s[2] for s in sums)
    return {"loss": sum(s[0] for s in sums) / max(1, sum(s[1] for s in sums)), "images": images,
            "images_per_s": images / max(secs, 1e-9), "lr": optimizer.param_groups[0]["lr"]}


def predict(model, loader, rt: Runtime, norm, channels_last: bool = True, desc: str = "predict"):
    """(row indices, logits float32 [n, C]) for this rank's part of the loader."""
    import torch
    from tqdm import tqdm
    model.eval()
    idx, out = [], []
    with torch.no_grad():
        for x, _, i in tqdm(loader, desc=desc, disable=not rt.main, dynamic_ncols=True, leave=False):
            x = to_input(x, rt.device, *norm, channels_last)
            with autocast(rt):
                out.append(model(x).float().cpu())
            idx.append(i)
    if not out:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return torch.cat(idx).numpy().astype(np.int64), torch.cat(out).numpy()


def evaluate(model, loader, targets: np.ndarray, labels: Sequence[str], rt: Runtime, norm, pos_weight=None,
             channels_last: bool = True) -> dict:
    """Metrics over the whole validation set, each row exactly once (gathered over DDP ranks, see module doc).

    Returns {"loss", "macro_auroc", "auroc": {label: value}, "n", "probs" [N, C] in row order, "images_per_s"}.
    """
    import torch
    t0 = time.perf_counter()
    idx, logits = predict(unwrap(model), loader, rt, norm, channels_last, desc="val")
    parts = all_gather(rt, (idx, logits))
    idx = np.concatenate([p[0] for p in parts])
    logits = np.concatenate([p[1] for p in parts if p[1].size] or [np.zeros((0, len(labels)), np.float32)])
    n = len(targets)
    if len(idx) != n or len(np.unique(idx)) != n:
        raise RuntimeError(f"validation saw {len(idx)} predictions ({len(np.unique(idx))} distinct) for {n} rows")
    order = np.argsort(idx)
    logits = logits[order]
    y = np.asarray(targets, dtype=np.float32)
    pw = None if pos_weight is None else pos_weight.detach().cpu()
    loss = float(masked_bce(torch.from_numpy(logits), torch.from_numpy(y), pw))
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    auc = per_class_auroc(y, probs, labels, skip_degenerate=True)  # unknown labels masked, one-class labels skipped
    return {"loss": loss, "macro_auroc": macro_auroc(y, probs, labels, skip_degenerate=True), "auroc": auc, "n": n,
            "probs": probs.astype(np.float32), "images_per_s": n / max(time.perf_counter() - t0, 1e-9)}


# ----------------------------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    import torch
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def set_rng_state(s: dict) -> None:
    import torch
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------------------
def fit(cfg: FitConfig, rt: Runtime, model, labels: Sequence[str], train_ds, val_ds, val_ids: Sequence[str],
        run, train_weights: np.ndarray | None = None, epoch_size: int = 0,
        extra_cols: dict | None = None, input_info: dict | None = None) -> dict:
    """Trains `model` on train_ds, validates on val_ds each epoch, keeps best.pt / last.pt / logs in `run` (a
    src.run.RunFolder: run sits above the engine, so the engine only calls the methods it is handed).

    The datasets (built with their transforms by data.build_dataset) and `cfg` are used as given, never changed.
    Writes (rank 0) the run's oof.csv: id, extra_cols, labels, pred_<label> from the best epoch. Returns
    {"finished": bool, "best_metric", "best_epoch", "epochs_run"}. `finished` is False when the session stopped early
    on session_epochs (continue with --resume).
    """
    import torch
    from timm.utils import ModelEmaV3
    labels = list(labels)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(rt.device, memory_format=mf)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model, cfg.arch)
    micro, accum = fit_batch(cfg, rt, model, train_ds, len(labels), run)
    workers = loader_workers(cfg.workers)
    sampler = ShardedSampler(len(train_ds), True, cfg.seed, rt.rank, rt.world, weights=train_weights,
                             num_samples=epoch_size)
    val_sampler = ShardedSampler(len(val_ds), False, cfg.seed, rt.rank, rt.world, pad=False)
    pin = rt.device.type == "cuda"

    def train_loader(epoch: int):  # epoch `epoch`'s augmentation, over a view of train_ds
        return make_loader(train_ds.at_epoch(epoch), sampler, micro, workers, True, cfg.seed, pin)

    val_loader = make_loader(val_ds, val_sampler, micro * 2, workers, False, cfg.seed, pin)

    norm = norm_tensors(model, rt.device)
    pw = torch.from_numpy(positive_weights(train_ds.targets, cfg.pos_weight, cfg.max_pos_weight)).to(rt.device)
    steps_per_epoch = math.ceil(len(train_loader(0)) / accum)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.epochs * steps_per_epoch,
                                max(1, round(cfg.warmup_epochs * steps_per_epoch)), cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    stopper = EarlyStopping(cfg.patience)
    history: list[dict] = []
    start = 0

    run.check_resumable(cfg.resume)
    trained = {"model": unwrap(model), "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
               "ema": ema.module if ema is not None else None, "stopper": stopper}
    if run.last.exists():
        ck = run.resume(trained)
        history, start = list(ck["history"]), int(ck["epoch"])
        states = ck.get("rng") or []
        if len(states) == rt.world:
            set_rng_state(states[rt.rank])
        same_recipe = ("resume", "session_epochs", "workers", "threads", "batch_fit", "grad_checkpointing")
        changed = {k: (v, ck["config"].get(k)) for k, v in config_dict(cfg).items()
                   if k not in same_recipe and ck["config"].get(k) != v}
        if rt.main:
            print(f"[fit] resumed {run} after epoch {start} (best {stopper.best:.4f} @ {stopper.best_epoch + 1})"
                  + (f"; config changed since: {changed}" if changed else ""))
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if rt.main:
        print(f"[fit] {run}: {len(train_ds)} train / {len(val_ds)} val images, {rt.world} rank(s) on "
              f"{rt.device.type}, micro-batch {micro} x accum {accum} x ranks {rt.world} = "
              f"{cfg.batch_size}, amp {rt.amp_dtype}, pos_weight {[round(float(v), 2) for v in pw]}")

    epochs_run, finished = 0, start >= cfg.epochs or stopper.stop
    for epoch in range(start, cfg.epochs):
        if stopper.stop:
            finished = True
            break
        if cfg.session_epochs and epochs_run >= cfg.session_epochs:
            break
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        tr = train_one_epoch(model, train_loader(epoch), optimizer, scheduler, scaler, rt, norm, pw, accum,
                             cfg.clip_grad, ema, cfg.channels_last, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        eval_model = ema.module if ema is not None else model
        va = evaluate(eval_model, val_loader, val_ds.targets, labels, rt, norm, pw, cfg.channels_last)
        improved = stopper.step(va["macro_auroc"], epoch)
        row = {"epoch": epoch + 1, "train_loss": tr["loss"], "val_loss": va["loss"],
               "val_macro_auroc": va["macro_auroc"], **{f"val_auroc_{k}": v for k, v in va["auroc"].items()},
               "lr": tr["lr"], "train_images_per_s": tr["images_per_s"], "val_images_per_s": va["images_per_s"],
               "val_n": va["n"], "epoch_s": time.perf_counter() - t0, "best": improved}
        history.append(row)
        states = all_gather(rt, rng_state())  # collective: every rank takes part, rank 0 saves
        epochs_run += 1
        if rt.main:
            common = {"arch": cfg.arch, "labels": labels, "config": config_dict(cfg), "epoch": epoch + 1,
                      "best_metric": stopper.best, "input": input_info or {}, "stopper": stopper.state_dict(),
                      "history": history}
            if improved:
                run.save_best(common, unwrap(eval_model).state_dict(), {k: v for k, v in va.items() if k != "probs"})
                run.write_oof(val_ids, extra_cols or {}, labels, val_ds.targets, va["probs"])
            run.save_last(common, trained, states)
            run.write_logs(history)
            per = " ".join(f"{k}={v:.3f}" for k, v in va["auroc"].items())
            print(f"epoch {epoch + 1}/{cfg.epochs} train_loss {tr['loss']:.4f} val_loss {va['loss']:.4f} "
                  f"val_auroc {va['macro_auroc']:.4f} [{per}] best {stopper.best:.4f}@{stopper.best_epoch + 1} "
                  f"lr {tr['lr']:.2e} {tr['images_per_s']:.1f} img/s {row['epoch_s']:.0f}s"
                  + (" *" if improved else ""), flush=True)
    else:
        finished = True
    finished = finished or stopper.stop
    barrier(rt)
    if rt.main and not finished:
        print(f"[fit] stopped after {epochs_run} epoch(s) this session; continue with --resume", file=sys.stderr)
    return {"finished": finished, "best_metric": stopper.best, "best_epoch": stopper.best_epoch + 1,
            "epochs_run": epochs_run}
