"""ECG signal records as arrays: WFDB records (PTB-XL, PhysioNet/CinC and any other WFDB source) and CODE-15% HDF5
exams, read as [12, n] float32 mV in LEADS order. The data side of the kit: src/sources.py turns these sources into
label tables, src/compose.py draws their signals as images.

    sig, fs, found = read_wfdb("ptb-xl/records500/00000/00001_hr")      # fs as recorded, leads present
    sig, fs = load_signal(row)                                          # a row of sources.read_ptbxl / read_code15
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import LEADS

CODE15_FS = 400  # CODE-15% tracings: 400 Hz, zero-padded to 4096 samples

_LEAD_ALIASES = {**{name.upper(): name for name in LEADS}, "MLI": "I", "MLII": "II", "ML2": "II", "MLIII": "III",
                 "D1": "I", "D2": "II", "D3": "III"}


# ----------------------------------------------------------------------------------------------------------------
# WFDB input
# ----------------------------------------------------------------------------------------------------------------
class WFDBError(ValueError):
    pass


_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "": 1.0, "nu": 1.0}


def normalise_lead(name: str) -> str | None:
    """'AVR', 'avr', 'aVR' -> 'aVR'; 'MLII' -> 'II'; unknown -> None."""
    return _LEAD_ALIASES.get(str(name).strip().upper().replace(" ", ""))


def read_wfdb(path, min_seconds: float = 0.0) -> tuple[np.ndarray, float, list[str]]:
    """Read a WFDB record (`.hea` + `.dat` or `.mat`) as ([12, n] float32 mV in LEADS order, fs, leads present).

    Any fs; gains and units (mV, uV, V) handled by the header; lead names matched case-insensitively (PTB-XL's 'AVR',
    CinC's 'aVR'). Absent leads are NaN rows. Raises WFDBError naming the file on a malformed or too-short record.
    """
    import wfdb
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".hea", ".dat", ".mat") else p
    hea = base.with_suffix(".hea")
    if not hea.exists():
        raise WFDBError(f"{hea}: header not found (pass the record path without extension)")
    try:
        rec = wfdb.rdrecord(str(base), physical=True)
    except Exception as e:  # wfdb raises many types for bad headers/data; callers want one, naming the file
        raise WFDBError(f"{hea}: cannot read WFDB record ({type(e).__name__}: {e}); check the header and that its "
                        f"signal file sits beside it") from None
    sig = rec.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[0] == 0:
        raise WFDBError(f"{hea}: record has no samples")
    if rec.sig_len and sig.shape[0] < rec.sig_len:
        raise WFDBError(f"{hea}: signal file holds {sig.shape[0]} samples, header says {rec.sig_len} (truncated?)")
    fs = float(rec.fs or 0)
    if fs <= 0:
        raise WFDBError(f"{hea}: sampling frequency missing or zero")
    out = np.full((len(LEADS), sig.shape[0]), np.nan, np.float32)
    found = []
    for j, name in enumerate(rec.sig_name or []):
        lead = normalise_lead(name)
        if lead is None or lead in found:
            continue
        unit = str((rec.units or [""] * (j + 1))[j] or "").strip().lower()
        if unit not in _UNIT_TO_MV:
            raise WFDBError(f"{hea}: lead {name} has unit {unit!r}; expected mV, uV or V")
        out[LEADS.index(lead)] = sig[:, j] * _UNIT_TO_MV[unit]
        found.append(lead)
    if not found:
        raise WFDBError(f"{hea}: no standard ECG lead among {rec.sig_name}; expected names like {', '.join(LEADS)}")
    seconds = sig.shape[0] / fs
    if seconds < min_seconds - 1e-9:
        raise WFDBError(f"{hea}: record is {seconds:g} s long, the page needs {min_seconds:g} s "
                        f"(use a longer record, or --seconds/--speed that fit it)")
    return out, fs, found


def find_records(root) -> list[Path]:
    """Every WFDB record (path without extension) under `root`, sorted."""
    root = Path(root)
    return sorted(h.with_suffix("") for h in root.rglob("*.hea"))


def load_code15_signal(hdf5_path: str | Path, exam_id: int, index: int | None = None) -> tuple[np.ndarray, int]:
    """(signal float32 [12, n] mV, 400) for one exam, with the zero padding (up to 4096 samples) cut off both ends.
    `index` (the h5_index column) skips the search when it points at the right row."""
    import h5py
    hdf5_path = Path(hdf5_path)
    try:
        with h5py.File(hdf5_path, "r") as h:
            ids = h["exam_id"]
            if index is None or not (0 <= index < len(ids)) or int(ids[index]) != int(exam_id):
                hits = np.flatnonzero(np.asarray(ids[:], dtype=np.int64) == int(exam_id))
                if not len(hits):
                    raise KeyError(f"{hdf5_path}: exam_id {exam_id} is not in this file")
                index = int(hits[0])
            x = np.asarray(h["tracings"][index], dtype=np.float32)  # [4096, 12]
    except OSError as e:
        raise OSError(f"{hdf5_path}: cannot read ({e}); re-download this part") from None
    sig = x.T
    nonzero = np.flatnonzero(np.any(sig != 0, axis=0))
    if not len(nonzero):
        raise ValueError(f"{hdf5_path}: exam {exam_id} is all zeros")
    return np.ascontiguousarray(sig[:, nonzero[0]:nonzero[-1] + 1]), CODE15_FS


def load_signal(row) -> tuple[np.ndarray, float]:
    """(signal [12, n] float32 mV, fs) for one row of read_ptbxl or read_code15 (its `format` column says which)."""
    if row.get("format") == "code15_hdf5":
        return load_code15_signal(row["path"], int(row["exam_id"]), int(row["h5_index"]))
    sig, fs, _ = read_wfdb(row["path"])
    return sig, fs


class UnusableRecord(ValueError):
    """A record that would make a misleading page (no signal, too short): skipped with this reason."""


def usable_leads(sig: np.ndarray, fs: float, min_seconds: float) -> list[str]:
    """The leads of a [12, n] record worth drawing (at least half their samples finite). Raises UnusableRecord for a
    record with none (an all-NaN record would be a blank grid labelled with its diagnosis) or shorter than
    `min_seconds` (a page shows 10 s: a shorter record leaves part of every lead blank)."""
    seconds = sig.shape[1] / fs
    if seconds < min_seconds - 1e-9:
        raise UnusableRecord(f"record is {seconds:g} s long, a page needs {min_seconds:g} s (skipped)")
    finite = np.isfinite(sig).mean(axis=1) >= 0.5
    if not finite.any():
        raise UnusableRecord("every lead is NaN: no signal to draw (skipped)")
    return [lead for lead, ok in zip(LEADS, finite) if ok]


def write_wfdb(out: Path, name: str, sig: np.ndarray, fs: float, comments: list[str] | None = None) -> None:
    """[12, n] mV -> <out>/<name>.hea + .dat: WFDB format 16, gain 1000 adu/mV (1 uV steps, +-32.7 mV), baseline 0
    (as PTB-XL), NaN kept as WFDB's missing sample. Written in a temp folder, then .dat and .hea are renamed into place
    (.hea last, so a record counts as finished only once both exist)."""
    import os
    import shutil
    import wfdb
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp_{name}_{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        wfdb.wrsamp(name, fs=fs, units=["mV"] * len(LEADS), sig_name=list(LEADS),
                    p_signal=np.asarray(sig, np.float64).T, fmt=["16"] * len(LEADS), adc_gain=[1000.0] * len(LEADS),
                    baseline=[0] * len(LEADS), comments=comments or [], write_dir=str(tmp))
        os.replace(tmp / f"{name}.dat", out / f"{name}.dat")
        os.replace(tmp / f"{name}.hea", out / f"{name}.hea")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
