"""Fault injection: what a user meets when inputs are broken or a run is killed, on tiny data.

Each test feeds one kind of fault and checks the kit's promise: problems of a table are all listed before any long
step; one missing or broken image is skipped and listed, never a dead run; a record that would make a misleading page
is skipped with its reason; a run killed with SIGKILL resumes to exactly what an uninterrupted run makes. Faults that
need a trained run folder are tested beside it in tests/test_infer.py (its tiny_run fixture): unreadable test images
and --max_unreadable, an unwritable output folder, mixed fold architectures, the vote's fill of unreadable images."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from src import check, compose, sources
from src.config import LABELS, LEADS, REPO
from src.model import load_checkpoint
from src.preprocess import CacheJob, build_cache
from src.utils import imwrite
from tests.fake_cache import make_cache


def _competition(root: Path, n_train=6, n_test=3, seed=0) -> Path:
    """A competition folder in the real layout with small random page-like images."""
    rng = np.random.default_rng(seed)
    ids = {"train": [f"t{i}" for i in range(n_train)], "test": [f"u{i}" for i in range(n_test)]}
    for split, names in ids.items():
        for name in names:
            imwrite(root / split / f"{name}.png", rng.integers(180, 256, (60, 90, 3), dtype=np.uint8))
    y = (rng.random((n_train, len(LABELS))) < 0.5).astype(int)
    pd.DataFrame({"id": ids["train"], **{lb: y[:, j] for j, lb in enumerate(LABELS)}}).to_csv(root / "train.csv",
                                                                                           index=False)
    pd.DataFrame({"id": ids["test"], **{lb: 0.5 for lb in LABELS}}).to_csv(root / "sample_submission.csv", index=False)
    return root


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "ECGKA_"))}
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Tables and missing images
# ----------------------------------------------------------------------------------------------------------------
def test_every_table_problem_is_listed_at_once(tmp_path):
    comp = _competition(tmp_path / "comp")
    t = pd.read_csv(comp / "train.csv", dtype=str)
    t.loc[0, "MI"], t.loc[1, "AF"] = "2", "-1"
    t = pd.concat([t, t.iloc[[2]]]).drop(columns=["STTC"])  # a duplicate id, a label column gone
    t.to_csv(comp / "train.csv", index=False)
    (comp / "test" / "u1.png").unlink()
    rep = sources.validate_competition(comp)
    text = "\n".join(rep["errors"])
    assert len(rep["errors"]) == 4, text
    assert "['STTC']" in text and "column MI" in text and "['2']" in text and "column AF" in text and "['-1']" in text
    assert "appear more than once" in text and "t2" in text
    assert [(s["split"], s["id"]) for s in rep["skipped"]] == [("test", "u1")]  # a missing image is not an error
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"4 problem\(s\)") as e:
        check.main([f"--comp={comp}"])
    assert time.perf_counter() - t0 < 5
    assert "1. " in str(e.value) and "4. " in str(e.value)


def test_a_train_id_without_an_image_is_skipped_and_listed(tmp_path, capsys):
    comp = _competition(tmp_path / "comp")
    (comp / "train" / "t3.png").unlink()
    rep = check.main([f"--comp={comp}"])
    assert [s["id"] for s in rep["skipped"]] == ["t3"]
    assert "1 train id(s) have no image" in capsys.readouterr().err
    idx = build_cache(CacheJob(src=str(comp / "train.csv"), dst=str(tmp_path / "cache"), strategy="raw",
                               size=(32, 48), workers=1))
    st = idx.set_index("id")["status"]
    assert st["t3"] == "skipped" and (st.drop("t3") == "ok").all()
    assert "no image for this id" in idx.set_index("id").loc["t3", "error"]


def test_run_all_stops_on_a_broken_table_before_any_training(tmp_path):
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("run_all.sh needs the kit's own .venv")
    from tests.test_pipeline import _copy_of_repo
    repo = _copy_of_repo(tmp_path / "kit")
    comp = _competition(repo / "input" / "ecg-synth-tiny-comp")
    t = pd.read_csv(comp / "train.csv")
    t.loc[0, "CD"] = 2
    t.to_csv(comp / "train.csv", index=False)
    t0 = time.perf_counter()
    r = subprocess.run(["./run_all.sh"], cwd=repo, env=_env(DEBUG="1"), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert time.perf_counter() - t0 < 60
    assert "column CD holds 1 value(s) other than 0/1/empty" in r.stderr
    assert not (repo / "outputs").exists() and not (repo / "input" / "ecg-synth-tiny-scans").exists()


# ----------------------------------------------------------------------------------------------------------------
# Broken images
# ----------------------------------------------------------------------------------------------------------------
def test_corrupt_truncated_and_zero_byte_images_are_skipped(tmp_path):
    comp = _competition(tmp_path / "comp", n_train=6)
    data = (comp / "train" / "t0.png").read_bytes()
    (comp / "train" / "t0.png").write_bytes(data[: len(data) // 2])
    (comp / "train" / "t1.png").write_bytes(b"")
    (comp / "train" / "t2.png").write_bytes(b"\x89PNG not really")
    idx = build_cache(CacheJob(src=str(comp / "train.csv"), dst=str(tmp_path / "cache"), strategy="raw",
                               size=(32, 48), workers=1)).set_index("id")
    assert list(idx.loc[["t0", "t1", "t2"], "status"]) == ["skipped"] * 3
    assert "truncated" in idx.loc["t0", "error"] and "empty" in idx.loc["t1", "error"]
    assert (idx.loc[["t3", "t4", "t5"], "status"] == "ok").all()


# ----------------------------------------------------------------------------------------------------------------
# WFDB records that would make misleading pages
# ----------------------------------------------------------------------------------------------------------------
def _wfdb(folder: Path, name: str, sig: np.ndarray, leads, fs=100):
    import wfdb
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig.T.astype(float),
                fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                write_dir=str(folder))
    return folder / name


def test_nan_short_and_two_lead_records_in_a_signal_source(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = rng.normal(0, 0.2, (12, 1000))
    recs = {"good": _wfdb(tmp_path / "rec", "good", good, LEADS),
            "nan": _wfdb(tmp_path / "rec", "nan", np.full((12, 1000), np.nan), LEADS),
            "short": _wfdb(tmp_path / "rec", "short", good[:, :400], LEADS),
            "two": _wfdb(tmp_path / "rec", "two", good[:2], ["II", "V1"])}
    table = pd.DataFrame([{"id": k, "path": str(p), **{lb: 0.0 for lb in LABELS}} for k, p in recs.items()])
    out = compose.render_signal_source(table, tmp_path / "set", seed=1, workers=1, hw=(300, 400))
    assert sorted(out["id"]) == ["good_00", "two_00"]
    errors = {s["id"]: s["error"] for s in out.attrs["skipped"]}
    assert "every lead is NaN" in errors["nan_00"] and "4 s long" in errors["short_00"]
    assert "skipped 2: {'no signal': 1, 'too short': 1}" in capsys.readouterr().err
    import json
    meta = json.loads((tmp_path / "set" / "images" / "two_00.json").read_text())
    assert meta["params"]["layout"] == "2x1" and sorted(lead["name"] for lead in meta["leads"]) == ["II", "V1"]


# ----------------------------------------------------------------------------------------------------------------
# SIGKILL, then resume
# ----------------------------------------------------------------------------------------------------------------
def _kill_when(cmd, cwd, env, ready, timeout=300):
    """Start `cmd` in its own process group, SIGKILL the group once ready() holds; returns the return code."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0 = time.time()
    while not ready():
        if p.poll() is not None:
            raise AssertionError(f"{cmd} ended (rc {p.returncode}) before it could be killed")
        if time.time() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError("never reached the point to kill it")
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    return p.wait()


