"""The signal route: ecgka_sig1d and its checkpoint contract, the signal model input, page views, signal sources and
datasets, and Stage I -> Stage II -> inference on signals (digitised records written through src.digitize's own
writer; the digitiser itself is stood in for, so these tests do not depend on its accuracy)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from src import infer, pretrain, train
from src.config import LABELS, LEADS
from src.data import (SIGNAL_FS, build_signal_dataset, join_signals, load_signal_source, page_mask, signal_input)
from src.digitize import Digitised, write_digitised
from src.engine import to_input
from src.model import (WeightsMismatchError, create_model, head_keys, init_from_checkpoint, is_signal_model,
                       norm_tensors)
from src.render import RenderParams
from src.synth import synth_record

COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))  # a 3x4 page


def test_sig1d_reads_nan_blanked_leads_and_keeps_the_checkpoint_contract():
    torch.manual_seed(0)
    m = create_model("ecgka_sig1d", 5, drop_rate=0.1).eval()
    assert is_signal_model(m) and head_keys(m) == {"fc.weight", "fc.bias"} and m.head_drop.p == 0.1
    x = torch.randn(3, 12, 1000)
    blank = x.clone()
    blank[:, 3:, 250:] = float("nan")  # what a 3x4 page does not show
    out = m(blank)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert torch.equal(out, m(torch.nan_to_num(blank)))  # a missing sample reads as 0 mV
    assert m(torch.randn(2, 12, 380)).shape == (2, 5)  # any length: global pooling
    # Stage I -> Stage II: backbone + head carried, rows reordered to the new label order
    src = create_model("ecgka_sig1d", 5)
    ck = {"model": src.state_dict(), "arch": "ecgka_sig1d", "labels": list(LABELS)}
    dst = create_model("ecgka_sig1d", 5)
    assert "rows reordered" in init_from_checkpoint(dst, ck, "ecgka_sig1d", LABELS[::-1])
    assert torch.equal(dst.fc.weight, src.fc.weight.flip(0))
    assert torch.equal(dst.features[0][0].weight, src.features[0][0].weight)
    with pytest.raises(WeightsMismatchError, match="ecgka_sig1d"):
        init_from_checkpoint(create_model("ecgka_tracenet", 5), ck, "ecgka_tracenet", LABELS)
    with pytest.raises(ValueError, match="no pretrained weights.*--init"):
        create_model("ecgka_sig1d", 5, pretrained="hub")
    # signals go in as mV; images are still scaled and normalised
    mean, std = norm_tensors(m, "cpu")
    assert mean.shape == (1, 1, 1) and float(mean) == 0 and float(std) == 1
    fed = to_input(blank, "cpu", mean, std)
    assert torch.equal(fed.isnan(), blank.isnan()) and torch.equal(fed.nan_to_num(), blank.nan_to_num())
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    im_mean, im_std = norm_tensors(create_model("ecgka_tracenet", 5), "cpu")
    assert torch.allclose(to_input(img, "cpu", im_mean, im_std), (1 - im_mean) / im_std)


def test_route_and_arch_must_agree(capsys):
    with pytest.raises(SystemExit, match="--route=signal with --arch=convnext_atto"):
        pretrain.main(["--route=signal", "--arch=convnext_atto", "--sources=synth:10"])
    with pytest.raises(SystemExit, match="--route=image with --arch=ecgka_sig1d"):
        train.main(["--arch=ecgka_sig1d", "--cache=x", "--train_csv=x", "--folds_csv=x"])


def test_signal_input_resamples_crops_and_centres():
    t = np.arange(6000) / 500.0  # 12 s at 500 Hz
    sig = np.tile(2.0 + np.sin(2 * np.pi * t), (12, 1)).astype(np.float32)
    sig[4, 1000:1010] = np.nan  # 20 ms unread
    sig[5] = 40.0 * np.sin(2 * np.pi * t)  # beyond any ECG: clipped
    x = signal_input(sig, 500.0)
    assert x.shape == (12, 1000) and x.dtype == np.float32
    area = (2.0 + np.sin(2 * np.pi * t[:5000])).reshape(1000, 5).mean(1)  # 5 samples per output, the first 10 s
    assert np.allclose(x[0], area - np.median(area), atol=1e-4)  # the median taken out
    assert np.isnan(x[4]).sum() == 2 and np.isnan(x[4, 200:202]).all()  # NaN spreads only where it was
    assert np.nanmax(np.abs(x[5])) == 5.0
    short = signal_input(sig[:, :2500], 500.0)  # 5 s: the rest is not there
    assert np.isfinite(short[:4, :500]).all() and np.isnan(short[:, 500:]).all()
    assert np.allclose(signal_input(x, SIGNAL_FS), x, equal_nan=True)  # already a model input: unchanged
    with pytest.raises(ValueError, match=r"\[12, n\]"):
        signal_input(sig[:6], 500.0)


def test_page_mask_shows_what_the_renderer_draws():
    m = page_mask(RenderParams(layout="3x4", rhythm=("II",)), 1000, 100.0)
    for c, leads in enumerate(COLUMNS):
        for lead in leads:
            want = np.zeros(1000, bool)
            want[c * 250:(c + 1) * 250] = True
            assert np.array_equal(m[LEADS.index(lead)], want | (lead == "II")), lead  # II: the rhythm strip
    assert page_mask(RenderParams(layout="12x1"), 1000, 100.0).all()
    strips = page_mask(RenderParams(layout="2x1", strip_leads=("II", "V1")), 1000, 100.0)
    assert [LEADS[i] for i in np.flatnonzero(strips.any(1))] == ["II", "V1"] and strips[[1, 6]].all()
    fast = page_mask(RenderParams(layout="6x2", speed=50.0, paper="a4"), 1000, 100.0)  # 5 s fit an A4 page at 50 mm/s
    assert not fast[:, 500:].any() and fast[:6, :250].all() and fast[6:, 250:500].all() and fast.sum() == 12 * 250


def test_signal_dataset_shows_page_views_seeded_per_sample():
    sig = np.random.default_rng(0).normal(size=(6, 12, 1000)).astype(np.float16)
    y = np.eye(6, 5, dtype=np.float32)
    ds = build_signal_dataset(sig, y, train=True, seed=3, blank=True)
    assert ds.size == (12, 1000) and ds.views.shape[1:] == (12, 1000)
    assert len({v.tobytes() for v in ds.views}) > 5  # several layouts, rhythm strips, speeds
    x, t, i = ds.at_epoch(2)[4]
    assert x.dtype == torch.float32 and torch.equal(t, torch.from_numpy(y[4])) and i == 4
    shown = ~torch.isnan(x)
    assert any(np.array_equal(shown.numpy(), v) for v in ds.views)  # one page's view
    ratio = (x[shown] / torch.from_numpy(sig[4].astype(np.float32))[shown]).numpy()
    assert np.allclose(ratio, ratio[0], atol=1e-3) and 0.5 < ratio[0] < 1.5  # one gain for the whole record
    assert torch.equal(torch.nan_to_num(ds.at_epoch(2)[4][0]), torch.nan_to_num(x))  # (seed, epoch, index) decides
    views = [torch.isnan(ds.at_epoch(e)[4][0]).numpy().tobytes() for e in range(12)]
    assert len(set(views)) > 1  # a new page per epoch in training
    ev = build_signal_dataset(sig, y, train=False, seed=3, blank=True)
    assert torch.equal(torch.nan_to_num(ev.at_epoch(0)[1][0]), torch.nan_to_num(ev.at_epoch(5)[1][0]))  # fixed
    plain = build_signal_dataset(sig, y, train=False)[2][0]
    assert torch.equal(plain, torch.from_numpy(sig[2].astype(np.float32)))  # digitised records: as they are


def test_signal_sources_synth_and_a_wfdb_set_agree(tmp_path, capsys):
    from src import synth
    table, x = load_signal_source("synth:5", seed=4, workers=1)
    again = load_signal_source("synth:5", seed=4, workers=1)[1]
    assert x.shape == (5, 12, 1000) and x.dtype == np.float16 and np.array_equal(x, again)
    sig, meta = synth_record(4, 3)
    assert np.array_equal(x[3], signal_input(sig, meta["fs"]).astype(np.float16))
    assert table.loc[3, list(LABELS)].tolist() == [float(meta["labels"][k]) for k in LABELS]
    # the same records written as a WFDB set by src.synth (1 uV steps), one of them broken
    synth.main([f"--out={tmp_path / 'set'}", "--n=5", "--seed=4", "--workers=1"])
    (tmp_path / "set" / "rec_000002.dat").write_bytes(b"")
    t2, x2 = load_signal_source(str(tmp_path / "set"), seed=0, workers=1)
    assert "1 of 5 records unreadable" in capsys.readouterr().err
    assert list(t2["id"]) == ["rec_000000", "rec_000001", "rec_000003", "rec_000004"]
    assert np.allclose(x2.astype(float), x[[0, 1, 3, 4]].astype(float), atol=2e-3)
    assert t2[list(LABELS)].to_numpy().tolist() == table.loc[[0, 1, 3, 4], list(LABELS)].to_numpy().tolist()
    with pytest.raises(SystemExit, match="synth:N"):
        load_signal_source("synth:many", seed=0)


def _digitised(sig: np.ndarray, fs: float) -> Digitised:
    return Digitised(sig.astype(np.float32), fs, np.ones(12, np.float32), "3x4", [])


def test_join_signals_drops_and_counts_photos_without_a_reading(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sigs = rng.normal(size=(3, 12, 500)).astype(np.float32)
    sigs[1] = np.nan  # the digitiser found no lead
    for i, s in enumerate(sigs):
        write_digitised(tmp_path, f"p{i}", _digitised(s, 50.0))
    table = pd.DataFrame({"id": ["p0", "p1", "p2", "p3"], "MI": [1.0, 0, 1, 0]})
    df, x = join_signals(table, tmp_path, what="photos")
    err = capsys.readouterr().err
    assert "1 labelled ids have no digitised record" in err and "1 records hold no usable reading" in err
    assert list(df["id"]) == ["p0", "p2"] and x.shape == (2, 12, 1000)
    assert np.allclose(x[1].astype(float), signal_input(sigs[2], 50.0), atol=5e-3, equal_nan=True)
    with pytest.raises(ValueError, match="no labelled digitised records"):
        join_signals(table.iloc[[1, 3]], tmp_path)


@pytest.fixture
def kaggle_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    return tmp_path / "kaggle" / "working" / "outputs"


def test_signal_route_stage1_stage2_infer(tmp_path, kaggle_root, monkeypatch, capsys):
    """A competition of 30 training and 8 test 'photos' whose digitised records are synthetic pages (3x4 views of
    src.synth records); Stage I on synthetic signals, Stage II over 3 folds, inference with the digitiser stood in
    for (each test image carries its record's index in its first pixel)."""
    from src.utils import imwrite
    comp, dig = tmp_path / "comp", tmp_path / "dig"
    (comp / "test").mkdir(parents=True)
    view = page_mask(RenderParams(layout="3x4", rhythm=("II",)), 1000, 100.0)
    rows, test_sig = [], {}
    for i in range(38):
        sig, meta = synth_record(11, i)
        page = np.where(view, signal_input(sig, meta["fs"]), np.nan)
        rid = f"id{i:03d}"
        if i < 30:
            write_digitised(dig, rid, _digitised(page, 100.0))
            rows.append({"id": rid, **meta["labels"], "patient_id": f"p{i}"})
        else:
            test_sig[i - 30] = page if i != 37 else np.full_like(page, np.nan)  # the last one: nothing read
            img = np.full((8, 8, 3), 255, np.uint8)
            img[0, 0, 0] = i - 30
            imwrite(comp / "test" / f"{rid}.png", img)
    pd.DataFrame(rows).to_csv(comp / "train.csv", index=False)
    test_ids = [f"id{i:03d}" for i in range(30, 38)]
    pd.DataFrame({"id": test_ids, **{k: 0.5 for k in LABELS}}).to_csv(comp / "sample_submission.csv", index=False)
    pd.DataFrame({"id": [r["id"] for r in rows], "fold": [i % 3 for i in range(30)]}).to_csv(tmp_path / "folds.csv",
                                                                                            index=False)
    fast = ["--recipe=signal", "--epochs=1", "--batch_size=8", "--workers=0", "--threads=1"]
    s1 = pretrain.main([*fast, "--sources=synth:60", "--name=s1"])
    assert s1["finished"] and json.loads((Path(s1["out"]) / "data.json").read_text())["caches"] == ["synth:60"]
    s2 = train.main([*fast, f"--cache={dig}", f"--train_csv={comp / 'train.csv'}",
                     f"--folds_csv={tmp_path / 'folds.csv'}", f"--init={s1['out']}/best.pt", "--name=s2"])
    run = Path(s2["out"])
    assert sorted(s2["folds"]) == [0, 1, 2] and not (run / "preprocess.yaml").exists()
    ck = torch.load(run / "fold0" / "best.pt", weights_only=False)
    assert ck["arch"] == "ecgka_sig1d" and ck["input"]["route"] == "signal" and ck["input"]["size"] == [12, 1000]

    import src.digitize
    monkeypatch.setattr(src.digitize, "digitize_image", lambda img: _digitised(test_sig[int(img[0, 0, 0])], 100.0))
    with pytest.raises(SystemExit, match="none of the --run folders is a image run"):
        infer.main([f"--run={run}", "--route=image", "--workers=0"])
    out = tmp_path / "sub.csv"
    res = infer.main([f"--run={run}", "--route=signal", "--workers=0", f"--out={out}", "--threads=1"])
    sub = pd.read_csv(out, dtype={"id": str})
    assert list(sub.columns) == ["id", *LABELS] and list(sub["id"]) == test_ids
    info = res["info"]
    assert info["routes"] == ["signal"] * 3 and info["folds"] == [0, 1, 2] and info["not_digitised"] == 1
    assert info["arch"] == "ecgka_sig1d" and info["unreadable"] == []
    per = pd.read_csv(tmp_path / "sub_folds.csv", dtype={"id": str})
    assert set(per.loc[per["id"] == "id037", "status"]) == {"not_digitised"}
    prev = np.array(info["prevalence"])
    expect = infer.vote_with_fallback(np.full((3, 1, 5), 0.0), np.ones((3, 1), bool), prev, info["vote"],
                                      np.array([info["thresholds"][f"signal{k}"] for k in range(3)]))
    assert np.allclose(sub.loc[7, list(LABELS)].to_numpy(float), expect[0])  # scored as the training prevalence
