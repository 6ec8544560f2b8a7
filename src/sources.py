"""Readers for real ECG data: each turns one public source into the same label table, so the synthetic competition and
real data go through the same code.

    from src import compose, sources
    train, test, label_cols = sources.read_competition("bhf-data-science-centre-ecg-challenge")
    ptbxl = sources.read_ptbxl("ptb-xl", sampling=500)
    scans = compose.render_signal_source(ptbxl, "input/ptbxl-scans", n_per_record=2, seed=0, hw=(850, 1100))

The signals of signal sources are read by src/signals.py; compose.render_signal_source draws them into image sets.

Every reader returns a pandas DataFrame with columns, in this order:
  id          str, unique within the table (prefixed by source where ids would collide across sources: `ptbxl_17`)
  path        absolute path of the image, or of the signal record for signal sources
  MI AF HYP CD STTC   float: 1.0 / 0.0 / NaN, where NaN means "this source does not say" (mask it in the loss)
  patient_id  str, where the source has it (use it to group folds); strat_fold where the source ships folds
  ...         source-specific extras (ecg_id, fs, class_name, ...)
Roots may be a path or a dataset name that `config.find_input` resolves (input/<name>, /kaggle/input/<name>).
Files that are listed but missing or unreadable never stop a read: they are left out, counted on one stderr line, and
listed in `df.attrs["skipped"]` as {"id", "path", "error"} dicts (image folders also get `df.attrs["duplicates"]`).

Label decisions, in one place:
- Competition: the label columns are whatever `sample_submission.csv` lists after its id column, read at run time.
- PTB-XL: MI/HYP/CD/STTC are the diagnostic superclasses (scp_statements.csv `diagnostic_class`) of every diagnostic
  statement in `scp_codes`, whatever its likelihood, as PTB-XL's own example aggregates them (`min_likelihood` raises
  the bar; only diagnostic statements carry likelihoods, rhythm ones are listed with 0). NORM-only -> all four 0. A
  record with no diagnostic statement left -> the four are NaN (not "healthy"). AF = 1 if AFIB or AFLT is listed, 0 if
  other rhythm statements are, NaN if the record has no rhythm statement at all.
- CODE-15%: CD = 1 if 1dAVb, RBBB or LBBB; AF from AF (fibrillation only; PTB-XL's AF also counts flutter); SB/ST
  ignored; MI/HYP/STTC NaN (never annotated). CD = 0 needs evidence: with `strict_negatives` (default) only exams the
  annotation calls `normal_ecg`, because CODE-15% does not annotate other conduction defects (LAFB, IVCD, 2nd/3rd degree
  block, WPW) that PTB-XL's CD class holds; the rest are NaN. `strict_negatives=False` gives CD = 0 for all others.
  Tracings are used as stored and taken as mV, as public CODE-15% loaders do (the release notes' "1e-4 V" wording
  is ambiguous; worth a look at amplitudes on the real files).
- Scanned-image folders (Mendeley/Kaggle "ECG Images dataset of Cardiac Patients"): the nearest folder name decides.
  "History of MI" and "Myocardial Infarction" -> MI = 1, the other four NaN (those patients may have anything else);
  "Normal Person" -> all five 0; "abnormal heartbeat" (an arrhythmia of unstated type) maps to none of the five, so
  all NaN, and such rows are dropped unless `keep_unlabelled`. Exact duplicates (same bytes; public audits find about
  half of that set) are removed, keeping the first by path; copies that disagree on a label make it NaN.
- GenECG: `<ecg_id>_hr_<variant>.png` images get the PTB-XL labels, patient_id and strat_fold of that ecg_id.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .config import LABELS, find_input
from .signals import CODE15_FS
from .utils import ImageReadError, looks_truncated, imread, parallel_map

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Default dataset folder names (under input/ or /kaggle/input/); src/download.py unpacks into these.
DEFAULT_ROOTS = {"bhf": "bhf-data-science-centre-ecg-challenge", "scans": "ecg-images-dataset-of-cardiac-patients",
                 "ptbxl": "ptb-xl", "code15": "code15", "genecg": "genecg"}
GROUP_COLUMNS = ("patient_id", "patient", "group", "group_id", "subject_id")  # first one present becomes patient_id


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces: finding folders and files, checking images, assembling the table
# ----------------------------------------------------------------------------------------------------------------
def _dataset_dir(root: str | Path, what: str, fix: str) -> Path:
    try:
        p = find_input(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what}: {e} For this source: {fix}") from None
    if not p.is_dir():
        raise NotADirectoryError(f"{what}: {p} is a file, expected a folder. {fix}")
    return p.absolute()


def _find_file(root: Path, name: str, what: str, fix: str, max_depth: int = 5) -> Path:
    """`root/name`, or the shallowest copy up to `max_depth` folders down (downloads nest: physionet.org/files/...)."""
    if (root / name).is_file():
        return root / name
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if name in filenames:
            return Path(dirpath) / name
        # record folders hold tens of thousands of files and never the tables: do not descend into them
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("records") and not d.startswith("."))
        if len(Path(dirpath).parts) - base_depth >= max_depth:
            dirnames[:] = []
    raise FileNotFoundError(f"{what}: {name} not found in {root} (or {max_depth} folders below). {fix}")


def _list_images(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return out


def image_error(path: str | Path, verify: bool = False) -> str | None:
    """None if `path` looks like a whole PNG/JPEG, else the reason (naming the file).

    The default check reads only the first and last bytes (signature and end marker), which catches missing, empty,
    truncated and non-image files in microseconds; `verify=True` decodes the whole image (utils.imread), which also
    catches damage in the middle of a file, at ~0.1 s per large PNG.
    """
    path = Path(path)
    if verify:
        try:
            imread(path)
        except ImageReadError as e:
            return str(e)
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as e:
        return f"{path}: cannot read ({e.strerror or e})"
    if size == 0:
        return f"{path}: empty file; re-copy or re-download it"
    if not (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8")):
        return image_error(path, verify=True)  # some other format: let the decoder decide
    if looks_truncated(head + tail, path.suffix.lower()):
        return f"{path}: truncated image file (no end marker); re-copy or re-download it"
    return None


def _check_one(args):
    i, path, verify = args
    return i, image_error(path, verify)


def check_images(paths: list, verify: bool = False, workers: int = 0, desc: str = "check images") -> dict[int, str]:
    """{index: error} for the paths that are not readable images. Header checks run inline (they are I/O-trivial);
    full decodes (`verify`) run on `workers` processes (0 = one per core)."""
    jobs = [(i, str(p), verify) for i, p in enumerate(paths)]
    n = workers if verify else 1
    return {i: err for i, err in parallel_map(_check_one, jobs, workers=n, desc=desc, chunksize=16) if err}


def finish_table(df: pd.DataFrame, skipped: list[dict], source: str, labels=LABELS) -> pd.DataFrame:
    """Standard column order, float labels, unique ids, skip report (every table a reader or builder returns)."""
    for c in labels:
        df[c] = df[c].astype(float) if c in df else np.nan
    front = ["id", "path", *labels] + [c for c in ("patient_id", "strat_fold") if c in df]
    df = df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)
    df["id"] = df["id"].astype(str)
    dup = df["id"][df["id"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"{source}: ids are not unique, e.g. {list(dup[:5])}")
    df.attrs["skipped"] = skipped
    if skipped:
        show = "; ".join(s["error"] for s in skipped[:3])
        print(f"[sources] {source}: skipped {len(skipped)} of {len(df) + len(skipped)} items "
              f"(all listed in df.attrs['skipped']): {show}{' ...' if len(skipped) > 3 else ''}", file=sys.stderr)
    return df


# The label values a table may hold, as text (stripped, lower case): blank/unknown, 1, 0.
LABEL_TEXT = {"": np.nan, "nan": np.nan, "none": np.nan, "true": 1.0, "1": 1.0, "1.0": 1.0, "false": 0.0, "0": 0.0,
              "0.0": 0.0}


def _as_float01(series: pd.Series, where: str) -> pd.Series:
    """0/1/True/False/blank -> 1.0/0.0/NaN; anything else is an error naming the file and column."""
    def conv(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, str):
            s = v.strip().lower()
            if s in LABEL_TEXT:
                return LABEL_TEXT[s]
            raise ValueError(f"{where}: value {v!r} is not 0/1")
        f = float(v)
        if f not in (0.0, 1.0):
            raise ValueError(f"{where}: value {v!r} is not 0/1")
        return f
    return series.map(conv).astype(float)


# ----------------------------------------------------------------------------------------------------------------
# Competition folder (BHF layout; the synthetic competition from make_data has the same one)
# ----------------------------------------------------------------------------------------------------------------
def image_index(folder: Path) -> dict[str, Path]:
    """file name and stem -> path, over the folder and its subfolders (unzipped archives sometimes nest)."""
    index: dict[str, Path] = {}
    for p in _list_images(folder):
        index.setdefault(p.name, p)
        index.setdefault(p.stem, p)
    return index


def competition_columns(table: str | Path) -> tuple[str, list[str]]:
    """(id column, label columns) of a competition table: sample_submission.csv's header when it lies beside `table`
    (its first column is the id, the rest the labels, whatever they are called), else `id` and the LABELS present."""
    table = Path(table)
    sample = table if table.name == "sample_submission.csv" else table.parent / "sample_submission.csv"
    if sample.is_file():
        header = list(pd.read_csv(sample, nrows=0).columns)
        if len(header) < 2:
            raise ValueError(f"{sample}: needs an id column and at least one label column, found {header}")
        return header[0], header[1:]
    cols = list(pd.read_csv(table, nrows=0).columns) if table.is_file() else []
    return "id", [c for c in LABELS if c in cols]


def validate_competition(root: str | Path, splits: tuple[str, ...] = ("train", "test")) -> dict:
    """Every problem of a competition folder at once, found in seconds (no image is decoded), so a bad table stops a
    run before its first long step instead of an hour later:
      errors   the run cannot go on: a missing or unreadable train.csv / sample_submission.csv, an id or label column
               of sample_submission.csv absent from train.csv, label values other than 0/1/empty (per column, with the
               values and the first rows), duplicate ids, a missing train/ or test/ folder;
      skipped  the run goes on without them, and every stage lists them the same way: train and test ids with no
               image file.
    `splits` names the image folders a stage needs (Stage II: train only; inference: test only); the tables are
    always checked. Returns {"errors": [str], "skipped": [{"split", "id", "error"}], "n_train", "n_test"}."""
    root = Path(root)
    errors: list[str] = []
    skipped: list[dict] = []
    tables = {}
    for name in ("sample_submission.csv", "train.csv"):
        f = root / name
        try:
            tables[name] = pd.read_csv(f, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            errors.append(f"{f}: not found (a competition folder holds train.csv, sample_submission.csv, train/, test/)")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            errors.append(f"{f}: not a readable CSV ({type(e).__name__}: {str(e).strip()[:120]})")
    sub, train = tables.get("sample_submission.csv"), tables.get("train.csv")
    id_col, label_cols = "id", []
    if sub is not None:
        try:
            id_col, label_cols = competition_columns(root / "sample_submission.csv")
        except ValueError as e:
            errors.append(str(e))
    if train is not None and sub is not None:
        missing = [c for c in [id_col, *label_cols] if c not in train.columns]
        if missing:
            errors.append(f"{root / 'train.csv'}: column(s) {missing} of sample_submission.csv are missing; it has "
                          f"{list(train.columns)}")
        for c in label_cols:
            if c not in train.columns:
                continue
            v = train[c].str.strip().str.lower()
            bad = ~v.isin(list(LABEL_TEXT))
            if bad.any():
                rows = (np.flatnonzero(bad.to_numpy())[:3] + 2).tolist()  # file line numbers (header is line 1)
                errors.append(f"{root / 'train.csv'}: column {c} holds {int(bad.sum())} value(s) other than 0/1/empty "
                              f"({sorted(set(train[c][bad]))[:5]}, lines {rows}); labels must be 0, 1 or blank")
    for name, split in (("train.csv", "train"), ("sample_submission.csv", "test")):
        frame = tables.get(name)
        if frame is None or id_col not in frame.columns:
            continue
        ids = frame[id_col].str.strip()
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            errors.append(f"{root / name}: {len(dup)} id(s) appear more than once, e.g. {list(dup[:5])}")
        if split not in splits:
            continue
        folder = root / split
        if not folder.is_dir():
            errors.append(f"{folder}: not found (the {split} images of {name})")
            continue
        index = image_index(folder)
        skipped += [{"split": split, "id": i, "error": f"{folder / i}: no image for this id"}
                    for i in ids if i not in index and Path(i).stem not in index]
    return {"errors": errors, "skipped": skipped, "n_train": 0 if train is None else len(train),
            "n_test": 0 if sub is None else len(sub)}


def require_valid_competition(root: str | Path, stage: str, splits: tuple[str, ...] = ("train", "test")) -> dict:
    """validate_competition, then: errors -> SystemExit listing all of them; ids without an image -> one line per split
    on stderr (they are skipped by every stage). Returns the report."""
    rep = validate_competition(root, splits)
    if rep["errors"]:
        lines = "\n".join(f"  {i + 1}. {e}" for i, e in enumerate(rep["errors"]))
        raise SystemExit(f"[{stage}] the competition folder {root} has {len(rep['errors'])} problem(s); fix them and "
                         f"run again (nothing was trained or written):\n{lines}")
    for split in ("train", "test"):
        miss = [s["id"] for s in rep["skipped"] if s["split"] == split]
        if miss:
            print(f"[{stage}] {len(miss)} {split} id(s) have no image in {Path(root) / split} and are skipped: "
                  f"{miss[:5]}{' ...' if len(miss) > 5 else ''}", file=sys.stderr)
    return rep


def read_competition(root: str | Path = DEFAULT_ROOTS["bhf"], verify: bool = False, workers: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(train_df, test_df, label_columns) from `<root>/{train.csv, sample_submission.csv, train/, test/}`.

    The id column is the first column of sample_submission.csv and the labels are its other columns. Test rows come
    from sample_submission.csv (its order) with NaN labels. Listed images that are missing or unreadable are skipped
    and reported (`verify=True` fully decodes every image on `workers` processes instead of checking its ends).
    """
    fix = ("Build the synthetic one with `python -m src.make_data`, or fetch the real one with "
           "`python -m src.download bhf`.")
    root = _dataset_dir(root, "competition folder", fix)
    sub_path, train_path = root / "sample_submission.csv", root / "train.csv"
    for p in (sub_path, train_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: {root} is not a complete competition folder (expected train.csv, "
                                    f"sample_submission.csv, train/, test/). {fix}")
    id_col, label_cols = competition_columns(sub_path)
    sub = pd.read_csv(sub_path, dtype={id_col: str})  # ids as text: keeps leading zeros of "00042"
    train = pd.read_csv(train_path, dtype={id_col: str})
    missing = [c for c in [id_col, *label_cols] if c not in train.columns]
    if missing:
        raise ValueError(f"{train_path}: missing column(s) {missing} that {sub_path.name} lists; it has "
                         f"{list(train.columns)}. Re-download the competition or rebuild it "
                         f"(`python -m src.make_data`).")
    for c in label_cols:
        train[c] = _as_float01(train[c], f"{train_path} column {c}")
    for frame, path in ((train, train_path), (sub, sub_path)):
        frame[id_col] = frame[id_col].astype(str).str.strip()
        dup = frame[id_col][frame[id_col].duplicated()].unique()
        if len(dup):
            raise ValueError(f"{path}: ids appear more than once, e.g. {list(dup[:5])}; fix or re-download the file")

    out = []
    for split, frame in (("train", train), ("test", sub)):
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: the competition folder has no {split} images. {fix}")
        index = image_index(folder)
        ids = frame[id_col].tolist()
        found = [index.get(i) or index.get(Path(i).stem) for i in ids]
        skipped = [{"id": i, "path": str(folder / f"{i}.png"), "error": f"{folder / i}.png: no image for this id"}
                   for i, p in zip(ids, found) if p is None]
        keep = [k for k, p in enumerate(found) if p is not None]
        bad = check_images([found[k] for k in keep], verify, workers, desc=f"check {split} images")
        skipped += [{"id": ids[keep[j]], "path": str(found[keep[j]]), "error": err} for j, err in sorted(bad.items())]
        keep = [k for j, k in enumerate(keep) if j not in bad]
        df = pd.DataFrame({"id": [ids[k] for k in keep], "path": [str(found[k]) for k in keep]})
        if split == "train":
            part = frame.iloc[keep].reset_index(drop=True)
            for c in label_cols:
                df[c] = part[c].to_numpy()
            group = next((c for c in GROUP_COLUMNS if c in part.columns), None)
            if group:
                df["patient_id"] = part[group].astype(str).to_numpy()
            for c in part.columns:  # anything else the file carries (fold, age, ...) rides along
                if c not in (id_col, group, *label_cols) and c not in df:
                    df[c] = part[c].to_numpy()
        out.append(finish_table(df, skipped, f"competition {split} ({folder})", labels=label_cols))
    return out[0], out[1], list(label_cols)


# ----------------------------------------------------------------------------------------------------------------
# PTB-XL (PhysioNet): ptbxl_database.csv + scp_statements.csv + records100/records500 WFDB files
# ----------------------------------------------------------------------------------------------------------------
PTBXL_SUPERCLASSES = ("MI", "HYP", "CD", "STTC")  # PTB-XL's diagnostic classes that are also our labels (NORM is not)
PTBXL_AF_CODES = ("AFIB", "AFLT")  # atrial fibrillation and atrial flutter rhythm statements


def ptbxl_labels(scp_codes: dict, diag_class: dict[str, str], rhythm_codes: set[str],
                 min_likelihood: float = 0.0) -> dict[str, float]:
    """Our five labels for one PTB-XL record from its {code: likelihood} dict (see the module docstring)."""
    out = {c: np.nan for c in LABELS}
    classes = {diag_class[c] for c, lik in scp_codes.items()
               if c in diag_class and float(lik if lik is not None else 0) >= min_likelihood}
    if classes:  # at least one diagnostic statement (NORM included) -> the four superclasses are known
        for c in PTBXL_SUPERCLASSES:
            out[c] = float(c in classes)
    if any(c in PTBXL_AF_CODES for c in scp_codes):
        out["AF"] = 1.0
    elif any(c in rhythm_codes for c in scp_codes):
        out["AF"] = 0.0
    return out


def _ptbxl_tables(root: Path, fix: str) -> tuple[pd.DataFrame, Path, dict[str, str], set[str]]:
    db_path = _find_file(root, "ptbxl_database.csv", "PTB-XL", fix)
    scp_path = _find_file(db_path.parent, "scp_statements.csv", "PTB-XL", fix)
    db = pd.read_csv(db_path)
    need = ["ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"]
    missing = [c for c in need if c not in db.columns]
    if missing:
        raise ValueError(f"{db_path}: missing column(s) {missing}; is this PTB-XL's ptbxl_database.csv? {fix}")
    scp = pd.read_csv(scp_path, index_col=0)
    missing = [c for c in ("diagnostic", "diagnostic_class", "rhythm") if c not in scp.columns]
    if missing:
        raise ValueError(f"{scp_path}: missing column(s) {missing}; is this PTB-XL's scp_statements.csv? {fix}")
    diag = scp[scp["diagnostic"] == 1]
    diag_class = {str(k): str(v) for k, v in diag["diagnostic_class"].items() if isinstance(v, str)}
    rhythm_codes = {str(k) for k in scp.index[scp["rhythm"] == 1]}
    return db, db_path, diag_class, rhythm_codes


def read_ptbxl(root: str | Path = DEFAULT_ROOTS["ptbxl"], sampling: int = 500, min_likelihood: float = 0.0,
               check_files: bool = True) -> pd.DataFrame:
    """PTB-XL records with our labels. `path` is the WFDB record path without extension (records500/.../00001_hr
    for sampling=500, records100/.../00001_lr for 100); records whose .hea/.dat are absent are skipped and reported
    unless `check_files=False` (labels only, as GenECG needs). Extras: ecg_id, fs, format="wfdb"."""
    if sampling not in (100, 500):
        raise ValueError(f"sampling must be 100 or 500 (PTB-XL's two releases), got {sampling}")
    fix = "Fetch PTB-XL 1.0.3 from PhysioNet: `python -m src.download ptbxl` prints the commands."
    root = _dataset_dir(root, "PTB-XL", fix)
    db, db_path, diag_class, rhythm_codes = _ptbxl_tables(root, fix)
    base = db_path.parent
    rows, skipped = [], []
    col = "filename_hr" if sampling == 500 else "filename_lr"
    for r in db.itertuples(index=False):
        ecg_id = int(r.ecg_id)
        try:
            codes = ast.literal_eval(r.scp_codes) if isinstance(r.scp_codes, str) else {}
            if not isinstance(codes, dict):
                raise ValueError
        except (ValueError, SyntaxError):
            raise ValueError(f"{db_path}: ecg_id {ecg_id} has unreadable scp_codes {r.scp_codes!r} "
                             f"(expected a dict like {{'NORM': 100.0}})") from None
        path = base / str(getattr(r, col))  # base is absolute; symlinked record folders keep their names
        if check_files and not (path.with_name(path.name + ".hea").is_file()
                                and path.with_name(path.name + ".dat").is_file()):
            skipped.append({"id": f"ptbxl_{ecg_id}", "path": str(path),
                            "error": f"{path}.hea/.dat: record missing (incomplete download?)"})
            continue
        pid = r.patient_id
        rows.append({"id": f"ptbxl_{ecg_id}", "path": str(path),
                     **ptbxl_labels(codes, diag_class, rhythm_codes, min_likelihood),
                     "patient_id": f"ptbxl_{int(pid)}" if pd.notna(pid) else f"ptbxl_ecg{ecg_id}",
                     "strat_fold": int(r.strat_fold), "ecg_id": ecg_id, "fs": sampling, "format": "wfdb"})
    df = pd.DataFrame(rows, columns=["id", "path", *LABELS, "patient_id", "strat_fold", "ecg_id", "fs", "format"])
    return finish_table(df, skipped, f"PTB-XL ({base})")


# ----------------------------------------------------------------------------------------------------------------
# CODE-15% (Zenodo 4916206): exams.csv + exams_part{0..17}.hdf5 with `tracings` [N, 4096, 12] at 400 Hz and `exam_id`
# ----------------------------------------------------------------------------------------------------------------
CODE15_CD = ("1dAVb", "RBBB", "LBBB")  # first-degree AV block, right and left bundle branch block


def read_code15(root: str | Path = DEFAULT_ROOTS["code15"], strict_negatives: bool = True) -> pd.DataFrame:
    """CODE-15% exams with our labels (see the module docstring). `path` is the exams_part*.hdf5 file holding the
    exam; extras: exam_id, h5_index (row in that file), fs=400, format="code15_hdf5". Exams whose part file is absent
    (only some of the 18 parts downloaded) or unreadable are skipped and reported."""
    import h5py
    fix = "Fetch CODE-15% from Zenodo: `python -m src.download code15` prints the commands."
    root = _dataset_dir(root, "CODE-15%", fix)
    exams_path = _find_file(root, "exams.csv", "CODE-15%", fix)
    exams = pd.read_csv(exams_path)
    need = ["exam_id", "patient_id", *CODE15_CD, "AF"] + (["normal_ecg"] if strict_negatives else [])
    missing = [c for c in need if c not in exams.columns]
    if missing:
        raise ValueError(f"{exams_path}: missing column(s) {missing}; is this CODE-15%'s exams.csv? {fix}")
    parts = sorted(p for p in root.rglob("exams_part*.hdf5"))
    if not parts:
        raise FileNotFoundError(f"CODE-15%: no exams_part*.hdf5 under {root} (unzip the exams_part<i>.zip files "
                                f"next to exams.csv). {fix}")
    where: dict[int, tuple[Path, int]] = {}
    skipped = []
    for part in parts:
        try:
            with h5py.File(part, "r") as h:
                ids = np.asarray(h["exam_id"][:], dtype=np.int64)
                if h["tracings"].shape[0] != len(ids):
                    raise OSError("tracings and exam_id lengths differ")
        except (OSError, KeyError) as e:
            skipped.append({"id": part.name, "path": str(part), "error": f"{part}: unreadable ({e}); re-download it"})
            continue
        for k, e in enumerate(ids):
            where.setdefault(int(e), (part, k))

    flags = {c: _as_float01(exams[c], f"{exams_path} column {c}") for c in [*CODE15_CD, "AF"]}
    normal = _as_float01(exams["normal_ecg"], f"{exams_path} column normal_ecg") if strict_negatives else None
    cd_any = pd.concat([flags[c] for c in CODE15_CD], axis=1)
    cd = pd.Series(np.where((cd_any == 1).any(axis=1), 1.0, np.where(cd_any.isna().any(axis=1), np.nan, 0.0)))
    if strict_negatives:
        cd = cd.where((cd == 1) | (normal == 1), np.nan)
    rows = []
    for k, r in enumerate(exams.itertuples(index=False)):
        exam_id = int(r.exam_id)
        if exam_id not in where:
            skipped.append({"id": f"code15_{exam_id}", "path": str(exams_path.parent),
                            "error": f"exam {exam_id}: not in any exams_part*.hdf5 under {root} "
                                     f"(its part, {getattr(r, 'trace_file', '?')}, not downloaded?)"})
            continue
        part, h5_index = where[exam_id]
        pid = f"code15_{int(r.patient_id)}" if pd.notna(r.patient_id) else f"code15_exam{exam_id}"
        rows.append({"id": f"code15_{exam_id}", "path": str(part), "MI": np.nan, "AF": flags["AF"].iloc[k],
                     "HYP": np.nan, "CD": cd.iloc[k], "STTC": np.nan, "patient_id": pid,
                     "exam_id": exam_id, "h5_index": h5_index, "fs": CODE15_FS, "format": "code15_hdf5"})
    df = pd.DataFrame(rows, columns=["id", "path", *LABELS, "patient_id", "exam_id", "h5_index", "fs", "format"])
    return finish_table(df, skipped, f"CODE-15% ({root})")


# Folders of scanned ECG images, one folder per class (Mendeley gwbz3fsgp8 / its Kaggle mirrors)
# ----------------------------------------------------------------------------------------------------------------
# Regex on the lower-cased folder name -> known labels (absent = NaN). First match wins, so "abnormal" precedes
# "normal" and "history of MI" precedes the plain MI pattern.
SCAN_FOLDER_LABELS: dict[str, dict[str, float]] = {
    r"history of mi|post[ _-]?mi|mi[ _-]?history": {"MI": 1.0},  # an old MI is in PTB-XL's MI class too
    r"myocardial infarction|\bmi\b": {"MI": 1.0},
    r"abnormal": {},  # "abnormal heartbeat": arrhythmia of unstated type -> none of the five is known
    r"normal": {c: 0.0 for c in LABELS},
}


def _hash_and_check(args):
    i, path, verify = args
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return i, None, f"{path}: cannot read ({e.strerror or e})"
    err = None
    if not data:
        err = f"{path}: empty file; re-copy or re-download it"
    elif looks_truncated(data, Path(path).suffix.lower()):
        err = f"{path}: truncated image file (no end marker); re-copy or re-download it"
    elif verify or not (data.startswith(b"\x89PNG") or data.startswith(b"\xff\xd8")):
        err = image_error(path, verify=True)
    return i, hashlib.sha1(data).hexdigest(), err


def read_image_folders(root: str | Path = DEFAULT_ROOTS["scans"], mapping: dict[str, dict[str, float]] | None = None,
                       keep_unlabelled: bool = False, verify: bool = False, workers: int = 0,
                       prefix: str = "scan") -> pd.DataFrame:
    """Images under `root` labelled by the nearest enclosing folder whose name matches a `mapping` regex (default
    SCAN_FOLDER_LABELS); exact duplicates (sha1 of the bytes) removed. id = `<prefix>_<sha1[:16]>`, so the same image
    always gets the same id; patient_id = id (the set has no patient ids: each distinct image is its own group).
    Reports: df.attrs["duplicates"] ({kept, removed, conflicts}), df.attrs["skipped"] (broken or unmatched files)."""
    mapping = SCAN_FOLDER_LABELS if mapping is None else mapping
    pats = [(re.compile(k, re.I), v) for k, v in mapping.items()]
    bad_keys = {k for v in mapping.values() for k in v} - set(LABELS)
    if bad_keys:
        raise ValueError(f"mapping uses unknown label(s) {sorted(bad_keys)}; labels are {LABELS}")
    fix = "Fetch it with `python -m src.download scans`, or point root at a folder of class sub-folders."
    root = _dataset_dir(root, "scanned-image folder", fix)
    files = _list_images(root)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root}. {fix}")

    skipped, items = [], []  # items: (rel path, path, class folder name, labels)
    for p in files:
        rel = p.relative_to(root)
        hit = next(((d, lab) for d in reversed(rel.parts[:-1]) for rx, lab in pats if rx.search(d)), None)
        if hit is None:
            skipped.append({"id": str(rel), "path": str(p), "error": f"{p}: no folder name on its path matches the "
                                                                     f"label mapping; left out"})
            continue
        items.append((rel, p, hit[0], {c: float(hit[1].get(c, np.nan)) for c in LABELS}))
    jobs = [(i, str(p), verify) for i, (_, p, _, _) in enumerate(items)]
    res = {i: (h, err) for i, h, err in
           parallel_map(_hash_and_check, jobs, workers=workers, desc="hash images", chunksize=8)}
    groups: dict[str, list[int]] = {}
    for i, (rel, p, _, _) in enumerate(items):
        h, err = res[i]
        if err:
            skipped.append({"id": str(rel), "path": str(p), "error": err})
        else:
            groups.setdefault(h, []).append(i)  # items are in sorted path order, so [0] is the first by path

    rows, dups = [], []
    for h, idx in groups.items():
        labels, conflicts = {}, []
        for c in LABELS:
            vals = sorted({items[i][3][c] for i in idx if not np.isnan(items[i][3][c])})
            labels[c] = vals[0] if len(vals) == 1 else np.nan  # copies disagree -> unknown
            if len(vals) > 1:
                conflicts.append(c)
        rel, p, cls, _ = items[idx[0]]
        if len(idx) > 1:
            dups.append({"kept": str(rel), "removed": [str(items[i][0]) for i in idx[1:]],
                         "classes": sorted({items[i][2] for i in idx}), "conflicts": conflicts})
        rows.append({"id": f"{prefix}_{h[:16]}", "path": str(p), **labels, "patient_id": f"{prefix}_{h[:16]}",
                     "class_name": cls, "sha1": h})
    df = pd.DataFrame(rows, columns=["id", "path", *LABELS, "patient_id", "class_name", "sha1"])
    n_unlabelled = int(df[list(LABELS)].isna().all(axis=1).sum())
    if not keep_unlabelled:
        df = df[~df[list(LABELS)].isna().all(axis=1)]
    df = finish_table(df, skipped, f"image folders ({root})")
    df.attrs["duplicates"] = dups
    df.attrs["unlabelled"] = n_unlabelled
    n_removed = sum(len(d["removed"]) for d in dups)
    print(f"[sources] image folders ({root}): {len(files)} files, {n_removed} exact duplicates removed "
          f"(df.attrs['duplicates']), {sum(bool(d['conflicts']) for d in dups)} with conflicting labels, "
          f"{n_unlabelled} distinct images with no known label {'kept' if keep_unlabelled else 'dropped'}",
          file=sys.stderr)
    return df


