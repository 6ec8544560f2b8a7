"""Kaggle kernel, inference: preprocess the test photos exactly as training did, vote every fold model found with
the recipe's vote (recipes/paper.yaml: hard, ties ordered by the mean probability), write
/kaggle/working/submission.csv. Runs with the internet off (code competitions).

Attach: `ecgka-bundle`, the competition, and every Stage II output whose folds should vote (one notebook that trained
all five folds, or several that trained some each); their run folders carry the preprocessing config and the ROI
weights, so nothing else is needed. A fold found in two outputs must be the same file. Image and signal runs
(outputs/train/stage2 and outputs/train/signal-stage2 of the Stage II kernel) are voted together, every fold model of
both in one vote; ECGKA_ROUTE=image or signal keeps one route's. Signal folds digitise the test photos here.
"""
import os
import subprocess
import sys

E = os.environ.get
KIT = os.path.join(E("ECGKA_BUNDLE", "/kaggle/input/ecgka-bundle"), "ecgka")  # the bundle's copy of the kit
COMP = E("ECGKA_COMP", "bhf-data-science-centre-ecg-challenge")  # dataset slugs resolve under /kaggle/input
RUN = E("ECGKA_RUN", "*/outputs/train/*stage2")  # Stage II run folders (image stage2, signal-stage2): a comma list,
# globs over the attached inputs
ROUTE = E("ECGKA_ROUTE", "both")  # which runs vote: image | signal | both (every run found)
RECIPE = "--recipe=" + E("ECGKA_RECIPE", "paper")  # the vote: recipes/<name>.yaml in the bundle, or a path


def kit(*args):  # one `python -m <module>` of the kit, run from /kaggle/working
    subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": KIT}, check=True)


kit("src.bundle", "install")
kit("src.infer", RECIPE, f"--run={RUN}", f"--route={ROUTE}", f"--test_dir={COMP}/test",
    f"--sample_submission={COMP}/sample_submission.csv", "--out=submission.csv")
