"""Kaggle kernel, Stage I: train the ROI detector and learn ECG morphology from scan-like images.

Attach: the `ecgka-bundle` dataset (python -m src.bundle), the scans (`ecg-synth-scans`, or your own set in that
layout) and the ROI set (`ecg-synth-roi`). Outputs, to attach to the Stage II and inference kernels:
outputs/roi/yolov8n/best.pt and outputs/pretrain/stage1/best.pt under /kaggle/working.
Settings come from ECGKA_* environment variables (defaults: the paper's) so this same file runs in the tests.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
ARCH, SIZE, EPOCHS = E("ECGKA_ARCH", "convnext_base"), E("ECGKA_SIZE", "512,768"), E("ECGKA_EPOCHS", "50")
SCANS, ROI = E("ECGKA_SCANS", "ecg-synth-scans"), E("ECGKA_ROI", "ecg-synth-roi")
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training, e.g. --pretrained=/kaggle/input/w/x.pth


def kit(*args):  # one `python -m src.<stage>` of the kit, run from /kaggle/working (relative paths land there)
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


kit("src.bundle", "install")
kit("src.roi", "train", f"--data={ROI}/dataset.yaml", f"--epochs={E('ECGKA_ROI_EPOCHS', '30')}",
    f"--imgsz={E('ECGKA_ROI_IMGSZ', '416')}", "--name=yolov8n")
kit("src.preprocess", f"--src={SCANS}/images", "--dst=cache-scans", f"--size={SIZE}",
    "--roi_weights=outputs/roi/yolov8n/best.pt")
kit("src.pretrain", f"--sources=cache-scans:{SCANS}/labels.csv", f"--arch={ARCH}",
    f"--epochs={EPOCHS}", "--name=stage1", "--resume", *EXTRA)
