"""src/signals.py: WFDB records read as [12, n] mV in LEADS order, units and lead aliases, errors naming the file."""
import numpy as np
import pytest

from src import render, signals
from src.config import LEADS, REPO
from tests.test_render import check_round_trip

FIXTURES = REPO.parent / "shared" / "fixtures"


def _write_record(d, name, seconds, fs=250, names=("I", "II", "V1"), units="mV"):
    import wfdb
    sig = np.random.default_rng(0).normal(0, 0.4, (int(seconds * fs), len(names)))
    wfdb.wrsamp(name, fs=fs, units=[units] * len(names), sig_name=list(names), p_signal=sig,
                fmt=["16"] * len(names), write_dir=str(d))
    return sig


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared WFDB fixtures not present")
def test_read_real_wfdb_records():
    import wfdb
    for rel, fs in [("ptbxl/records500/00000/00001_hr", 500), ("ptbxl/records100/00000/00001_lr", 100),
                    ("cinc2021/HR06002", 500)]:
        sig, got_fs, found = signals.read_wfdb(FIXTURES / rel)
        assert got_fs == fs and sig.shape == (12, 10 * fs) and sig.dtype == np.float32
        assert found == list(LEADS)  # 'AVR' (PTB-XL) and 'aVR' (CinC, '1000/mv') both understood
        raw = wfdb.rdrecord(str(FIXTURES / rel), physical=False)
        assert np.allclose(sig[LEADS.index("aVR")], (raw.d_signal[:, 3] - raw.baseline[3]) / raw.adc_gain[3],
                           atol=1e-6)
        img, meta = render.render_ecg(sig, got_fs, render.RenderParams(dpi=60), np.random.default_rng(0))
        check_round_trip(meta, sig, got_fs)


def test_wfdb_units_aliases_and_errors(tmp_path):
    sig = _write_record(tmp_path, "uv", 4, names=("MLII", "avf"), units="uV")
    out, fs, found = signals.read_wfdb(tmp_path / "uv.hea")
    assert found == ["II", "aVF"] and fs == 250
    assert np.allclose(out[LEADS.index("aVF")], sig[:, 1] / 1000, atol=1e-4)
    assert np.isnan(out[LEADS.index("V1")]).all()
    with pytest.raises(signals.WFDBError, match=r"uv\.hea.*4 s long.*needs 10 s"):
        signals.read_wfdb(tmp_path / "uv", min_seconds=10)

    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(signals.WFDBError, match=r"bad\.hea"):
        signals.read_wfdb(tmp_path / "bad")
    _write_record(tmp_path, "trunc", 4)
    data = (tmp_path / "trunc.dat").read_bytes()
    (tmp_path / "trunc.dat").write_bytes(data[:len(data) // 3])
    with pytest.raises(signals.WFDBError, match=r"trunc\.hea"):
        signals.read_wfdb(tmp_path / "trunc")
    _write_record(tmp_path, "odd", 4, names=("ECG1", "ECG2"))
    with pytest.raises(signals.WFDBError, match=r"odd\.hea.*no standard ECG lead"):
        signals.read_wfdb(tmp_path / "odd")
    with pytest.raises(signals.WFDBError, match=r"missing\.hea"):
        signals.read_wfdb(tmp_path / "missing")
