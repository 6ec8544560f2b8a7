"""Whole-kit smoke tests: `DEBUG=1 ./run_all.sh` end to end (both routes, the image and the signal one, in one vote),
and the three Kaggle kernels over both routes with Kaggle's paths simulated (ECGKA_KAGGLE_ROOT) on tiny data. Both run
in a throwaway copy of the tracked files, so a developer's input/ and outputs/ are never touched; the copy shares this
checkout's .venv."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.config import LABELS, REPO


def _copy_of_repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            (dst / f).write_bytes((REPO / f).read_bytes())
            os.chmod(dst / f, (REPO / f).stat().st_mode)
    (dst / ".venv").symlink_to(Path(sys.prefix))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], cwd=dst, check=True)
    return dst


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "ECGKA_"))}
    env.update(extra)
    return env


def _score_ok(submission: Path, solution: Path, cwd: Path):
    # toy test sets can hold no positive of a class: average over the classes where AUROC is defined
    r = subprocess.run([sys.executable, "-m", "src.score", f"--submission={submission}", f"--solution={solution}",
                        "--skip_degenerate=true"],
                       cwd=cwd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "macro" in r.stdout.lower()


def test_run_all_debug_end_to_end(tmp_path):
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("run_all.sh needs the kit's own .venv")
    repo = _copy_of_repo(tmp_path / "kit")
    r = subprocess.run(["./run_all.sh"], cwd=repo, env=_env(DEBUG="1"), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    sub = repo / "submissions" / "debug-both-submission.csv"
    sample = pd.read_csv(repo / "input/ecg-synth-tiny-comp/sample_submission.csv", dtype={"id": str})
    got = pd.read_csv(sub, dtype={"id": str})
    assert list(got.columns) == ["id", *LABELS] and list(got.id) == list(sample.id)
    _score_ok(sub, repo / "input/ecg-synth-tiny-comp-solution/solution.csv", repo)
    info = json.loads((repo / "submissions" / "debug-both-submission_info.json").read_text())
    assert info["routes"] == ["image"] * 5 + ["signal"] * 5  # one vote over the ten fold models
    # every step skips finished work: a second run retrains nothing and rewrites the same submission
    r2 = subprocess.run(["./run_all.sh"], cwd=repo, env=_env(DEBUG="1"), capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stdout[-4000:] + r2.stderr[-4000:]
    assert pd.read_csv(sub, dtype={"id": str}).equals(got)


def _tree(root: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under root: a read-only mount must not change. Ultralytics'
    label caches (labels/*.cache) are left out: it writes them beside a dataset only where the folder is writable (as
    root here everything is) and skips them with a warning on Kaggle's read-only mounts."""
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*")
            if f.is_file() and not (f.suffix == ".cache" and f.parent.parent.name.endswith("-roi"))}


def _offline_prefix() -> list[str]:
    """`unshare -n` (a private network namespace, no network at all) where this machine allows it."""
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    return ["unshare", "-n"] if ok else []


