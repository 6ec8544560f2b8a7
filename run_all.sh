#!/usr/bin/env bash
# ecgka — one entry point.
#   ./run_all.sh               build the synthetic competition (or use real data in input/), train, infer, score
#   ROUTE=signal ./run_all.sh  the same through the fast signal route (ROUTE=both: both routes, one vote; Settings)
#   ./run_all.sh test          run the test suite
# Both create/reuse the virtual environment in .venv/ from requirements.txt by themselves.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

# ---------------------------------------------------------------------------------------------------------------
# Environment: .venv from requirements.txt, rebuilt only when requirements.txt changes (a stamp holds its hash).
# ---------------------------------------------------------------------------------------------------------------
OPENCV_HEADLESS=5.0.0.93   # keep equal to the pin in requirements.txt
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# pip -q still warns about every absent local index folder on these machines; keep real errors only.
pipq() { "$PY" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
setup_venv() {
  local want have
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
  if [[ -x "$PY" && "$want" == "$have" ]]; then return; fi
  echo "[setup] creating/updating $VENV from requirements.txt (first time: ~3 min)"
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  pipq --upgrade pip
  pipq -r requirements.txt
  # ultralytics installs GUI opencv-python, which needs libGL; both packages write cv2/, so reinstalling the headless
  # build last leaves one working, GUI-free cv2 (pip check then reports opencv-python as missing: harmless).
  pipq --force-reinstall --no-deps "opencv-python-headless==$OPENCV_HEADLESS"
  "$PY" -c "import cv2, torch, timm, albumentations" 
  echo "$want" > "$VENV/.requirements.sha256"
}

# Offline switches, set once here and again in src/config.py for direct `python -m src.X` use (HF_HUB_OFFLINE=0 lets
# --pretrained=hub download ImageNet weights).
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} NO_ALBUMENTATIONS_UPDATE=1 YOLO_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1

if [[ "${1:-}" == "test" ]]; then
  shift
  setup_venv
  exec "$PY" -m pytest -q "$@"
fi

setup_venv

# ---------------------------------------------------------------------------------------------------------------
# Settings (environment variables). ROUTE picks how photos are read (README "Routes"). image (the default; DEBUG=1:
# both): the paper's route, photos preprocessed into images for a CNN, Stage I on the synthetic scans. signal: each
# photo is digitised into 12 leads (src.digitize) and read by the 1D CNN ecgka_sig1d, Stage I on synthetic signals
# made in memory, Stage II on the digitised training photos: minutes instead of hours on a CPU, lower scores while the
# digitiser loses detail; its recipe is SIGNAL_RECIPE (recipes/signal.yaml; DEBUG=1 adds recipes/signal-debug.yaml). both: both
# routes trained, their ten fold models voted together. RECIPE names the image route's training recipe:
# recipes/<RECIPE>.yaml or a path, read by every stage below (--recipe; src/config.py "Recipes"). cpu (the default):
# trace maps read by the kit's small ecgka_tracenet from random weights, sized for a 2-core CPU box (~2 h from
# nothing: README "Results"). paper: the paper's roi_clahe + ConvNeXt-Base from ImageNet weights at 512x768, for a GPU
# (and HF_HUB_OFFLINE=0 for the hub weights). DEBUG=1 is the same pipeline at toy size (the smoke test): the recipe
# plus the recipes/debug.yaml overlay, a tiny stand-in backbone from random weights, so RECIPE=paper DEBUG=1 downloads
# nothing. STRATEGY, SIZE, ARCH, AUG, BATCH, EPOCHS1/LR1 (Stage I), EPOCHS2/LR2 (Stage II), ROI_EPOCHS, ROI_IMGSZ
# override the image recipe's value when set.
# ---------------------------------------------------------------------------------------------------------------
DEBUG=${DEBUG:-0}
DEFAULT_ROUTE=image; [[ "$DEBUG" == 1 ]] && DEFAULT_ROUTE=both  # the smoke test runs both routes
ROUTE=${ROUTE:-$DEFAULT_ROUTE}
case "$ROUTE" in image|signal|both) ;; *) echo "ROUTE=$ROUTE: choose signal, image or both" >&2; exit 1 ;; esac
IMAGE=1; [[ "$ROUTE" == signal ]] && IMAGE=0
SIGNAL=1; [[ "$ROUTE" == image ]] && SIGNAL=0
SIGNAL_RECIPES=${SIGNAL_RECIPE:-signal}; [[ "$DEBUG" == 1 ]] && SIGNAL_RECIPES="$SIGNAL_RECIPES,signal-debug"
RECIPE=${RECIPE:-cpu}
RECIPES=$RECIPE; [[ "$DEBUG" == 1 ]] && RECIPES="$RECIPE,debug"
TAG=""; [[ "$RECIPE" != cpu ]] && TAG="-$(basename "${RECIPE%.y*ml}")"  # run names of other recipes carry theirs
if [[ "$DEBUG" == 1 ]]; then
  PRESET=tiny; SYNTH=${SYNTH:-ecg-synth-tiny}; RUN=${RUN:-debug$TAG}
  SCORE_ARGS=(--skip_degenerate=true)  # 20 toy test images: a class may have no positives, AUROC is then undefined
