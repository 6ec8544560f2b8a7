"""Tiny stand-ins for what src.preprocess and src.make_data write, for the training tests: a cache folder
(images/<id>.png at model input size, index.csv, preprocess.yaml) and a label table. Each positive label draws a
bright bar in its own column band, so a model can learn the task in a few steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.config import LABELS
from src.utils import imwrite, write_text


def make_cache(root: Path, n: int, size=(32, 64), labels=LABELS, seed: int = 0, prefix: str = "r",
               skipped: int = 0) -> tuple[Path, Path]:
    """Returns (cache_dir, labels_csv). `skipped` extra ids are listed in index.csv with status skipped."""
    rng = np.random.default_rng(seed)
    cache = Path(root)
    (cache / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    rows, index = [], []
    for i in range(n):
        rid = f"{prefix}{i:04d}"
        y = (rng.random(len(labels)) < 0.4).astype(float)
        img = rng.integers(150, 256, (h, w, 3), dtype=np.uint8)
        band = w // len(labels)
        for j, v in enumerate(y):
            if v:
                img[h // 4: 3 * h // 4, j * band: j * band + band // 2] = 20
        imwrite(cache / "images" / f"{rid}.png", img)
        rows.append({"id": rid, **dict(zip(labels, y)), "patient_id": f"p{i // 2}"})
        index.append({"id": rid, "cache_path": f"images/{rid}.png", "status": "ok", "error": ""})
    for i in range(skipped):
        rid = f"{prefix}bad{i}"
        rows.append({"id": rid, **{lb: 1.0 for lb in labels}, "patient_id": f"q{i}"})
        index.append({"id": rid, "cache_path": "", "status": "skipped", "error": "unreadable"})
    pd.DataFrame(index).to_csv(cache / "index.csv", index=False)
    write_text(cache / "preprocess.yaml", f"strategy: raw\nsize: [{h}, {w}]\n")
    pd.DataFrame(rows).to_csv(cache / "labels.csv", index=False)
    return cache, cache / "labels.csv"


def make_folds(labels_csv: Path, out: Path, n_folds: int = 2) -> Path:
    df = pd.read_csv(labels_csv, dtype={"id": str})
    pd.DataFrame({"id": df["id"], "fold": np.arange(len(df)) % n_folds}).to_csv(out, index=False)
    return out
