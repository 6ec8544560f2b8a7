"""Each reader on a small fixture in its source's real format (CSV columns, HDF5 layout, WFDB records, folder names),
built here with the libraries the sources use; the PTB-XL reader runs on real records from ../shared/fixtures."""
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb

from src import compose, signals, sources
from src.config import LABELS, REPO
from src.utils import encode_image, imwrite

FIXTURES = REPO.parent / "shared" / "fixtures" / "ptbxl"


def _img(seed: int, h=40, w=60) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _labels(row) -> dict:
    return {c: (None if math.isnan(row[c]) else row[c]) for c in LABELS}


# ----------------------------------------------------------------------------------------------------------------
# Competition folder
# ----------------------------------------------------------------------------------------------------------------
def _competition(root: Path, label_cols=("AF", "MI", "STTC")) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    ids = ["1", "2", "3", "4", "5", "6", "007"]
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"id": ids, **{c: rng.integers(0, 2, len(ids)) for c in label_cols},
                          "group": ["p1", "p1", "p2", "p3", "p4", "p5", "p6"], "age": range(len(ids))})
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": ["101", "102", "103"], **{c: 0.5 for c in label_cols}}).to_csv(
        root / "sample_submission.csv", index=False)
    for i in ["1", "2", "3", "4", "007"]:
        imwrite(root / "train" / f"{i}.png", _img(int(i)))
    # "5" has no image; "6" is cut short, as an interrupted copy leaves it
    data = encode_image(_img(6), ".png")
    (root / "train" / "6.png").write_bytes(data[: len(data) // 2])
    for i in ["101", "102"]:
        imwrite(root / "test" / f"{i}.png", _img(int(i)))
    (root / "test" / "103.png").write_text("not an image")
    return root


def test_competition_reads_labels_from_sample_submission_and_skips_broken(tmp_path, capsys):
    root = _competition(tmp_path / "comp")
    train, test, cols = sources.read_competition(root)
    assert cols == ["AF", "MI", "STTC"]  # from sample_submission.csv, in its order
    assert list(train.columns[:5]) == ["id", "path", "AF", "MI", "STTC"]
    assert train["id"].tolist() == ["1", "2", "3", "4", "007"]  # int-looking ids stay text, leading zeros kept
    truth = pd.read_csv(root / "train.csv", dtype={"id": str}).set_index("id")
    for c in cols:
        assert train[c].dtype == float
        assert train[c].tolist() == truth.loc[train["id"], c].astype(float).tolist()
    assert train["patient_id"].tolist() == ["p1", "p1", "p2", "p3", "p6"]  # the group column
    assert train["age"].tolist() == [0, 1, 2, 3, 6]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in train["path"])
    skipped = {s["id"]: s["error"] for s in train.attrs["skipped"]}
    assert set(skipped) == {"5", "6"}
    assert "5.png" in skipped["5"] and "truncated" in skipped["6"] and "6.png" in skipped["6"]

    assert test["id"].tolist() == ["101", "102"]
    assert test[cols].isna().all().all()  # hidden labels are unknown, not the sample values
    assert [s["id"] for s in test.attrs["skipped"]] == ["103"]
    assert "103.png" in test.attrs["skipped"][0]["error"]
    assert "skipped 2 of 7" in capsys.readouterr().err


def test_competition_verify_decodes_and_catches_damage_inside_a_file(tmp_path):
    root = _competition(tmp_path / "comp")
    p = root / "train" / "2.png"
    data = bytearray(p.read_bytes())
    data[len(data) // 2: len(data) // 2 + 20] = b"\0" * 20  # header and end marker intact, pixels corrupt
    p.write_bytes(bytes(data))
    quick, _, _ = sources.read_competition(root)
    assert "2" in quick["id"].tolist()  # the cheap check cannot see it...
    full, _, _ = sources.read_competition(root, verify=True, workers=2)
    assert "2" not in full["id"].tolist()  # ...the full decode (in 2 processes) does
    assert {s["id"] for s in full.attrs["skipped"]} == {"2", "5", "6"}
    assert sorted(full["id"]) == sorted(quick["id"][quick["id"] != "2"])


def test_competition_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m src.download bhf"):
        sources.read_competition(tmp_path / "nowhere")
    root = _competition(tmp_path / "comp")
    pd.read_csv(root / "train.csv").drop(columns=["MI"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"train\.csv.*missing column\(s\) \['MI'\]"):
        sources.read_competition(root)
    (root / "sample_submission.csv").unlink()
    with pytest.raises(FileNotFoundError, match="sample_submission.csv"):
        sources.read_competition(root)


# ----------------------------------------------------------------------------------------------------------------
# PTB-XL on real records
# ----------------------------------------------------------------------------------------------------------------
SCP_COLUMNS = ["description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
               "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID", "CDISC Code",
               "DICOM Code"]
SCP_ROWS = {  # code: (description, diagnostic, form, rhythm, class, subclass) as in PTB-XL's scp_statements.csv
    "NDT": ("non-diagnostic T abnormalities", 1.0, 1.0, None, "STTC", "STTC"),
    "NORM": ("normal ECG", 1.0, None, None, "NORM", "NORM"),
    "IMI": ("inferior myocardial infarction", 1.0, None, None, "MI", "IMI"),
    "LVH": ("left ventricular hypertrophy", 1.0, None, None, "HYP", "LVH"),
    "CLBBB": ("complete left bundle branch block", 1.0, None, None, "CD", "CLBBB"),
    "IRBBB": ("incomplete right bundle branch block", 1.0, None, None, "CD", "IRBBB"),
    "PVC": ("ventricular premature complex", None, 1.0, None, None, None),
    "LVOLT": ("low QRS voltages in the frontal and horizontal leads", None, 1.0, None, None, None),
    "SR": ("sinus rhythm", None, None, 1.0, None, None),
    "AFIB": ("atrial fibrillation", None, None, 1.0, None, None),
    "AFLT": ("atrial flutter", None, None, 1.0, None, None),
}
# The fixture README's labels, written as PTB-XL writes them (likelihoods only on diagnostic statements)
PTBXL_RECORDS = {  # ecg_id: (patient_id, strat_fold, scp_codes, expected labels MI AF HYP CD STTC)
    1: (15709.0, 3, {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}, (0, 0, 0, 0, 0)),
    1017: (11301.0, 9, {"NDT": 100.0, "CLBBB": 100.0, "PVC": 100.0, "AFLT": 0.0}, (0, 1, 0, 1, 1)),
    1024: (20144.0, 2, {"IRBBB": 100.0, "SR": 0.0}, (0, 0, 0, 1, 0)),
    1032: (8520.0, 5, {"LVH": 50.0, "SR": 0.0}, (0, 0, 1, 0, 0)),
    8257: (5130.0, 10, {"IMI": 35.0, "SR": 0.0}, (1, 0, 0, 0, 0)),
    9999: (1.0, 1, {"NORM": 100.0, "SR": 0.0}, (0, 0, 0, 0, 0)),  # listed, but its files are not there
}


def _ptbxl_tables(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    scp = pd.DataFrame([dict(zip(SCP_COLUMNS, v)) for v in SCP_ROWS.values()], index=list(SCP_ROWS))
    scp.to_csv(root / "scp_statements.csv")  # unnamed first column = the code, as released
    cols = ["ecg_id", "patient_id", "age", "sex", "height", "weight", "nurse", "site", "device", "recording_date",
            "report", "scp_codes", "heart_axis", "infarction_stadium1", "infarction_stadium2", "validated_by",
            "second_opinion", "initial_autogenerated_report", "validated_by_human", "baseline_drift", "static_noise",
            "burst_noise", "electrodes_problems", "extra_beats", "pacemaker", "strat_fold", "filename_lr",
            "filename_hr"]
    rows = []
    for ecg_id, (pid, fold, codes, _) in PTBXL_RECORDS.items():
        rows.append({c: None for c in cols} | {
            "ecg_id": ecg_id, "patient_id": pid, "age": 50.0, "sex": 0, "device": "CS-12   E",
            "recording_date": "1987-07-31 11:38:35", "report": "sinusrhythmus", "scp_codes": str(codes),
            "second_opinion": False, "initial_autogenerated_report": False, "validated_by_human": True,
            "strat_fold": fold, "filename_lr": f"records100/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_lr",
            "filename_hr": f"records500/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_hr"})
    pd.DataFrame(rows, columns=cols).to_csv(root / "ptbxl_database.csv", index=False)
    return root


@pytest.fixture
def ptbxl_root(tmp_path):
    # laid out as `wget -r -np https://physionet.org/files/ptb-xl/1.0.3/` leaves it: the reader has to look down
    if not (FIXTURES / "records100").is_dir():  # a checkout without ../shared beside it (e.g. a git worktree elsewhere)
        pytest.fail(f"{FIXTURES} not found: these tests read the real WFDB records in ../shared/fixtures, beside "
                    f"the repo")
    base = _ptbxl_tables(tmp_path / "ptb-xl" / "physionet.org" / "files" / "ptb-xl" / "1.0.3")
    for d in ("records100", "records500"):
        (base / d).symlink_to(FIXTURES / d, target_is_directory=True)
    return tmp_path / "ptb-xl"


@pytest.mark.parametrize("sampling", [500, 100])
def test_ptbxl_labels_folds_and_records(ptbxl_root, sampling):
    df = sources.read_ptbxl(ptbxl_root, sampling=sampling)
    assert df["ecg_id"].tolist() == [1, 1017, 1024, 1032, 8257]
    for _, row in df.iterrows():
        pid, fold, _, want = PTBXL_RECORDS[row["ecg_id"]]
        assert tuple(row[c] for c in LABELS) == tuple(float(v) for v in want), row["ecg_id"]
        assert row["strat_fold"] == fold and row["patient_id"] == f"ptbxl_{int(pid)}"
        assert row["id"] == f"ptbxl_{row['ecg_id']}"
        header = wfdb.rdheader(row["path"])  # the path is a WFDB record name that opens
        assert header.fs == sampling and header.n_sig == 12
    assert [s["id"] for s in df.attrs["skipped"]] == ["ptbxl_9999"]
    assert "9999" in df.attrs["skipped"][0]["error"]


def test_ptbxl_likelihood_threshold_and_unknowns(ptbxl_root):
    df = sources.read_ptbxl(ptbxl_root, min_likelihood=50).set_index("ecg_id")
    assert df.loc[1032, "HYP"] == 1.0  # likelihood 50 passes
    assert df.loc[8257, ["MI", "HYP", "CD", "STTC"]].isna().all()  # only a 35% statement: unknown, not healthy
    assert df.loc[8257, "AF"] == 0.0  # the rhythm is still known
    diag = {k: v[4] for k, v in SCP_ROWS.items() if v[1] == 1.0}
    rhythm = {"SR", "AFIB", "AFLT"}
    no_diag = sources.ptbxl_labels({"PVC": 100.0}, diag, rhythm)
    assert all(math.isnan(no_diag[c]) for c in LABELS)  # nothing diagnostic, no rhythm statement
    assert sources.ptbxl_labels({"AFIB": 0.0, "LVH": 100.0}, diag, rhythm)["AF"] == 1.0


def test_ptbxl_missing_tables_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"ptbxl_database\.csv.*python -m src\.download ptbxl"):
        sources.read_ptbxl(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------------
# CODE-15%
# ----------------------------------------------------------------------------------------------------------------
def _tracing(rng, seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """(padded [4096, 12], original [12, n]) zero-padded on both sides like the release."""
    n = seconds * 400
    sig = rng.normal(0, 0.3, (12, n)).astype(np.float32)
    out = np.zeros((4096, 12), np.float32)
    start = (4096 - n) // 2
    out[start:start + n] = sig.T
    return out, sig


def test_code15_labels_parts_and_signals(tmp_path):
    root = tmp_path / "code15"
    root.mkdir()
    rng = np.random.default_rng(0)
    cols = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
            "patient_id", "death", "timey", "normal_ecg", "trace_file"]
    exams = [  # exam_id, 1dAVb, RBBB, LBBB, SB, ST, AF, patient, normal_ecg, part
        (1169160, False, True, False, False, False, False, 523632, False, "exams_part0.hdf5"),
        (2873686, False, False, False, True, False, False, 1724173, True, "exams_part0.hdf5"),
        (168405, False, False, False, False, False, True, 1724173, False, "exams_part1.hdf5"),
        (3000001, True, False, False, False, False, False, 99, False, "exams_part2.hdf5"),  # part not downloaded
    ]
    rows = [dict(zip(cols, [e, 57, True, 60.1, a, r, lb, sb, st, af, p, None, None, n, tf]))
            for e, a, r, lb, sb, st, af, p, n, tf in exams]
    pd.DataFrame(rows, columns=cols).to_csv(root / "exams.csv", index=False)  # booleans as True/False text
    originals = {}
    parts = {"exams_part0.hdf5": [(1169160, 10), (2873686, 7)], "exams_part1.hdf5": [(168405, 10)]}
    for part, members in parts.items():
        tr, ids = [], []
        for exam_id, sec in members:
            padded, sig = _tracing(rng, sec)
            tr.append(padded)
            ids.append(exam_id)
            originals[exam_id] = sig
        tr.append(np.zeros((4096, 12), np.float32))  # the release ends each part with an all-zero row, exam_id 0
        ids.append(0)
        with h5py.File(root / part, "w") as h:
            h.create_dataset("tracings", data=np.stack(tr))
            h.create_dataset("exam_id", data=np.array(ids, dtype=np.int64))

    df = sources.read_code15(root).set_index("exam_id")
    assert sorted(df.index) == [168405, 1169160, 2873686]
    assert df.loc[1169160, ["CD", "AF"]].tolist() == [1.0, 0.0]  # RBBB -> CD
    assert df.loc[2873686, ["CD", "AF"]].tolist() == [0.0, 0.0]  # normal ECG: CD known absent
    assert math.isnan(df.loc[168405, "CD"]) and df.loc[168405, "AF"] == 1.0  # not normal, no CD code: unknown
    assert df[["MI", "HYP", "STTC"]].isna().all().all()  # never annotated in CODE-15%
    assert df.loc[2873686, "patient_id"] == df.loc[168405, "patient_id"] == "code15_1724173"
    assert [s["id"] for s in df.attrs["skipped"]] == ["code15_3000001"]
    loose = sources.read_code15(root, strict_negatives=False).set_index("exam_id")
    assert loose.loc[168405, "CD"] == 0.0

    for exam_id, row in df.iterrows():
        sig, fs = signals.load_code15_signal(row["path"], exam_id, index=row["h5_index"])
        assert fs == 400 and sig.dtype == np.float32
        np.testing.assert_array_equal(sig, originals[exam_id])  # padding gone, 4000 or 2800 samples
        again, _ = signals.load_code15_signal(row["path"], exam_id)  # found by search without the index
        np.testing.assert_array_equal(again, sig)
    assert signals.load_code15_signal(df.loc[2873686, "path"], 2873686)[0].shape == (12, 2800)
    with pytest.raises(KeyError, match="exam_id 42"):
        signals.load_code15_signal(df.loc[2873686, "path"], 42)


# ----------------------------------------------------------------------------------------------------------------
# Scanned-image folders
# ----------------------------------------------------------------------------------------------------------------
MI_DIR = "ECG Images of Myocardial Infarction Patients (240x12=2880)"
HMI_DIR = "ECG Images of Patient that have History of MI (172x12=2064)"
NORMAL_DIR = "Normal Person ECG Images (284x12=3408)"
ABN_DIR = "ECG Images of Patient that have abnormal heartbeat (233x12=2796)"


def test_image_folders_labels_dedup_and_reports(tmp_path, capsys):
    root = tmp_path / "ecg-images-dataset-of-cardiac-patients"
    jpg = {k: encode_image(_img(i), ".jpg") for i, k in enumerate("ABCDEFG")}
    files = {  # rel path: content
        f"{MI_DIR}/MI(1).jpg": jpg["A"], f"{MI_DIR}/MI(3).jpg": jpg["A"],  # duplicate inside a class
        f"{MI_DIR}/MI(2).jpg": jpg["B"], f"{HMI_DIR}/PMI(2).jpg": jpg["B"],  # across two MI classes: agree
        f"{HMI_DIR}/PMI(1).jpg": jpg["C"], f"{NORMAL_DIR}/Normal(2).jpg": jpg["C"],  # MI vs normal: conflict
        f"{NORMAL_DIR}/Normal(1).jpg": jpg["D"],
        f"{ABN_DIR}/HB(1).jpg": jpg["E"], f"{ABN_DIR}/HB(2).jpg": jpg["F"][:200],  # second one cut short
        "misc/notes.jpg": jpg["F"],  # no class folder on its path
        f"test/{NORMAL_DIR}/Normal(10).jpg": jpg["G"],  # a split folder above the class folder
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    df = sources.read_image_folders(root, workers=1)
    got = {Path(p).relative_to(root).as_posix(): _labels(r) for p, (_, r) in zip(df["path"], df.iterrows())}
    mi = {"MI": 1.0, "AF": None, "HYP": None, "CD": None, "STTC": None}
    normal = {c: 0.0 for c in LABELS}
    assert got == {
        f"{MI_DIR}/MI(1).jpg": mi, f"{MI_DIR}/MI(2).jpg": mi,
        f"{HMI_DIR}/PMI(1).jpg": normal | {"MI": None},  # copies disagree on MI only
        f"{NORMAL_DIR}/Normal(1).jpg": normal, f"test/{NORMAL_DIR}/Normal(10).jpg": normal,
    }
    assert df["id"].is_unique and all(i.startswith("scan_") for i in df["id"])
    assert (df["patient_id"] == df["id"]).all()
    dups = {d["kept"]: d for d in df.attrs["duplicates"]}
    assert set(dups) == {f"{MI_DIR}/MI(1).jpg", f"{MI_DIR}/MI(2).jpg", f"{HMI_DIR}/PMI(1).jpg"}
    assert dups[f"{MI_DIR}/MI(2).jpg"]["removed"] == [f"{HMI_DIR}/PMI(2).jpg"]
    assert dups[f"{HMI_DIR}/PMI(1).jpg"]["conflicts"] == ["MI"]
    assert dups[f"{MI_DIR}/MI(1).jpg"]["conflicts"] == []
    skipped = {Path(s["path"]).name: s["error"] for s in df.attrs["skipped"]}
    assert set(skipped) == {"HB(2).jpg", "notes.jpg"}
    assert "truncated" in skipped["HB(2).jpg"] and "mapping" in skipped["notes.jpg"]
    assert df.attrs["unlabelled"] == 1  # the abnormal-heartbeat image: dropped by default...
    assert "3 exact duplicates removed" in capsys.readouterr().err

    kept = sources.read_image_folders(root, keep_unlabelled=True, workers=2)  # same answer in 2 processes
    extra = kept[~kept["id"].isin(df["id"])]
    assert len(extra) == 1 and extra["class_name"].iloc[0] == ABN_DIR and extra[list(LABELS)].isna().all(axis=1).all()
    assert sorted(kept["id"][kept["id"].isin(df["id"])]) == sorted(df["id"])

    custom = sources.read_image_folders(root, mapping={r"abnormal": {"AF": 1.0}}, workers=1)
    assert len(custom) == 1 and custom["AF"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="unknown label"):
        sources.read_image_folders(root, mapping={"normal": {"NORM": 0.0}})


# ----------------------------------------------------------------------------------------------------------------
# GenECG
# ----------------------------------------------------------------------------------------------------------------
def test_genecg_joins_ptbxl_labels(tmp_path):
    ptb = _ptbxl_tables(tmp_path / "ptb-xl")  # tables only: GenECG needs no records
    root = tmp_path / "genecg"
    names = {
        "Dataset_A_ECGs_without_imperfections/00000/00001_hr_1R.png": 1,
        "Dataset_A_ECGs_without_imperfections/01000/01017_hr_1R.png": 1017,
        "Dataset_B_ECGs_with_imperfections/00000/00001_hr_1R.png": 1,
        "Dataset_B_ECGs_with_imperfections/08000/08257_hr_1R.png": 8257,
    }
    for k, rel in enumerate(names):
        imwrite(root / rel, _img(k))
    imwrite(root / "Dataset_A_ECGs_without_imperfections/99000/99999_hr_1R.png", _img(9))  # not in PTB-XL
    imwrite(root / "cover.png", _img(10))  # not a GenECG name
    data = encode_image(_img(11), ".png")
    (root / "Dataset_B_ECGs_with_imperfections/01000").mkdir(parents=True)
    (root / "Dataset_B_ECGs_with_imperfections/01000/01024_hr_1R.png").write_bytes(data[:100])  # broken

    df = sources.read_genecg(root, ptbxl_root=ptb)
    assert sorted(Path(p).relative_to(root).as_posix() for p in df["path"]) == sorted(names)
    assert df["id"].is_unique
    for _, row in df.iterrows():
        rel = Path(row["path"]).relative_to(root).as_posix()
        pid, fold, _, want = PTBXL_RECORDS[names[rel]]
        assert row["ecg_id"] == names[rel] and row["variant"] == rel.split("/")[0]
        assert tuple(row[c] for c in LABELS) == tuple(float(v) for v in want)
        assert row["patient_id"] == f"ptbxl_{int(pid)}" and row["strat_fold"] == fold
    assert df[df["ecg_id"] == 1]["patient_id"].nunique() == 1  # both variants group together
    skipped = {Path(s["path"]).name: s["error"] for s in df.attrs["skipped"]}
    assert set(skipped) == {"99999_hr_1R.png", "cover.png", "01024_hr_1R.png"}
    assert "not in PTB-XL" in skipped["99999_hr_1R.png"]


def test_readers_resolve_dataset_names_via_config(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))  # a simulated Kaggle session
    attached = tmp_path / "kaggle" / "input" / "my-comp"
    _competition(attached)
    train, test, cols = sources.read_competition("my-comp")
    assert len(train) == 5 and Path(train["path"].iloc[0]).is_relative_to(attached)
    shutil.rmtree(attached)
    with pytest.raises(FileNotFoundError, match="my-comp"):
        sources.read_competition("my-comp")


# ----------------------------------------------------------------------------------------------------------------
# Signal sources rendered to a Stage I image set
# ----------------------------------------------------------------------------------------------------------------
def test_render_signal_source_ptbxl_and_code15(ptbxl_root, tmp_path):
    from src.utils import imread
    ptb = sources.read_ptbxl(ptbxl_root).set_index("ecg_id").loc[[1, 1017]].reset_index()
    broken = ptb.iloc[[0]].assign(id="ptbxl_404", path=str(tmp_path / "gone" / "00404_hr"))
    code = tmp_path / "code15"
    code.mkdir()
    padded, original = _tracing(np.random.default_rng(3), 7)
    with h5py.File(code / "exams_part0.hdf5", "w") as h:
        h.create_dataset("tracings", data=padded[None])
        h.create_dataset("exam_id", data=np.array([77], np.int64))
    c15 = pd.DataFrame([{"id": "code15_77", "path": str(code / "exams_part0.hdf5"), "MI": np.nan, "AF": 1.0,
                         "HYP": np.nan, "CD": 0.0, "STTC": np.nan, "patient_id": "code15_1", "exam_id": 77,
                         "h5_index": 0, "fs": 400, "format": "code15_hdf5"}])
    table = pd.concat([ptb, broken, c15], ignore_index=True)
    out = tmp_path / "ptbxl-scans"
    hw = (255, 330)
    df = compose.render_signal_source(table, out, n_per_record=2, seed=5, hw=hw, workers=1)

    assert sorted(df["id"]) == sorted(f"{i}_{k:02d}" for i in ("ptbxl_1", "ptbxl_1017", "code15_77") for k in (0, 1))
    assert [s["id"] for s in df.attrs["skipped"]] == ["ptbxl_404_00", "ptbxl_404_01"]
    on_disk = pd.read_csv(out / "labels.csv", dtype={"patient_id": str})
    assert on_disk["id"].tolist() == df["id"].tolist()
    row = df.set_index("id").loc["ptbxl_1017_01"]
    assert (row["AF"], row["CD"], row["MI"], row["strat_fold"]) == (1.0, 1.0, 0.0, 9)
    assert math.isnan(df.set_index("id").loc["code15_77_00", "MI"])
    imgs = {i: imread(p) for i, p in zip(df["id"], df["path"])}
    assert all(im.shape == (*hw, 3) for im in imgs.values())
    assert not np.array_equal(imgs["ptbxl_1017_00"], imgs["ptbxl_1017_01"])  # two draws, two pages

    # the sidecar regenerates its image exactly
    side = __import__("json").loads((out / "images" / "ptbxl_1017_01.json").read_text())
    assert side["source_id"] == "ptbxl_1017" and side["labels"]["AF"] == 1.0 and side["labels"]["MI"] == 0.0
    sig, fs = signals.load_signal(table.iloc[1].to_dict())
    again, _ = compose.make_image(sig, fs, np.random.default_rng(side["seed"]), side["style"], tuple(side["hw"]))
    np.testing.assert_array_equal(again, imgs["ptbxl_1017_01"])
    assert signals.load_signal(c15.iloc[0].to_dict())[0].shape == original.shape

    # resumable and independent of the rest: a rerun on fewer records in 2 processes rewrites nothing
    stamps = {p: Path(p).stat().st_mtime_ns for p in df["path"]}
    again_df = compose.render_signal_source(table.iloc[[1]], out, n_per_record=2, seed=5, hw=hw, workers=2)
    assert sorted(again_df["id"]) == ["ptbxl_1017_00", "ptbxl_1017_01"]
    assert all(Path(p).stat().st_mtime_ns == stamps[p] for p in again_df["path"])