else
  PRESET=${PRESET:-demo}; SYNTH=${SYNTH:-ecg-synth}; RUN=${RUN:-demo$TAG}
  SCORE_ARGS=()
fi
recipe() { "$PY" -m src.config "$RECIPES" "$1"; }  # the value the recipe gives one option, e.g. preprocess.size
STRATEGY=${STRATEGY:-$(recipe preprocess.strategy)}; SIZE=${SIZE:-$(recipe preprocess.size)}  # they name the caches
ROI_EPOCHS=${ROI_EPOCHS:-$(recipe roi_train.epochs)}  # 0: no detector, preprocessing uses the OpenCV fallback
opt() { if [[ -n "${!1:-}" ]]; then echo "--$2=${!1}"; fi; }  # --key=$VAR when VAR is set
FIT=(--recipe="$RECIPES" $(opt ARCH arch) $(opt AUG aug) $(opt BATCH batch_size))
# The real competition is used when it is in input/ (python -m src.download bhf); else the synthetic one.
REAL=bhf-data-science-centre-ecg-challenge
[[ -z "${COMP:-}" && -f "input/$REAL/train.csv" && "$DEBUG" != 1 ]] && COMP=$REAL
COMP=${COMP:-$SYNTH-comp}          # competition folder under input/ (see README "Real data")
SCANS=${SCANS:-$SYNTH-scans}       # Stage I scan-like set (images/ + labels.csv)
ROISET=${ROISET:-$SYNTH-roi}       # YOLO set for the ROI detector
SEED=${SEED:-0}
IN=input; OUT=outputs
SUBNAME=$RUN; [[ "$ROUTE" != image ]] && SUBNAME="$RUN-$ROUTE"  # submission and score names carry other routes
step() { echo; echo "=== [run_all] $*"; }
py() { "$PY" -m "$@"; }

# 0. The competition's tables, checked in seconds before anything long (every problem listed at once; a synthetic
#    competition that is not built yet is checked by step 2).
[[ -f "$IN/$COMP/train.csv" ]] && { step "check $IN/$COMP"; py src.check --comp="$IN/$COMP"; }

# 1. Data: the synthetic competition unless a real one is used; the image route's Stage I scans and ROI set (the signal
#    route makes its Stage I records in memory).
step "data: synthetic preset=$PRESET -> $IN/$SYNTH-*"
NOCOMP=(); [[ "$COMP" != "$SYNTH-comp" ]] && NOCOMP=(--n_train=0 --n_test=0)
[[ "$IMAGE" == 0 ]] && NOCOMP+=(--n_scans=0 --n_roi=0)
py src.make_data --preset="$PRESET" --seed="$SEED" --name="$SYNTH" "${NOCOMP[@]}"
[[ -f "$IN/$COMP/train.csv" ]] || { echo "no $IN/$COMP/train.csv: see README 'Real data'" >&2; exit 1; }

# 2. Folds: multilabel-stratified, grouped by patient; written once.
step "folds -> $IN/$COMP-folds/folds.csv"
py src.folds --train_csv="$IN/$COMP/train.csv" --n_folds=5 --seed=42

