"""src.restore (a run carried over Kaggle sessions) and src.launch (one process or torchrun per GPU)."""
import sys

import pytest

from src import launch, restore


def test_restore_copies_missing_files_once_and_skips_temp_files(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "outputs/train/stage2/fold0").mkdir(parents=True)
    (old / "outputs/train/stage2/fold0/best.pt").write_bytes(b"w" * 100)
    (old / "outputs/train/stage2/fold0/.last.pt.abc.tmp.pt").write_bytes(b"half")  # a killed session's temp file
    (old / "input/cache/images").mkdir(parents=True)
    (old / "input/cache/images/a.png").write_bytes(b"png")
    (old / "submission.csv").write_text("id\n")  # not a folder restore carries over
    res = restore.main([f"--src={old}", f"--dst={new}"])
    assert res == {"copied": 2, "kept": 0, "bytes": 103}
    assert (new / "outputs/train/stage2/fold0/best.pt").read_bytes() == b"w" * 100
    assert not list(new.rglob("*.tmp*")) and not (new / "submission.csv").exists()
    (new / "outputs/train/stage2/fold0/best.pt").write_bytes(b"x" * 100)  # same size: the newer session's file stays
    (new / "input/cache/images/a.png").write_bytes(b"")  # a truncated copy is replaced
    assert restore.main([f"--src={old}", f"--dst={new}"]) == {"copied": 1, "kept": 1, "bytes": 3}
    assert (new / "outputs/train/stage2/fold0/best.pt").read_bytes() == b"x" * 100
    assert (new / "input/cache/images/a.png").read_bytes() == b"png"


def test_restore_without_a_previous_version(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    assert restore.main(["--src=ecgka-stage2"]) == {"copied": 0, "kept": 0, "bytes": 0}
    assert "starting fresh" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="attach the previous version"):
        restore.main(["--src=ecgka-stage2", "--required"])
    (tmp_path / "kaggle/input/ecgka-stage2/outputs").mkdir(parents=True)
    (tmp_path / "kaggle/input/ecgka-stage2/outputs/x.txt").write_text("x")
    restore.main(["--src=ecgka-stage2"])  # default destination: /kaggle/working
    assert (tmp_path / "kaggle/working/outputs/x.txt").read_text() == "x"


def test_launch_uses_torchrun_only_with_several_gpus():
    assert launch.command("src.train", ["--fold=0"], 0) == [sys.executable, "-m", "src.train", "--fold=0"]
    assert launch.command("src.train", ["--fold=0"], 1) == [sys.executable, "-m", "src.train", "--fold=0"]
    cmd = launch.command("src.pretrain", ["--name=x"], 2)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd
    assert cmd[-3:] == ["-m", "src.pretrain", "--name=x"]
    with pytest.raises(SystemExit, match="training stage"):
        launch.command("src.infer", [], 2)
