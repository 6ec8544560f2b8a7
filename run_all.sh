#!/usr/bin/env bash
# ecgka — one entry point.
#   ./run_all.sh          build the synthetic competition (or use real data in input/), train, infer, score
#   ./run_all.sh test     run the test suite
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

# Offline switches, set once here and again in src/config.py for direct `python -m src.X` use.
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 YOLO_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1

if [[ "${1:-}" == "test" ]]; then
  shift
  setup_venv
  exec "$PY" -m pytest -q "$@"
fi

setup_venv
echo "[run_all] pipeline not wired yet" >&2
exit 1
