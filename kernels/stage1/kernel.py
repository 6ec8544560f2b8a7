"""Kaggle kernel, Stage I: train the ROI detector and learn ECG morphology from scan-like images, on both T4s.

Attach: the `ecgka-bundle` dataset (python -m src.bundle), the scans (`ecg-synth-scans`, or your own set in that
layout) and the ROI set (`ecg-synth-roi`); internet on (the recipe's ImageNet weights come from the hub). From the
second version on, also attach this notebook's own output (`ecgka-stage1`): the run resumes where the last version
stopped (ECGKA_SESSION_EPOCHS epochs per version; 0 = all). Outputs, under /kaggle/working, for the Stage II and
inference kernels: outputs/roi/yolov8n/best.pt and outputs/pretrain/stage1/best.pt.
Settings: the bundle's recipes/paper.yaml (ECGKA_RECIPE); ECGKA_ARCH, _SIZE, _EPOCHS, _PRETRAINED, _BATCH,
_ROI_EPOCHS, _ROI_IMGSZ override it when set (so this same file runs in the tests).
Routes (ECGKA_ROUTE): image (the default, the paper's: the above), signal (Stage I of the 1D signal network on
synthetic signals made in memory, recipes/signal.yaml or ECGKA_SIGNAL_RECIPE; ECGKA_SIGNAL_SOURCES adds real signal
sets attached as datasets, e.g. synth:16000,ptbxl:ptb-xl; needs neither scans nor the ROI set, nor the internet) or
both. Signal output: outputs/pretrain/signal-stage1/best.pt; _EPOCHS, _BATCH, _SESSION_EPOCHS apply to it too.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
SELF = E("ECGKA_SELF", "ecgka-stage1")  # this notebook's previous output, when attached
SCANS, ROI = E("ECGKA_SCANS", "ecg-synth-scans"), E("ECGKA_ROI", "ecg-synth-roi")
RECIPE = "--recipe=" + E("ECGKA_RECIPE", "paper")  # recipes/<name>.yaml in the bundle, or a path
ROUTE = E("ECGKA_ROUTE", "image")  # image | signal | both
SIGNAL_RECIPE = "--recipe=" + E("ECGKA_SIGNAL_RECIPE", "signal")  # the signal route's recipe
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training
os.environ.setdefault("HF_HUB_OFFLINE", "0")  # the kit is offline unless told: the recipe's --pretrained=hub downloads


def kit(*args):  # one `python -m <module>` of the kit, run from /kaggle/working (relative paths land there)
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


def given(**keys):  # --key=value for each ECGKA_<NAME> that is set (key=NAME): this notebook's overrides
    return [f"--{k}={E('ECGKA_' + v)}" for k, v in keys.items() if E("ECGKA_" + v) is not None]


if ROUTE not in ("image", "signal", "both"):
    sys.exit(f"ECGKA_ROUTE={ROUTE}: choose image, signal or both")
kit("src.bundle", "install")
kit("src.restore", f"--src={SELF}")
if ROUTE != "signal":
    if not os.path.exists("outputs/roi/yolov8n/metrics.json"):  # written when the detector has finished training
        kit("src.roi", "train", RECIPE, f"--data={ROI}/dataset.yaml", *given(epochs="ROI_EPOCHS", imgsz="ROI_IMGSZ"),
            "--name=yolov8n", "--resume")
    kit("src.preprocess", RECIPE, f"--src={SCANS}/images", "--dst=input/cache-scans", *given(size="SIZE"),
        "--roi_weights=outputs/roi/yolov8n/best.pt")
    kit("src.launch", "src.pretrain", RECIPE, f"--sources=input/cache-scans:{SCANS}/labels.csv",
        *given(arch="ARCH", epochs="EPOCHS", pretrained="PRETRAINED", batch_size="BATCH",
               session_epochs="SESSION_EPOCHS"), "--name=stage1", "--resume", *EXTRA)
if ROUTE != "image":
    kit("src.launch", "src.pretrain", SIGNAL_RECIPE,
        *given(sources="SIGNAL_SOURCES", epochs="EPOCHS", batch_size="BATCH", session_epochs="SESSION_EPOCHS"),
        "--name=signal-stage1", "--resume")