def test_sigkill_during_stage1_then_resume_equals_uninterrupted(tmp_path):
    cache, labels = make_cache(tmp_path / "cache", 24)
    env = _env(ECGKA_KAGGLE_ROOT=str(tmp_path / "kaggle"))
    outputs = tmp_path / "kaggle" / "working" / "outputs" / "pretrain"
    base = [sys.executable, "-m", "src.pretrain", f"--sources={cache}:{labels}", "--arch=convnext_atto",
            "--epochs=3", "--batch_size=4", "--workers=0", "--threads=1", "--val_frac=0.25"]
    subprocess.run(base + ["--name=full"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    last = outputs / "cut" / "last.pt"

    def after_first_epoch():
        try:
            return last.exists() and load_checkpoint(last)["epoch"] >= 1
        except Exception:  # noqa: BLE001 -- being replaced right now; look again
            return False
    assert _kill_when(base + ["--name=cut"], REPO, env, after_first_epoch) == -signal.SIGKILL
    assert not (outputs / "cut" / "done.json").exists()
    subprocess.run(base + ["--name=cut", "--resume"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    a, b = load_checkpoint(outputs / "full" / "last.pt"), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (outputs / "full" / "oof.csv").read_text() == (outputs / "cut" / "oof.csv").read_text()


def test_sigkill_during_cache_building_then_resume_is_byte_identical(tmp_path):
    comp = _competition(tmp_path / "comp", n_train=40)
    env = _env()
    base = [sys.executable, "-m", "src.preprocess", f"--src={comp / 'train.csv'}", "--strategy=full",
            "--size=48,64", "--workers=1"]
    subprocess.run(base + [f"--dst={tmp_path / 'full'}"], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    cut = tmp_path / "cut"
    n_written = lambda: len(list((cut / "images").glob("*.png"))) if (cut / "images").is_dir() else 0  # noqa: E731
    assert _kill_when(base + [f"--dst={cut}"], REPO, env, lambda: n_written() >= 5) == -signal.SIGKILL
    assert 5 <= n_written() < 40
    (cut / "images" / ".t39.png.k1ll3d.tmp.png").write_bytes(b"half")  # what a kill inside a write leaves (t39: last)
    subprocess.run(base + [f"--dst={cut}"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    full_files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*") if p.is_file())
    cut_files = sorted(p.relative_to(cut) for p in cut.rglob("*") if p.is_file())
    assert full_files == cut_files  # no temporary file left behind either
    for f in full_files:
        a, b = (tmp_path / "full" / f).read_bytes(), (cut / f).read_bytes()
        assert a == b, f


# ----------------------------------------------------------------------------------------------------------------
# Stage options and submissions
# ----------------------------------------------------------------------------------------------------------------
def test_stage2_checks_the_tables_before_reading_the_cache(tmp_path):
    from src import train
    comp = _competition(tmp_path / "comp")
    t = pd.read_csv(comp / "train.csv")
    t.loc[1, "HYP"] = -1
    t.to_csv(comp / "train.csv", index=False)
    (tmp_path / "folds.csv").write_text("id,fold\n")
    with pytest.raises(SystemExit, match=r"(?s)\[train\] the competition folder .* column HYP holds 1 value"):
        train.main([f"--train_csv={comp / 'train.csv'}", f"--folds_csv={tmp_path / 'folds.csv'}",
                    f"--cache={tmp_path / 'no-cache'}", "--arch=convnext_atto", f"--name={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_a_missing_init_checkpoint_is_named_before_anything_is_written(tmp_path):
    from src import train
    missing = tmp_path / "stage1" / "best.pt"
    with pytest.raises(SystemExit, match=f"checkpoint not found: {missing}"):
        train.main([f"--train_csv={tmp_path / 'train.csv'}", f"--folds_csv={tmp_path / 'f.csv'}",
                    f"--cache={tmp_path / 'c'}", f"--init={missing}", f"--name={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_submissions_with_inf_or_nan_are_rejected(tmp_path):
    from src import score
    sol = pd.DataFrame({"id": ["a", "b", "c", "d"], **{lb: [0, 1, 0, 1] for lb in LABELS}})
    sol.to_csv(tmp_path / "sol.csv", index=False)
    for bad in (np.inf, -np.inf, np.nan):
        sub = sol.assign(MI=[0.1, bad, 0.3, 0.9])
        sub.to_csv(tmp_path / "sub.csv", index=False)
        with pytest.raises((SystemExit, ValueError), match="MI"):
            score.main([f"--submission={tmp_path / 'sub.csv'}", f"--solution={tmp_path / 'sol.csv'}"])


def test_help_keeps_each_option_comment_whole():
    r = subprocess.run([sys.executable, "-m", "src.infer", "--help"], cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("--vote="))
    assert "hard (the paper's: share of folds above their threshold) | soft (mean probability) | rank" in line
