"""Folds: every id once, patients never split, label prevalence kept per fold, deterministic, CLI writes once."""
import numpy as np
import pandas as pd
import pytest

from src.config import LABELS
from src.folds import default_folds_path, main, make_folds, read_folds


def _table(n_patients=400, seed=0):
    """Patients with 1-3 records each; correlated multilabels at BHF-like rates; some NaN labels."""
    rng = np.random.default_rng(seed)
    rows = []
    prev = {"MI": 0.25, "AF": 0.08, "HYP": 0.12, "CD": 0.2, "STTC": 0.3}
    for p in range(n_patients):
        base = {k: rng.random() < v for k, v in prev.items()}
        for r in range(int(rng.integers(1, 4))):
            lab = {k: float(base[k] if rng.random() > 0.1 else not base[k]) for k in LABELS}
            if rng.random() < 0.03:
                lab["HYP"] = np.nan
            rows.append({"id": f"img{p:04d}_{r}", **lab, "patient_id": f"p{p}"})
    return pd.DataFrame(rows)


def test_every_id_once_groups_whole_prevalence_kept():
    df = _table()
    f = make_folds(df, n_folds=5, seed=42)
    assert list(f["id"]) == list(df["id"])  # one row per id, in input order
    assert set(f["fold"]) == set(range(5))
    per_patient = df.assign(fold=f["fold"].to_numpy()).groupby("patient_id")["fold"].nunique()
    assert (per_patient == 1).all()
    m = df.assign(fold=f["fold"].to_numpy())
    sizes = m.groupby("fold").size()
    assert sizes.min() > 0.15 * len(df) and sizes.max() < 0.25 * len(df)
    overall = df[list(LABELS)].mean()
    for k, part in m.groupby("fold"):
        for lab in LABELS:
            assert abs(part[lab].mean() - overall[lab]) < 0.04, (k, lab)


def test_deterministic_and_independent_of_row_order():
    df = _table(200, seed=1)
    a = make_folds(df, 5, 7)
    b = make_folds(df.sample(frac=1.0, random_state=3), 5, 7).set_index("id").loc[a["id"]].reset_index()
    assert a.equals(b)
    c = make_folds(df, 5, 8)
    assert not a["fold"].equals(c["fold"])


def test_no_group_column_and_errors():
    df = _table(50).drop(columns="patient_id")
    f = make_folds(df, 5, 0)
    assert f["id"].is_unique and len(f) == len(df)
    with pytest.raises(ValueError, match="groups"):
        make_folds(_table(3), n_folds=5)
    with pytest.raises(ValueError, match="duplicate"):
        make_folds(pd.concat([df, df.iloc[:1]]), 5)


def test_cli_writes_once_refuses_other_split(tmp_path, capsys):
    comp = tmp_path / "comp"
    comp.mkdir()
    _table(120).to_csv(comp / "train.csv", index=False)
    out = tmp_path / "folds" / "folds.csv"
    args = [f"--train_csv={comp / 'train.csv'}", f"--out={out}", "--n_folds=4"]
    assert main(args) == out
    first = read_folds(out)
    assert sorted(first.columns) == ["fold", "id"] and first["fold"].nunique() == 4
    mtime = out.stat().st_mtime_ns
    main(args)  # same split: no-op
    assert out.stat().st_mtime_ns == mtime
    assert "unchanged" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="different split"):
        main(args + ["--seed=1"])
    main(args + ["--seed=1", "--force"])
    assert not read_folds(out)["fold"].equals(first["fold"])


def test_default_path_is_under_input_not_competition(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    comp = tmp_path / "kaggle" / "input" / "bhf-comp"
    comp.mkdir(parents=True)
    _table(60).to_csv(comp / "train.csv", index=False)
    out = main([f"--train_csv={comp / 'train.csv'}"])
    assert out == default_folds_path(comp / "train.csv")
    assert out == tmp_path / "kaggle" / "working" / "input" / "bhf-comp-folds" / "folds.csv"
    assert out.exists() and not (comp / "folds.csv").exists()


def test_cli_reads_id_and_label_columns_from_sample_submission(tmp_path):
    """A competition whose id column is not called `id` and whose labels are named by sample_submission.csv."""
    comp = tmp_path / "comp"
    for split in ("train", "test"):
        (comp / split).mkdir(parents=True)  # no images: those ids are skipped, not errors
    t = _table(80).rename(columns={"id": "ecg_id", "AF": "afib"}).drop(columns=["STTC"])
    t.to_csv(comp / "train.csv", index=False)
    pd.DataFrame(columns=["ecg_id", "MI", "afib", "HYP", "CD"]).to_csv(comp / "sample_submission.csv", index=False)
    out = main([f"--train_csv={comp / 'train.csv'}", f"--out={tmp_path / 'f.csv'}"])
    f = read_folds(out)
    assert list(f["id"]) == t["ecg_id"].tolist()
    # the split stratifies on sample_submission's labels (afib is not one of LABELS)
    named = t.rename(columns={"ecg_id": "id"})
    assert f["fold"].tolist() == make_folds(named, 5, 42, "patient_id", ["MI", "afib", "HYP", "CD"])["fold"].tolist()
    assert f["fold"].tolist() != make_folds(named, 5, 42, "patient_id")["fold"].tolist()
    pd.DataFrame(columns=["record", "MI"]).to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(SystemExit, match=r"\['record'\] of sample_submission.csv are missing"):
        main([f"--train_csv={comp / 'train.csv'}", f"--out={tmp_path / 'g.csv'}"])


def test_cli_refuses_labels_other_than_0_1(tmp_path):
    t = _table(30)
    t.loc[3, "MI"] = 2
    t.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SystemExit, match="column MI must hold 0, 1 or blank"):
        main([f"--train_csv={tmp_path / 'train.csv'}", f"--out={tmp_path / 'f.csv'}"])
    assert not (tmp_path / "f.csv").exists()
