"""The competition metric and the submission checks of src/score.py."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from src import score
from src.config import LABELS


@pytest.mark.parametrize("seed", range(6))
def test_macro_auroc_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 300))
    y = (rng.random((n, 5)) < rng.uniform(0.1, 0.6, 5)).astype(int)
    y[0], y[1] = 1, 0  # both values present in every class
    s = rng.random((n, 5))
    if seed % 2:  # coarse scores: many ties, as hard-vote fractions produce
        s = np.round(s * 5) / 5
    ours = score.macro_auroc(y, s)
    assert ours == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    per = score.per_class_auroc(y, s, LABELS)
    for j, c in enumerate(LABELS):
        assert per[c] == pytest.approx(roc_auc_score(y[:, j], s[:, j]), abs=1e-12)


def test_f1_matches_sklearn_and_per_class_thresholds():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.3).astype(int)
    s = rng.random((200, 5))
    assert score.macro_f1(y, s) == pytest.approx(f1_score(y, s >= 0.5, average="macro"))
    thr = [0.1, 0.3, 0.5, 0.7, 0.9]
    assert score.macro_f1(y, s, thr) == pytest.approx(f1_score(y, s >= np.array(thr), average="macro"))
    # a class with no positives and no predicted positives has no F1 and is left out of the mean
    y2, s2 = y.copy(), s.copy()
    y2[:, 0], s2[:, 0] = 0, 0.0
    assert math.isnan(score.per_class_f1(y2, s2)["0"])
    assert score.macro_f1(y2, s2) == pytest.approx(f1_score(y[:, 1:], s[:, 1:] >= 0.5, average="macro"))


def test_auroc_known_values_and_degenerate_classes():
    assert score.binary_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert score.binary_auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert score.binary_auroc([0, 1], [0.5, 0.5]) == 0.5
    y = np.array([[0, 1], [1, 1], [0, 1], [1, 1]])
    s = np.array([[0.1, 0.2], [0.9, 0.3], [0.2, 0.4], [0.8, 0.5]])
    with pytest.raises(ValueError, match="class B: only one class"):
        score.macro_auroc(y, s, labels=["A", "B"])
    assert score.macro_auroc(y, s, labels=["A", "B"], skip_degenerate=True) == 1.0
    # NaN truths (unknown labels) are masked per class when skipping
    y = np.array([[0, np.nan], [1, 0], [np.nan, 1], [1, np.nan]], float)
    s = np.array([[0.1, 0.9], [0.9, 0.2], [0.0, 0.8], [0.7, 0.1]])
    assert score.per_class_auroc(y, s, ["A", "B"], skip_degenerate=True) == {"A": 1.0, "B": 1.0}


def _files(tmp_path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"t{i:03d}" for i in range(n)]
    y = (rng.random((n, 5)) < 0.4).astype(int)
    y[:4] = [[1] * 5, [0] * 5, [1] * 5, [0] * 5]  # both parts see both values of every class
    sol = pd.DataFrame(y, columns=list(LABELS))
    sol.insert(0, "id", ids)
    sol["Usage"] = ["Public", "Public", "Private", "Private"] + list(rng.choice(["Public", "Private"], n - 4))
    sub = pd.DataFrame(np.clip(y + rng.normal(0, 0.6, y.shape), 0, 1), columns=list(LABELS))
    sub.insert(0, "id", ids)
    return sol, sub.sample(frac=1, random_state=1)  # submission order is irrelevant


def _run(tmp_path, sol, sub, *extra):
    sol.to_csv(tmp_path / "solution.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    return score.main(["--submission", str(tmp_path / "sub.csv"), "--solution", str(tmp_path / "solution.csv"),
                       *extra])


def test_cli_reports_public_private_overall(tmp_path, capsys):
    sol, sub = _files(tmp_path)
    res = _run(tmp_path, sol, sub, "--out", str(tmp_path / "m.json"))
    assert set(res) == {"overall", "Public", "Private"}
    aligned = sub.set_index("id").loc[sol["id"], list(LABELS)].to_numpy()
    assert res["overall"]["macro_auroc"] == pytest.approx(roc_auc_score(sol[list(LABELS)], aligned))
    pub = (sol["Usage"] == "Public").to_numpy()
    assert res["Public"]["macro_auroc"] == pytest.approx(roc_auc_score(sol[list(LABELS)][pub], aligned[pub]))
    assert res["Public"]["n"] + res["Private"]["n"] == len(sol)
    out = capsys.readouterr().out
    assert "macro-AUROC" in out and "Private" in out and "AUROC STTC" in out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["overall"]["macro_auroc"] == pytest.approx(res["overall"]["macro_auroc"])


@pytest.mark.parametrize("defect, message", [
    ("missing_id", r"1 id\(s\) of the solution are missing.*t005"),
    ("extra_id", r"1 id\(s\) not in the solution.*zzz"),
    ("nan", r"column AF has 1 NaN.*t007"),
    ("inf", r"column MI has 2 NaN, infinite.*t002.*t009|column MI has 2 NaN, infinite.*t009.*t002"),
    ("duplicate", r"duplicate id.*t003"),
    ("missing_col", r"missing \['HYP'\]"),
    ("extra_col", r"unexpected \['NORM'\]"),
    ("no_id", r"no 'id' column"),
])
def test_cli_rejects_bad_submissions_naming_the_file(tmp_path, defect, message):
    sol, sub = _files(tmp_path)
    sub = sub.reset_index(drop=True)
    if defect == "missing_id":
        sub = sub[sub["id"] != "t005"]
    elif defect == "extra_id":
        sub = pd.concat([sub, sub.iloc[:1].assign(id="zzz")])
    elif defect == "nan":
        sub.loc[sub["id"] == "t007", "AF"] = np.nan
    elif defect == "inf":  # sklearn's roc_auc_score raises on these; the check names them first
        sub.loc[sub["id"] == "t002", "MI"] = np.inf
        sub.loc[sub["id"] == "t009", "MI"] = -np.inf
    elif defect == "duplicate":
        sub = pd.concat([sub, sub[sub["id"] == "t003"]])
    elif defect == "missing_col":
        sub = sub.drop(columns="HYP")
    elif defect == "extra_col":
        sub["NORM"] = 0.5
    elif defect == "no_id":
        sub = sub.rename(columns={"id": "record"})
    with pytest.raises(SystemExit) as e:
        _run(tmp_path, sol, sub)
    msg = str(e.value)
    assert "sub.csv" in msg
    assert re.search(message, msg), msg


def test_cli_single_valued_class_is_an_error_unless_skipped(tmp_path):
    sol, sub = _files(tmp_path)
    sol["CD"] = 0
    with pytest.raises(SystemExit, match=r"class CD: only one class.*--skip_degenerate"):
        _run(tmp_path, sol, sub)
    res = _run(tmp_path, sol, sub, "--skip_degenerate=true")
    assert math.isnan(res["overall"]["auroc"]["CD"]) and not math.isnan(res["overall"]["macro_auroc"])


def test_snr_db_hand_computed_cases():
    # offset removed: error [0, 0, 0, 1] - 0.25 -> 0.75; power 30 -> 10 log10(40)
    assert score.snr_db([1, 2, 3, 4], [1, 2, 3, 5], fs=1, max_shift_s=0)[0] == pytest.approx(10 * np.log10(40))
    # NaN in the prediction counts as 0 mV: error [0, 0, -1, 0] - (-0.25) -> 0.75; power 4
    assert score.snr_db([1, 1, 1, 1], [1, 1, np.nan, 1], fs=1, max_shift_s=0)[0] == pytest.approx(10 * np.log10(4 / 0.75))
    # samples the truth lacks are left out: [1, 2] vs [1, 2.5] -> 0.125 over power 5
    assert score.snr_db([1, np.nan, 2], [1, 99, 2.5], fs=1, max_shift_s=0)[0] == pytest.approx(10 * np.log10(40))
    # a one-sample shift is forgiven within max_shift_s, not beyond it
    t, p = [0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]
    assert score.snr_db(t, p, fs=1, max_shift_s=1)[0] == np.inf
    assert score.snr_db(t, p, fs=1, max_shift_s=0)[0] == pytest.approx(10 * np.log10(1 / (2 - 4 / 6 * 0 - 0)))
    # per lead; an all-zero truth has no SNR
    out = score.snr_db(np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([[1.0, -1.0], [1.0, 1.0]]), fs=1)
    assert out[0] == np.inf and np.isnan(out[1])