def test_kaggle_kernels_over_versions(tmp_path):
    """The three kernels as Kaggle runs them, both routes in each (ECGKA_ROUTE=both): every version of a notebook
    starts in an empty /kaggle/working, and what it left there is mounted read-only as /kaggle/input/<slug> for later
    versions and other notebooks. Stage I takes two versions (one epoch each, resumed), Stage II trains folds 0-2 in
    one version and 3-4 in the next, a fork's output holds folds 0-2 again, and inference (network off) gathers the
    folds of every attached Stage II output of both routes into one vote."""
    repo = _copy_of_repo(tmp_path / "kit")
    kaggle = tmp_path / "kaggle"
    inp, work = kaggle / "input", kaggle / "working"
    # What a user uploads: the bundle (source only here; the venv already holds the wheels) and the datasets.
    subprocess.run([sys.executable, "-m", "src.bundle", "--wheels=false", f"--out={inp}/ecgka-bundle"],
                   cwd=repo, env=_env(), check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "src.make_data", "--preset=tiny", f"--root={inp}", "--n_train=30",
                    "--n_test=10", "--n_scans=24", "--n_roi=12"], cwd=repo, env=_env(), check=True,
                   capture_output=True)
    (inp / "competitions").mkdir()
    shutil.move(inp / "ecg-synth-comp", inp / "competitions" / "ecg-synth-comp")  # newer images mount it here
    small = dict(ECGKA_BUNDLE=str(inp / "ecgka-bundle"), ECGKA_ARCH="convnext_atto", ECGKA_SIZE="64,128",
                 ECGKA_ROI_EPOCHS="1", ECGKA_ROI_IMGSZ="128", ECGKA_COMP="ecg-synth-comp", ECGKA_PRETRAINED="",
                 ECGKA_BATCH="8", ECGKA_ROUTE="both", ECGKA_SIGNAL_SOURCES="synth:200")

    def version(kernel: str, slug: str, offline: bool = False, **env) -> str:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        before = _tree(inp)
        cmd = (_offline_prefix() if offline else []) + [sys.executable, str(repo / f"kernels/{kernel}/kernel.py")]
        r = subprocess.run(cmd, cwd=work, env=_env(ECGKA_KAGGLE_ROOT=str(kaggle), **small, **env),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{kernel} {env}\n" + r.stdout[-4000:] + r.stderr[-4000:]
        assert _tree(inp) == before, f"{kernel} wrote under /kaggle/input"
        if slug:  # the saved version's output replaces the previous one under /kaggle/input/<slug>
            shutil.rmtree(inp / slug, ignore_errors=True)
            shutil.copytree(work, inp / slug)
        return r.stdout + r.stderr

    s1s = [inp / f"ecgka-stage1/outputs/pretrain/{name}" for name in ("stage1", "signal-stage1")]
    version("stage1", "ecgka-stage1", ECGKA_EPOCHS="2", ECGKA_SESSION_EPOCHS="1")
    for s1 in s1s:
        assert (s1 / "last.pt").exists() and not (s1 / "done.json").exists()  # the session ended after one epoch
    log = version("stage1", "ecgka-stage1", ECGKA_EPOCHS="2", ECGKA_SESSION_EPOCHS="1")
    assert "resumed" in log and "[roi] best.pt" not in log  # the detector is kept, Stage I continues
    for s1 in s1s:
        assert (s1 / "done.json").exists() and len(pd.read_csv(s1 / "log.csv")) == 2

    s2s = [inp / f"ecgka-stage2/outputs/train/{name}" for name in ("stage2", "signal-stage2")]
    version("stage2", "ecgka-stage2", ECGKA_EPOCHS="1", ECGKA_FOLD="0,1,2")
    for s2 in s2s:
        assert sorted(d.name for d in s2.glob("fold*")) == ["fold0", "fold1", "fold2"]
    fork = inp / "notebooks" / "me" / "ecgka-stage2-fork"  # a fork of the notebook that trained folds 0-2
    shutil.copytree(inp / "ecgka-stage2", fork)
    first = {(s2, k): (s2 / f"fold{k}/best.pt").read_bytes() for s2 in s2s for k in range(3)}
    log = version("stage2", "ecgka-stage2", ECGKA_EPOCHS="1", ECGKA_FOLD="3,4")
    assert "0 digitised, 0 skipped, 30 already done" in log  # the digitised photos came back with src.restore
    for s2 in s2s:
        assert all((s2 / f"fold{k}/best.pt").read_bytes() == first[s2, k] for k in range(3))  # kept, not retrained
        assert all((s2 / f"fold{k}/best.pt").exists() for k in (3, 4))

    version("infer", "", offline=True)
    info = json.loads((work / "submission_info.json").read_text())
    assert info["folds"] == [0, 1, 2, 3, 4] * 2 and info["routes"] == ["image"] * 5 + ["signal"] * 5
    _score_ok(work / "submission.csv", inp / "ecg-synth-comp-solution/solution.csv", repo)


def test_kernel_metadata_is_complete():
    """Each kernel's metadata names its code file, a 2x T4 machine, internet only where weights are downloaded, and
    every source its code reads by default."""
    import re
    for kernel, internet in (("stage1", True), ("stage2", False), ("infer", False)):
        folder = REPO / "kernels" / kernel
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        code = (folder / meta["code_file"]).read_text()
        assert meta["kernel_type"] == "script" and meta["language"] == "python"
        assert meta["enable_gpu"] and meta["machine_shape"] == "NvidiaTeslaT4"
        assert meta["enable_internet"] is internet, kernel
        assert meta["id"].endswith("/ecgka-" + kernel)
        sources = [s.split("/")[-1] for s in meta["dataset_sources"] + meta["kernel_sources"]]
        sources += meta["competition_sources"]
        defaults = dict(re.findall(r'E\("ECGKA_(\w+)", "([^"]*)"\)', code))
        assert "ecgka-bundle" in sources
        for key in ("COMP", "SCANS", "ROI", "STAGE1"):
            if key in defaults:
                assert defaults[key].split("/")[0] in sources, (kernel, key, defaults[key])
