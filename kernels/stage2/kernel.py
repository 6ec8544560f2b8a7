"""Kaggle kernel, Stage II: fine-tune on the competition's photos, one fold or all five, from the Stage I weights.

Attach: `ecgka-bundle`, the competition, and this notebook's Stage I output (`ecgka-stage1`). On 2xT4 the folds run
under torchrun (DDP, fp16 AMP). A fold that does not finish in one 12-hour session resumes in the next (--resume).
Output, to attach to the inference kernel: outputs/train/stage2/ under /kaggle/working.
"""
import os
import subprocess
import sys

import torch

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
COMP, STAGE1 = E("ECGKA_COMP", "bhf-data-science-centre-ecg-challenge"), E("ECGKA_STAGE1", "ecgka-stage1/outputs")
ARCH, SIZE, EPOCHS, FOLD = E("ECGKA_ARCH", "convnext_base"), E("ECGKA_SIZE", "512,768"), E("ECGKA_EPOCHS", "30"), \
    E("ECGKA_FOLD", "all")
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training


def kit(*args, launcher=(sys.executable, "-m")):  # one stage of the kit, run from /kaggle/working
    subprocess.run([*launcher, *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


kit("src.bundle", "install")
kit("src.folds", f"--train_csv={COMP}/train.csv", "--out=folds.csv")
kit("src.preprocess", f"--src={COMP}/train.csv", "--dst=cache-train", f"--size={SIZE}",
    f"--roi_weights={STAGE1}/roi/yolov8n/best.pt")
gpus = torch.cuda.device_count()
launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m") \
    if gpus > 1 else (sys.executable, "-m")
kit("src.train", f"--fold={FOLD}", "--cache=cache-train", f"--train_csv={COMP}/train.csv", "--folds_csv=folds.csv",
    f"--init={STAGE1}/pretrain/stage1/best.pt", f"--arch={ARCH}", f"--epochs={EPOCHS}", "--name=stage2", "--resume",
    *EXTRA, launcher=launcher)
