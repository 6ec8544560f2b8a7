"""Kaggle kernel, Stage I: train the ROI detector and learn ECG morphology from scan-like images, on both T4s.

Attach: the `ecgka-bundle` dataset (python -m src.bundle), the scans (`ecg-synth-scans`, or your own set in that
layout) and the ROI set (`ecg-synth-roi`); internet on (ImageNet weights from the hub: ECGKA_PRETRAINED=hub). From the
second version on, also attach this notebook's own output (`ecgka-stage1`): the run resumes where the last version
stopped (ECGKA_SESSION_EPOCHS epochs per version; 0 = all). Outputs, under /kaggle/working, for the Stage II and
inference kernels: outputs/roi/yolov8n/best.pt and outputs/pretrain/stage1/best.pt.
Settings come from ECGKA_* environment variables (defaults: the paper's recipe, sized for 2x T4) so this same file runs
in the tests.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
SELF = E("ECGKA_SELF", "ecgka-stage1")  # this notebook's previous output, when attached
ARCH, SIZE, EPOCHS = E("ECGKA_ARCH", "convnext_base"), E("ECGKA_SIZE", "512,768"), E("ECGKA_EPOCHS", "50")
SCANS, ROI = E("ECGKA_SCANS", "ecg-synth-scans"), E("ECGKA_ROI", "ecg-synth-roi")
PRETRAINED = E("ECGKA_PRETRAINED", "hub")  # hub (timm's ImageNet weights) | a weights file | '' (random init)
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training
os.environ.setdefault("HF_HUB_OFFLINE", "0" if PRETRAINED == "hub" else "1")  # the kit is offline unless told


def kit(*args):  # one `python -m <module>` of the kit, run from /kaggle/working (relative paths land there)
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


kit("src.bundle", "install")
kit("src.restore", f"--src={SELF}")
if not os.path.exists("outputs/roi/yolov8n/metrics.json"):  # written when the detector has finished training
    kit("src.roi", "train", f"--data={ROI}/dataset.yaml", f"--epochs={E('ECGKA_ROI_EPOCHS', '30')}",
        f"--imgsz={E('ECGKA_ROI_IMGSZ', '416')}", "--name=yolov8n", "--resume")
kit("src.preprocess", f"--src={SCANS}/images", "--dst=input/cache-scans", f"--size={SIZE}",
    "--roi_weights=outputs/roi/yolov8n/best.pt")
kit("src.launch", "src.pretrain", f"--sources=input/cache-scans:{SCANS}/labels.csv", f"--arch={ARCH}",
    f"--epochs={EPOCHS}", f"--pretrained={PRETRAINED}", f"--batch_size={E('ECGKA_BATCH', '32')}",
    f"--session_epochs={E('ECGKA_SESSION_EPOCHS', '0')}", "--name=stage1", "--resume", *EXTRA)
