"""Kaggle kernel, Stage II: fine-tune on the competition's photos from the Stage I weights, all folds or some.

Attach: `ecgka-bundle`, the competition, and the Stage I notebook's output (`ecgka-stage1`). Both T4s train each fold
under torchrun (DDP, fp16 AMP). Five folds rarely fit one 12-hour session: train some per version (ECGKA_FOLD=0,1,2
then 3,4) and, from the second version on, attach this notebook's own output (`ecgka-stage2`): finished folds are
copied back and kept, an unfinished one resumes. Or fork the notebook and let each copy train its own folds; the
inference kernel gathers fold folders from every attached Stage II output.
Output, for the inference kernel: outputs/train/stage2/fold<k>/ under /kaggle/working.
Settings: the bundle's recipes/paper.yaml (ECGKA_RECIPE); ECGKA_ARCH, _SIZE, _EPOCHS, _BATCH, _SESSION_EPOCHS
override it when set.
Routes (ECGKA_ROUTE, as in the Stage I kernel): image (the default), signal (the training photos digitised once into
input/digitised-train, then the 1D signal network from outputs/pretrain/signal-stage1 over the same folds, into
outputs/train/signal-stage2; recipes/signal.yaml or ECGKA_SIGNAL_RECIPE) or both.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
SELF = E("ECGKA_SELF", "ecgka-stage2")  # this notebook's previous output, when attached
COMP, STAGE1 = E("ECGKA_COMP", "bhf-data-science-centre-ecg-challenge"), E("ECGKA_STAGE1", "ecgka-stage1/outputs")
RECIPE = "--recipe=" + E("ECGKA_RECIPE", "paper")  # recipes/<name>.yaml in the bundle, or a path
ROUTE = E("ECGKA_ROUTE", "image")  # image | signal | both
SIGNAL_RECIPE = "--recipe=" + E("ECGKA_SIGNAL_RECIPE", "signal")  # the signal route's recipe
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training


def kit(*args):  # one `python -m <module>` of the kit, run from /kaggle/working (relative paths land there)
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


def given(**keys):  # --key=value for each ECGKA_<NAME> that is set (key=NAME): this notebook's overrides
    return [f"--{k}={E('ECGKA_' + v)}" for k, v in keys.items() if E("ECGKA_" + v) is not None]


if ROUTE not in ("image", "signal", "both"):
    sys.exit(f"ECGKA_ROUTE={ROUTE}: choose image, signal or both")
kit("src.bundle", "install")
kit("src.check", f"--comp={COMP}")  # every problem of the competition's tables, before anything long
kit("src.restore", f"--src={SELF}")
kit("src.folds", f"--train_csv={COMP}/train.csv", "--out=input/folds.csv")
FOLDS = [f"--fold={E('ECGKA_FOLD', 'all')}", f"--train_csv={COMP}/train.csv", "--folds_csv=input/folds.csv"]
if ROUTE != "signal":
    kit("src.preprocess", RECIPE, f"--src={COMP}/train.csv", "--dst=input/cache-train", *given(size="SIZE"),
        f"--roi_weights={STAGE1}/roi/yolov8n/best.pt")
    kit("src.launch", "src.train", RECIPE, *FOLDS, "--cache=input/cache-train",
        f"--init={STAGE1}/pretrain/stage1/best.pt",
        *given(arch="ARCH", epochs="EPOCHS", batch_size="BATCH", session_epochs="SESSION_EPOCHS"),
        "--name=stage2", "--resume", *EXTRA)
if ROUTE != "image":
    kit("src.digitize", f"--images={COMP}/train", "--out=input/digitised-train")  # resumable; kept by src.restore
    kit("src.launch", "src.train", SIGNAL_RECIPE, *FOLDS, "--cache=input/digitised-train",
        f"--init={STAGE1}/pretrain/signal-stage1/best.pt",
        *given(epochs="EPOCHS", batch_size="BATCH", session_epochs="SESSION_EPOCHS"), "--name=signal-stage2",
        "--resume")
