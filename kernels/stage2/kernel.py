"""Kaggle kernel, Stage II: fine-tune on the competition's photos from the Stage I weights, all folds or some.

Attach: `ecgka-bundle`, the competition, and the Stage I notebook's output (`ecgka-stage1`). Both T4s train each fold
under torchrun (DDP, fp16 AMP). Five folds rarely fit one 12-hour session: train some per version (ECGKA_FOLD=0,1,2
then 3,4) and, from the second version on, attach this notebook's own output (`ecgka-stage2`): finished folds are
copied back and kept, an unfinished one resumes. Or fork the notebook and let each copy train its own folds; the
inference kernel gathers fold folders from every attached Stage II output.
Output, for the inference kernel: outputs/train/stage2/fold<k>/ under /kaggle/working.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
SELF = E("ECGKA_SELF", "ecgka-stage2")  # this notebook's previous output, when attached
COMP, STAGE1 = E("ECGKA_COMP", "bhf-data-science-centre-ecg-challenge"), E("ECGKA_STAGE1", "ecgka-stage1/outputs")
ARCH, SIZE, EPOCHS = E("ECGKA_ARCH", "convnext_base"), E("ECGKA_SIZE", "512,768"), E("ECGKA_EPOCHS", "30")
EXTRA = E("ECGKA_EXTRA", "").split()  # more --key=value for training


def kit(*args):  # one `python -m <module>` of the kit, run from /kaggle/working (relative paths land there)
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


kit("src.bundle", "install")
kit("src.check", f"--comp={COMP}")  # every problem of the competition's tables, before anything long
kit("src.restore", f"--src={SELF}")
kit("src.folds", f"--train_csv={COMP}/train.csv", "--out=input/folds.csv")
kit("src.preprocess", f"--src={COMP}/train.csv", "--dst=input/cache-train", f"--size={SIZE}",
    f"--roi_weights={STAGE1}/roi/yolov8n/best.pt")
kit("src.launch", "src.train", f"--fold={E('ECGKA_FOLD', 'all')}", "--cache=input/cache-train",
    f"--train_csv={COMP}/train.csv", "--folds_csv=input/folds.csv", f"--init={STAGE1}/pretrain/stage1/best.pt",
    f"--arch={ARCH}", f"--epochs={EPOCHS}", f"--batch_size={E('ECGKA_BATCH', '32')}",
    f"--session_epochs={E('ECGKA_SESSION_EPOCHS', '0')}", "--name=stage2", "--resume", *EXTRA)
