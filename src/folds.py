"""Cross-validation folds: multilabel-stratified, grouped by patient, written once as folds.csv.

    python -m src.folds --train_csv=input/ecg-synth-comp/train.csv --n_folds=5 --seed=42
    python -m src.folds --train_csv=... --out=input/my-folds/folds.csv          # explicit place
    python -m src.folds --train_csv=... --seed=7 --force                        # replace an existing, different split

Every later stage reads the same folds.csv (columns: id, fold) so out-of-fold predictions, per-fold thresholds and the
ensemble all refer to one split. Default location: `<input>/<competition folder name>-folds/folds.csv` under
`paths().input` -- not beside train.csv, because on Kaggle the competition folder is read-only. Running again with the
same settings is a no-op; a different split is refused unless --force, so a finished fold model is never silently
evaluated against another split.

Groups: all records of one patient (or one source signal rendered several times) must sit in one fold, otherwise the
validation AUROC leaks. We stratify at group level: each group's label vector is the max over its records (a patient
with any MI record counts as MI), then MultilabelStratifiedKFold assigns whole groups. NaN labels count as 0 here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .config import LABELS, find_input, parse_args, paths
from .sources import competition_columns, require_valid_competition
from .utils import write_csv


def make_folds(df: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_col: str | None = "patient_id",
               label_cols: list[str] | None = None) -> pd.DataFrame:
    """DataFrame(id, fold) in the row order of `df`; deterministic for a given (set of rows, n_folds, seed).

    Groups are sorted by key before splitting, so shuffling the rows of `df` does not change the split. Rows whose
    group is missing (NaN) form a group of their own.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if "id" not in df.columns:
        raise ValueError("make_folds: the table needs an 'id' column")
    ids = df["id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"make_folds: duplicate ids, e.g. {dup}; fold assignment needs unique ids")
    label_cols = list(label_cols) if label_cols is not None else [c for c in LABELS if c in df.columns]
    if not label_cols:
        raise ValueError(f"make_folds: none of the label columns {LABELS} are in the table")
    y = df[label_cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy() > 0

    if group_col and group_col in df.columns and df[group_col].notna().any():
        g = df[group_col].astype("string")
        groups = g.where(g.notna(), "__row__" + ids).astype(str).to_numpy()
    else:
        groups = ids.to_numpy()
    keys, inverse = np.unique(groups, return_inverse=True)  # sorted keys: independent of row order
    if len(keys) < n_folds:
        raise ValueError(f"make_folds: {len(keys)} groups cannot fill {n_folds} folds; lower --n_folds")
    gy = np.zeros((len(keys), y.shape[1]), dtype=np.int8)
    np.maximum.at(gy, inverse, y.astype(np.int8))

    gfold = np.full(len(keys), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(splitter.split(np.zeros((len(keys), 1)), gy)):
        gfold[val] = k
    assert (gfold >= 0).all()
    return pd.DataFrame({"id": ids.to_numpy(), "fold": gfold[inverse]})


def prevalence_table(df: pd.DataFrame, folds: pd.DataFrame, label_cols: list[str] | None = None) -> pd.DataFrame:
    """Per-fold record counts and label prevalences (NaN labels ignored), plus an 'all' row."""
    label_cols = label_cols or [c for c in LABELS if c in df.columns]
    m = df.assign(id=df["id"].astype(str)).merge(folds, on="id")
    rows = []
    for k, part in [(str(k), p) for k, p in m.groupby("fold")] + [("all", m)]:
        vals = part[label_cols].apply(pd.to_numeric, errors="coerce")
        rows.append({"fold": k, "n": len(part), **{c: round(float(vals[c].mean()), 4) for c in label_cols}})
    return pd.DataFrame(rows)


def default_folds_path(train_csv: str | Path) -> Path:
    """Where the CLI writes folds for a competition's train.csv: <input>/<competition folder>-folds/folds.csv."""
    return paths().input / f"{Path(train_csv).resolve().parent.name}-folds" / "folds.csv"


def read_folds(path: str | Path) -> pd.DataFrame:
    """folds.csv as DataFrame(id: str, fold: int), with a clear error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; create it with `python -m src.folds --train_csv=<train.csv>`")
    f = pd.read_csv(path, dtype={"id": str})
    if list(f.columns[:2]) != ["id", "fold"]:
        raise ValueError(f"{path}: expected columns id, fold; got {list(f.columns)}")
    return f


@dataclasses.dataclass
class FoldsConfig:
    """Writes folds.csv (id, fold) for a train.csv; see the module docstring."""
    train_csv: str  # competition train.csv (columns: id, label columns, optional group column)
    n_folds: int = 5  # number of folds
    seed: int = 42  # shuffling seed of the stratifier
    group_col: str = "patient_id"  # rows sharing this value stay in one fold ('' or a missing column: no groups)
    out: str = ""  # output CSV; default <input>/<competition folder>-folds/folds.csv
    force: bool = False  # overwrite an existing folds.csv that holds a different split


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_args(FoldsConfig, argv)
    try:
        src = find_input(cfg.train_csv)  # a path, or <competition slug>/train.csv under the input roots
    except FileNotFoundError as e:
        raise SystemExit(f"--train_csv: {e}") from None
    if (src.parent / "sample_submission.csv").is_file():  # a competition folder: all its problems at once, now
        require_valid_competition(src.parent, "folds", splits=())
    id_col, label_cols = competition_columns(src)  # named by sample_submission.csv when it is beside train.csv
    df = pd.read_csv(src, dtype={id_col: str})
    if id_col not in df.columns:
        raise SystemExit(f"{src}: no id column {id_col!r} (the first column of sample_submission.csv); it has "
                         f"{list(df.columns)}")
    df = df.rename(columns={id_col: "id"})
    for c in label_cols:
        v = pd.to_numeric(df[c], errors="coerce")
        if (v.notna() != df[c].notna()).any() or not set(v.dropna().unique()) <= {0, 1}:
            raise SystemExit(f"{src}: column {c} must hold 0, 1 or blank; found {sorted(set(df[c].dropna()))[:5]}")
    folds = make_folds(df, cfg.n_folds, cfg.seed, cfg.group_col or None, label_cols or None)
    out = Path(cfg.out) if cfg.out else default_folds_path(src)

    print(prevalence_table(df, folds, label_cols or None).to_string(index=False))
    if out.exists():
        old = read_folds(out)
        same = old.sort_values("id").reset_index(drop=True).equals(folds.sort_values("id").reset_index(drop=True))
        if same:
            print(f"[folds] {out} already holds this split; unchanged")
            return out
        if not cfg.force:
            raise SystemExit(f"[folds] {out} exists with a different split (other data, n_folds or seed); models "
                             f"trained on it would be scored on the wrong folds. Pass --force to replace it, or "
                             f"--out=<new path>.")
    write_csv(out, folds)
    print(f"[folds] wrote {len(folds)} ids in {cfg.n_folds} folds -> {out}")
    return out


if __name__ == "__main__":
    main()
