"""Run one training stage on every GPU of this machine: torchrun (DDP, one process per GPU) with two or more GPUs,
one plain process otherwise (one GPU, or the CPU). run_all.sh and the Kaggle kernels start Stage I and Stage II
through it, so the choice is made in one place.

    python -m src.launch src.pretrain --sources=... --name=stage1 --resume
    python -m src.launch src.train --fold=all ... --name=stage2 --resume

Every rank runs the same command line; the stages read their rank from torchrun's environment (src.utils.dist_env).
"""
from __future__ import annotations

import os
import sys

STAGES = ("src.pretrain", "src.train")


def command(stage: str, args: list[str], gpus: int) -> list[str]:
    """The command line that runs `stage` with `args` on `gpus` GPUs."""
    if stage not in STAGES:
        raise SystemExit(f"src.launch runs a training stage ({', '.join(STAGES)}), not {stage!r}")
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", stage, *args]
    return [sys.executable, "-m", stage, *args]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    import torch
    cmd = command(argv[0], argv[1:], torch.cuda.device_count())
    print(f"[launch] {' '.join(cmd[1:])}", flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