# ----------------------------------------------------------------------------------------------------------------
# GenECG: PTB-XL re-drawn as images, `<ecg_id>_hr_<variant>.png`, labels from PTB-XL's tables
# ----------------------------------------------------------------------------------------------------------------
GENECG_NAME = re.compile(r"^0*(\d+)_(?:hr|lr)(?:_.*)?$", re.I)


def read_genecg(root: str | Path = DEFAULT_ROOTS["genecg"], ptbxl_root: str | Path = DEFAULT_ROOTS["ptbxl"],
                min_likelihood: float = 0.0, verify: bool = False, workers: int = 0) -> pd.DataFrame:
    """GenECG images joined to PTB-XL labels by ecg_id (only PTB-XL's two CSV tables are needed, not its records).
    id = `genecg_<relative path without suffix>` (the same ecg_id appears in each variant folder); extras: ecg_id,
    variant (top-level folder, e.g. with/without imperfections). patient_id/strat_fold come from PTB-XL, so every
    variant of one patient's ECG lands in the same fold."""
    fix = ("Download GenECG (see `python -m src.download genecg`) and PTB-XL's tables "
           "(`python -m src.download ptbxl`).")
    root = _dataset_dir(root, "GenECG", fix)
    ptb = read_ptbxl(ptbxl_root, min_likelihood=min_likelihood, check_files=False).set_index("ecg_id")
    skipped, rows = [], []
    for p in _list_images(root):
        rel = p.relative_to(root)
        m = GENECG_NAME.match(p.stem)
        if not m:
            skipped.append({"id": str(rel), "path": str(p), "error": f"{p}: name is not <ecg_id>_hr_<variant>"})
            continue
        ecg_id = int(m.group(1))
        if ecg_id not in ptb.index:
            skipped.append({"id": str(rel), "path": str(p), "error": f"{p}: ecg_id {ecg_id} not in PTB-XL's table"})
            continue
        lab = ptb.loc[ecg_id]
        rid = "genecg_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rel.with_suffix("")).replace(os.sep, "__"))
        rows.append({"id": rid, "path": str(p), **{c: lab[c] for c in LABELS},
                     "patient_id": lab["patient_id"], "strat_fold": int(lab["strat_fold"]), "ecg_id": ecg_id,
                     "variant": rel.parts[0] if len(rel.parts) > 1 else ""})
    df = pd.DataFrame(rows, columns=["id", "path", *LABELS, "patient_id", "strat_fold", "ecg_id", "variant"])
    bad = check_images(df["path"].tolist(), verify, workers, desc="check GenECG images")
    skipped += [{"id": df["id"].iloc[j], "path": df["path"].iloc[j], "error": err} for j, err in sorted(bad.items())]
    df = df.drop(index=df.index[sorted(bad)])
    return finish_table(df, skipped, f"GenECG ({root})")