if [[ "$IMAGE" == 1 ]]; then
  # 3. ROI detector (YOLO) on the synthetic photos' free boxes; skipped when trained. 0 epochs (the cpu recipe) skips
  #    it and preprocessing uses the OpenCV fallback detector (see README "Results").
  ROI_W=""
  if [[ "$ROI_EPOCHS" -gt 0 ]]; then
    ROI_W="$OUT/roi/$RUN-yolo/best.pt"
    step "ROI detector -> $ROI_W"
    [[ -f "$ROI_W" ]] || py src.roi train --recipe="$RECIPES" --data="$IN/$ROISET/dataset.yaml" \
      --epochs="$ROI_EPOCHS" $(opt ROI_IMGSZ imgsz) --name="$RUN-yolo"
  fi

  # 4. Preprocess (the same function for train, Stage I and test images) into caches named by their settings;
  #    resumable.
  C1="$IN/$COMP-$STRATEGY-${SIZE/,/x}"; C2="$IN/$SCANS-$STRATEGY-${SIZE/,/x}"
  step "preprocess ($STRATEGY) -> $C1, $C2"
  PRE=(--recipe="$RECIPES" --strategy="$STRATEGY" --size="$SIZE" --roi_weights="$ROI_W")
  py src.preprocess --src="$IN/$COMP/train.csv" --dst="$C1" "${PRE[@]}"
  py src.preprocess --src="$IN/$SCANS/images" --dst="$C2" "${PRE[@]}"

  # 5. Stage I: morphology from scan-like images (src.launch: torchrun on every GPU when there are two or more).
  step "Stage I -> $OUT/pretrain/$RUN-stage1"
  py src.launch src.pretrain --sources="$C2:$IN/$SCANS/labels.csv" "${FIT[@]}" $(opt LR1 lr) \
    $(opt EPOCHS1 epochs) --name="$RUN-stage1" --resume

  # 6. Stage II: 5 folds on the competition photos, from the Stage I weights.
  step "Stage II -> $OUT/train/$RUN-stage2"
  py src.launch src.train --fold=all --cache="$C1" --train_csv="$IN/$COMP/train.csv" \
    --folds_csv="$IN/$COMP-folds/folds.csv" --init="$OUT/pretrain/$RUN-stage1/best.pt" "${FIT[@]}" $(opt LR2 lr) \
    $(opt EPOCHS2 epochs) --name="$RUN-stage2" --resume
fi

# 5s-6s. The signal route: the training photos digitised once (resumable), Stage I on synthetic signals, Stage II on
#    the digitised photos over the same folds. Inference digitises the test photos itself.
if [[ "$SIGNAL" == 1 ]]; then
  DIG="$IN/$COMP-digitised"
  step "digitise the training photos -> $DIG"
  py src.digitize --images="$IN/$COMP/train" --out="$DIG"
  step "Stage I (signal) -> $OUT/pretrain/$RUN-signal-stage1"
  py src.launch src.pretrain --recipe="$SIGNAL_RECIPES" --name="$RUN-signal-stage1" --resume
  step "Stage II (signal) -> $OUT/train/$RUN-signal-stage2"
  py src.launch src.train --recipe="$SIGNAL_RECIPES" --fold=all --cache="$DIG" --train_csv="$IN/$COMP/train.csv" \
    --folds_csv="$IN/$COMP-folds/folds.csv" --init="$OUT/pretrain/$RUN-signal-stage1/best.pt" \
    --name="$RUN-signal-stage2" --resume
fi

# 7. Inference: the recipe's vote of the five folds of the route, or of all ten with ROUTE=both (hard, ties ordered by
#    the mean probability).
SUB="submissions/$SUBNAME-submission.csv"
RUNS=()
[[ "$IMAGE" == 1 ]] && RUNS+=("$OUT/train/$RUN-stage2")
[[ "$SIGNAL" == 1 ]] && RUNS+=("$OUT/train/$RUN-signal-stage2")
step "infer ($ROUTE) -> $SUB"
py src.infer --recipe="$RECIPES" --run="$(IFS=,; echo "${RUNS[*]}")" --route="$ROUTE" --out="$SUB"

# 8. Score against the hidden solution when there is one (the synthetic competition has it).
SOL="$IN/$COMP-solution/solution.csv"
if [[ -f "$SOL" ]]; then
  step "score -> $OUT/score/$SUBNAME.json"
  py src.score --submission="$SUB" --solution="$SOL" --out="$OUT/score/$SUBNAME.json" "${SCORE_ARGS[@]}"
fi
echo; echo "[run_all] done: submission $SUB"
