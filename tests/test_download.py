"""The download CLI: without Kaggle credentials it stops at once with the fix, before `kaggle` is imported; sources
that cannot be fetched by script print their commands. No test touches the network."""
import json
import os
import subprocess
import sys

import pytest

from src import download
from src.config import REPO


def _clean_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KAGGLE_") and k not in ("ECGKA_KAGGLE_ROOT", "XDG_CONFIG_HOME")}
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "kcfg").mkdir(exist_ok=True)
    env.update(HOME=str(tmp_path / "home"), KAGGLE_CONFIG_DIR=str(tmp_path / "kcfg"),
               XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return env


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for k, v in _clean_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    for k in [k for k in os.environ if k.startswith("KAGGLE_") and k != "KAGGLE_CONFIG_DIR"]:
        monkeypatch.delenv(k)
    monkeypatch.delenv("ECGKA_KAGGLE_ROOT", raising=False)
    return tmp_path


@pytest.mark.parametrize("source", ["bhf", "scans"])
def test_cli_without_credentials_exits_nonzero_with_the_fix(tmp_path, source):
    env = _clean_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "src.download", source], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    msg = proc.stderr
    assert "Kaggle credentials not found" in msg
    assert str(tmp_path / "kcfg" / "kaggle.json") in msg  # where kaggle would have looked, and where to put it
    assert "Create New Token" in msg and "chmod 600" in msg and "KAGGLE_CONFIG_DIR" in msg
    if source == "bhf":
        assert "kaggle.com/competitions/bhf-data-science-centre-ecg-challenge/rules" in msg
    assert "Authentication required" not in proc.stdout + msg  # kaggle's own import-time help never ran
    assert not (tmp_path / "kcfg").joinpath("kaggle.json").exists()


def test_no_kaggle_import_without_credentials(no_credentials, monkeypatch):
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    assert download.kaggle_credentials() is None
    with pytest.raises(SystemExit) as exc:
        download.main(["bhf", f"--dest={no_credentials / 'dest'}"])
    assert exc.value.code not in (0, None) and "kaggle.json" in str(exc.value.code)
    assert "kaggle" not in sys.modules
    assert not (no_credentials / "dest").exists()  # nothing was created either


def test_credentials_are_found_where_kaggle_reads_them(no_credentials, monkeypatch):
    cfg = no_credentials / "kcfg" / "kaggle.json"
    cfg.write_text(json.dumps({"username": "someone", "key": "0123"}))
    assert download.kaggle_credentials() == str(cfg)
    cfg.write_text("{not json")
    with pytest.raises(SystemExit, match="not readable JSON"):
        download.kaggle_credentials()
    cfg.write_text(json.dumps({"username": "someone"}))
    with pytest.raises(SystemExit, match="lacks"):
        download.kaggle_credentials()
    cfg.unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert download.kaggle_credentials() is None  # a username alone is not a credential
    monkeypatch.setenv("KAGGLE_KEY", "0123")
    assert "KAGGLE_KEY" in download.kaggle_credentials()
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    token = no_credentials / "home" / ".kaggle" / "access_token"
    token.parent.mkdir()
    token.write_text("KGAT_xxx")
    assert download.kaggle_credentials() == str(token)
    # with ~/.kaggle present and no KAGGLE_CONFIG_DIR, kaggle reads ~/.kaggle/kaggle.json
    monkeypatch.delenv("KAGGLE_CONFIG_DIR")
    assert download.kaggle_config_dir() == no_credentials / "home" / ".kaggle"


def test_finished_download_is_not_repeated(no_credentials, capsys):
    dest = no_credentials / "dest"
    dest.mkdir()
    (dest / download.MARKER).write_text("{}")
    assert download.main(["bhf", f"--dest={dest}"]) == 0  # no credentials needed to learn there is nothing to do
    assert "already holds a finished download" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        download.main(["bhf", f"--dest={dest}", "--force"])


def test_attached_kaggle_input_is_used_as_is(no_credentials, monkeypatch, capsys):
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(no_credentials / "kaggle"))
    attached = no_credentials / "kaggle" / "input" / "bhf-data-science-centre-ecg-challenge"
    attached.mkdir(parents=True)
    (attached / "train.csv").write_text("id\n")
    assert download.main(["bhf"]) == 0
    assert "already attached" in capsys.readouterr().out


@pytest.mark.parametrize("source, expect", [
    ("ptbxl", ["wget -r -N -c -np", "https://physionet.org/files/ptb-xl/1.0.3/", "ptbxl_database.csv"]),
    ("code15", ["https://zenodo.org/records/4916206/files/exams.csv", "exams_part$i.zip", "seq 0 17"]),
    ("genecg", ["00001_hr_1R.png", "ptbxl_database.csv", "python -m src.download ptbxl"]),
])
def test_signal_sources_print_commands(source, expect, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "src.download", source, f"--dest={tmp_path / source}"], cwd=REPO,
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for e in expect:
        assert e in proc.stdout
    assert str(tmp_path / source) in proc.stdout
    assert not (tmp_path / source).exists()  # printing only


def test_bad_source_and_options():
    with pytest.raises(SystemExit, match=r"bhf\|scans\|ptbxl\|code15\|genecg"):
        download.main(["nope"])
    with pytest.raises(SystemExit, match="did you mean --force"):
        download.main(["bhf", "--forse"])
