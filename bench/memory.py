"""Training memory of a backbone per image at an input size, and what that lets fit on a GPU (Kaggle's 15 GB T4).

    python -m bench.memory                                   # convnext_base at 512x768 (the Stage II cache size)
    python -m bench.memory --arch=convnext_atto --size=128,256 --batches=1,2

Measured on this machine's CPU, one fresh process per setting: the growth of the peak resident memory (VmHWM, reset
through /proc/self/clear_refs after a small warm-up step) over one training forward + backward of a batch
(src.engine.probe_step, the batch fit's probe), in fp32 and under bf16 autocast (the CPU stand-in for a T4's fp16
autocast: both keep 16-bit activations), each without and with gradient checkpointing. Per image = the growth at
the second batch size minus the growth at the first, divided by their difference; what remains of the first growth
is per step (gradients, workspaces, autocast's weight copies).

The GPU figure is arithmetic on those numbers, printed line by line: weights + AdamW's two moments (+ an EMA copy with
--ema, + DDP's gradient buckets with --ranks > 1) + the per-step part + micro-batch x per image must stay under
(1 - src.engine.BATCH_FIT_HEADROOM) x --gpu_gib, as the batch fit requires. It is an estimate: CUDA's kernels keep
other workspaces than oneDNN's and autocast casts a few ops differently; on the GPU the batch fit has the final word.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from src.config import parse_args

GIB = 2 ** 30


@dataclasses.dataclass
class MemoryConfig:
    arch: str = "convnext_base"  # timm backbone
    size: tuple[int, ...] = (512, 768)  # input H,W
    batches: tuple[int, ...] = (1, 4)  # two batch sizes; per image = growth difference / size difference
    threads: int = 2  # torch threads in each measuring process
    gpu_gib: float = 14.75  # the GPU's total memory (a 15 GB T4: 15,843,721,216 bytes); the batch fit limits to 90 %
    batch_size: int = 32  # images per optimizer step to split into micro-batch x accum x ranks (paper: 32)
    ranks: tuple[int, ...] = (1, 2)  # GPU counts to plan for (Kaggle: one T4, or T4 x2 with DDP)
    ema: bool = False  # plan with an EMA copy of the weights (--ema_decay > 0)
    one: str = ""  # internal: measure one setting AMP,CHECKPOINTING,BATCH in this process and print it as JSON


def status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_one(cfg: MemoryConfig) -> dict:
    """Peak RSS growth of one forward + backward in this process (see the module doc)."""
    import torch
    from src.engine import Runtime, enable_grad_checkpointing, probe_step
    from src.model import norm_tensors
    from src.model import create_model
    amp, ckpt, batch = cfg.one.split(",")
    torch.set_num_threads(cfg.threads)
    model = create_model(cfg.arch, 5).to(memory_format=torch.channels_last)
    if ckpt == "1":
        enable_grad_checkpointing(model, cfg.arch)
    rt = Runtime(torch.device("cpu"), 0, 1, torch.bfloat16 if amp == "bf16" else None, False)
    norm = norm_tensors(model, "cpu")
    probe_step(model, rt, norm, (64, 96), 1, 5)  # warm-up: oneDNN primitives and first allocations are not per image
    base = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    t0 = time.perf_counter()
    probe_step(model, rt, norm, cfg.size, int(batch), 5)
    return {"growth": status_bytes("VmHWM") - base, "seconds": time.perf_counter() - t0,
            "params": sum(p.numel() for p in model.parameters())}


def run_one(cfg: MemoryConfig, amp: str, ckpt: bool, batch: int) -> dict:
    """measure_one in a fresh process; glibc is told to return every large block at once (no dynamic mmap
    threshold), so freed warm-up memory does not hide later growth."""
    cmd = [sys.executable, "-m", "bench.memory", f"--arch={cfg.arch}", f"--size={cfg.size[0]},{cfg.size[1]}",
           f"--threads={cfg.threads}", f"--one={amp},{int(ckpt)},{batch}"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(cfg.threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"measuring {amp} checkpointing={ckpt} batch {batch} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def plan(cfg: MemoryConfig, params: int, per_image: float, per_step: float, ranks: int) -> tuple[list[str], int]:
    """The GPU arithmetic (lines to print) and the largest micro-batch that fits (0: none)."""
    from src.engine import BATCH_FIT_HEADROOM, choose_micro_batch
    state = params * 4 * (1 + 2 + cfg.ema + (ranks > 1))  # fp32 weights, AdamW moments, EMA, DDP buckets
    limit = (1 - BATCH_FIT_HEADROOM) * cfg.gpu_gib * GIB
    room = limit - state - per_step
    fit = max(0, int(room // max(per_image, 1.0)))
    lines = [f"    {ranks} rank(s): limit {(1 - BATCH_FIT_HEADROOM):.2f} x {cfg.gpu_gib} GiB = {limit / GIB:.2f} GiB; "
             f"state {state / GIB:.2f} GiB (4 B x {params / 1e6:.1f} M params x {state // (params * 4)}: weights, "
             f"AdamW moments{', EMA' if cfg.ema else ''}{', DDP buckets' if ranks > 1 else ''}); per step "
             f"{per_step / GIB:.2f} GiB; left {room / GIB:.2f} GiB / {per_image / GIB:.2f} GiB per image -> "
             f"up to {fit} image(s) per micro-batch"]
    per_rank = cfg.batch_size // ranks
    try:  # the batch fit's own rule, on the estimated peak of each micro-batch
        micro = choose_micro_batch(per_rank, per_rank, lambda m: state + per_step + m * per_image, limit)["micro_batch"]
    except SystemExit:
        micro = 0
    lines.append(f"      batch {cfg.batch_size} = micro-batch {micro} x accum {per_rank // micro} x ranks {ranks}"
                 if micro else f"      batch {cfg.batch_size}: not even one image fits")
    return lines, fit


def main(argv=None) -> dict:
    cfg = parse_args(MemoryConfig, argv)
    if len(cfg.size) != 2 or len(cfg.batches) != 2 or cfg.batches[0] >= cfg.batches[1]:
        raise SystemExit("--size needs H,W and --batches two increasing sizes, e.g. 1,2")
    if cfg.one:
        print(json.dumps(measure_one(cfg)))
        return {}
    load = os.getloadavg()
    print(f"[bench.memory] {cfg.arch} at {cfg.size[0]}x{cfg.size[1]}, forward + backward, CPU peak RSS growth, "
          f"{cfg.threads} thread(s), load average {load[0]:.2f}")
    out = {}
    b1, b2 = cfg.batches
    for amp in ("fp32", "bf16"):
        for ckpt in (False, True):
            r1, r2 = run_one(cfg, amp, ckpt, b1), run_one(cfg, amp, ckpt, b2)
            per_image = (r2["growth"] - r1["growth"]) / (b2 - b1)
            per_step = r1["growth"] - b1 * per_image
            key = f"{amp}{' + grad checkpointing' if ckpt else ''}"
            out[key] = {"per_image": per_image, "per_step": per_step, "growth": [r1["growth"], r2["growth"]],
                        "seconds": [r1["seconds"], r2["seconds"]]}
            print(f"{key:<28} growth batch {b1}: {r1['growth'] / GIB:.2f} GiB ({r1['seconds']:.1f} s), batch {b2}: "
                  f"{r2['growth'] / GIB:.2f} GiB ({r2['seconds']:.1f} s) -> per image {per_image / GIB:.2f} GiB, "
                  f"per step {per_step / GIB:.2f} GiB")
            if amp == "bf16":
                print(f"  estimate for a {cfg.gpu_gib} GiB GPU under fp16 autocast (16-bit activations as measured "
                      f"with bf16 here):")
                for ranks in cfg.ranks:
                    lines, fit = plan(cfg, r1["params"], per_image, per_step, ranks)
                    out[key][f"fit_ranks{ranks}"] = fit
                    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
