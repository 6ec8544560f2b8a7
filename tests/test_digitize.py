"""src.digitize: the kit's own pages read back (SNR, layouts, blank leads), WFDB round trip, the command line."""
import numpy as np
import pytest

from bench.digitize import drawn_truth
from src import digitize, render, score, synth
from src.config import LEADS
from src.utils import imwrite


@pytest.fixture(scope="module")
def record():
    sig, meta = synth.synthesize(synth.record_rng(0, 3))
    return sig, meta["fs"]


def _page(record, layout, **kw):
    sig, fs = record
    return render.render_ecg(sig, fs, render.RenderParams(layout=layout, dpi=100, **kw), np.random.default_rng(0))


@pytest.mark.parametrize("layout", ["3x4", "6x2"])
def test_reads_the_kits_scan_back(record, layout):
    img, meta = _page(record, layout)
    d = digitize.digitize_image(img)
    assert d.layout == layout and d.signal.shape == (12, 1000) and d.signal.dtype == np.float32 and d.fs == 100.0
    snr = score.snr_db(drawn_truth(*record, meta, 100.0, 10.0), d.signal, 100.0)
    assert np.nanmean(snr) > 8.0  # measured 11.6 (3x4) and 12.0 (6x2) dB at 100 dpi
    assert snr[LEADS.index("V1")] > 8.0
    assert (d.confidence > 0.5).all()
    if layout == "3x4":  # a lead's 2.5 s column only: the rest is not on the page
        v1 = d.signal[LEADS.index("V1")]
        assert np.isnan(v1[:490]).all() and np.isfinite(v1[510:740]).mean() > 0.95  # column 3: 5-7.5 s


def test_blank_lead_is_nan_and_said(record):
    sig, fs = record
    sig = sig.copy()
    sig[LEADS.index("V2")] = np.nan
    img, _ = render.render_ecg(sig, fs, render.RenderParams(layout="3x4", dpi=100), np.random.default_rng(0))
    d = digitize.digitize_image(img)
    j = LEADS.index("V2")
    assert d.layout == "3x4" and np.isnan(d.signal[j]).all() and d.confidence[j] == 0
    assert any("V2" in p for p in d.problems)
    assert (np.delete(d.confidence, j) > 0.5).all()


def test_layout_detection_12x1(record):
    img, _ = _page(record, "12x1", gain=5.0)
    assert digitize.digitize_image(img).layout == "12x1"


def test_wfdb_round_trip_keeps_nan_and_confidence(tmp_path):
    sig = np.linspace(-1, 1, 12 * 50, dtype=np.float32).reshape(12, 50)
    sig[3] = np.nan
    sig[5, 10:20] = np.nan
    conf = np.linspace(0, 1, 12).astype(np.float32)
    d = digitize.Digitised(sig, 100.0, conf, "3x4", ["a note"])
    digitize.write_digitised(tmp_path, "r1", d)
    back, fs = digitize.read_digitised(tmp_path, "r1")
    assert fs == 100.0 and back.shape == (12, 50)
    assert np.array_equal(np.isnan(back), np.isnan(sig))
    assert np.allclose(back[np.isfinite(sig)], sig[np.isfinite(sig)], atol=1e-3)
    assert np.allclose(digitize.read_confidence(tmp_path, "r1"), conf, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.dat", "r1.hea"]


def test_cli_skips_a_broken_image_and_resumes(tmp_path, record, capsys):
    import pandas as pd
    img, _ = _page(record, "6x2")
    src = tmp_path / "imgs"
    imwrite(src / "good.png", img)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    digitize.main([f"--images={src}", f"--out={out}", "--workers=1"])
    df = pd.read_csv(out / "digitised.csv")
    assert set(df["id"]) == {"good", "bad"}
    assert df.set_index("id").loc["bad", "status"] == "error" and "bad.png" in df.set_index("id").loc["bad", "problems"]
    assert (out / "good.hea").exists() and not (out / "bad.hea").exists()
    digitize.main([f"--images={src}", f"--out={out}", "--workers=1"])
    assert "1 already done" in capsys.readouterr().out
    assert set(pd.read_csv(out / "digitised.csv")["id"]) == {"good", "bad"}


def test_cli_bad_path_names_it(tmp_path):
    with pytest.raises(SystemExit, match="nowhere"):
        digitize.main([f"--images={tmp_path / 'nowhere'}", f"--out={tmp_path / 'o'}"])


def test_learned_path_trains_saves_and_reads(tmp_path, record):
    net = tmp_path / "net.pt"
    digitize.main([f"--net={net}", "--fit", "--fit_pages=2", "--fit_steps=2"])
    assert net.exists()
    img, _ = _page(record, "6x2")
    d = digitize.digitize_image(img, method="learned", net=str(net))
    assert d.layout == "6x2" and d.signal.shape == (12, 1000) and d.confidence.shape == (12,)
    with pytest.raises(FileNotFoundError, match="--fit"):
        digitize.digitize_image(img, method="learned", net=str(tmp_path / "missing.pt"))
    with pytest.raises(SystemExit, match="--fit"):
        digitize.main([f"--images={tmp_path}", "--method=learned", f"--net={tmp_path / 'missing.pt'}"])
