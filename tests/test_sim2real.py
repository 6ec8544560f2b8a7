"""bench/sim2real.py: bootstrap CIs, windows, the independent measurements, and a toy-size end-to-end run on a fake
'real' folder (synthetic records written as WFDB with a labels.csv in the dev set's layout)."""
import json

import numpy as np
import pytest

from bench import sim2real as S2R
from src import signals, synth
from src.config import LABELS

pytest.importorskip("neurokit2")


def test_boot_auroc_known_answers():
    y = np.array([[0], [0], [0], [1], [1], [1]] * 3, float)
    perfect = S2R.boot_auroc(y, y.copy(), 200, 0, ["X"])
    assert perfect["X"]["auroc"] == perfect["X"]["lo"] == perfect["X"]["hi"] == 1.0
    rng = np.random.default_rng(0)
    p = rng.random(y.shape)
    r = S2R.boot_auroc(y, p, 300, 0, ["X"])
    assert r["X"]["lo"] <= r["X"]["auroc"] <= r["X"]["hi"] and r["X"]["n_pos"] == 9
    d = S2R.boot_macro_diff(y, y.copy(), p, 200, 0)
    assert d["diff"] == pytest.approx(1.0 - r["X"]["auroc"]) and d["lo"] <= d["diff"] <= d["hi"]


def test_model_input_windows_and_padding():
    x = np.zeros((12, 25 * 500), np.float32)
    assert S2R.model_input(x, 0.5).shape == (2, 12, 1000)  # 25 s -> two whole 10 s windows
    assert S2R.model_input(x[:, :4000], 0.5).shape == (1, 12, 1000)  # 8 s -> padded to one window


def test_measure_reads_rate_regularity_and_axis():
    sig, meta = synth.synthesize(np.random.default_rng(3), labels=["NORM"], hr=75, noise=0.0, extras=())
    f = S2R.measure(sig)
    assert abs(f["hr"] - meta["hr"]) < 3 and f["rr_cv"] < 0.08
    assert abs(f["axis_deg"] - meta["axis_deg"]) < 30
    assert f["rr_irr"] < 0.03 and f["T_II"] > 0.05 and f["T_aVR"] < -0.05  # regular; upright T in II, inverted in aVR
    af, _ = synth.synthesize(np.random.default_rng(3), labels=["AFIB"], noise=0.0, extras=())
    assert S2R.measure(af)["rr_cv"] > 0.1 and S2R.measure(af)["rr_irr"] > 0.05


def test_noise_bank_keeps_regular_records_and_removes_the_beats(tmp_path):
    clean, _ = synth.synthesize(np.random.default_rng(1), labels=["NORM"], hr=70, noise=0.0, extras=())
    af, _ = synth.synthesize(np.random.default_rng(1), labels=["AFIB"], noise=0.0, extras=())
    signals.write_wfdb(tmp_path, "clean", clean, 500)
    signals.write_wfdb(tmp_path, "af", af, 500)
    bank = S2R.noise_bank(str(tmp_path))
    assert len(bank) == 1 and bank[0].shape == (12, 5000)  # the irregular (AF) record is left out
    assert np.sqrt((bank[0] ** 2).mean()) < 0.2 * np.sqrt((clean ** 2).mean())  # the beats are gone
    with pytest.raises(SystemExit, match="no 500 Hz"):
        S2R.noise_bank(str(tmp_path / "none"))


def test_knowledge_classifier_learns_a_rule_and_keeps_constant_labels():
    rng = np.random.default_rng(0)
    feats = [{"rr_cv": float(v), "hr": float(h), "bw_uv": float(b)} for v, h, b in rng.random((300, 3))]
    y = np.zeros((300, 2), np.float32)
    y[:, 0] = [d["rr_cv"] > 0.5 for d in feats]  # label 0 follows rr_cv; label 1 is never positive
    keys, models = S2R.knowledge_fit(feats, y, 0)
    assert "bw_uv" not in keys and isinstance(models[1], float)
    test = [{"rr_cv": v, "hr": 0.5, "bw_uv": 0.0} for v in (0.1, 0.3, 0.7, 0.9)]
    p = S2R.knowledge_predict((keys, models), test)
    assert p.shape == (4, 2) and p[:2, 0].max() < 0.2 < 0.8 < p[2:, 0].min() and (p[:, 1] == 0).all()


def test_randomise_batch_keeps_shape_and_varies_gain():
    import torch
    g = torch.Generator().manual_seed(0)
    x = torch.ones(64, 12, 100)
    out = S2R.randomise_batch(x, g)
    assert out.shape == x.shape and out.mean().item() == pytest.approx(1.0, abs=0.15)
    lead_means = out.mean(2)
    assert (lead_means == 0).float().mean().item() == pytest.approx(0.05, abs=0.03)  # a flat lead now and then
    assert lead_means[lead_means > 0].std().item() > 0.1  # gains differ between samples and leads


def test_verdicts_follow_the_numbers():
    assert "reaches" in S2R.verdict_zero_shot({"auroc": 0.85, "lo": 0.81, "hi": 0.9})
    assert "below" in S2R.verdict_zero_shot({"auroc": 0.6, "lo": 0.5, "hi": 0.7})
    assert "helps" in S2R.verdict_pretrain({"diff": 0.1, "lo": 0.02, "hi": 0.2})
    assert "not resolved" in S2R.verdict_pretrain({"diff": 0.1, "lo": -0.02, "hi": 0.2})


def test_toy_run_writes_report(tmp_path):
    import pandas as pd
    root = tmp_path / "real"
    rows = []
    for i in range(12):
        labels = [["NORM"], ["IMI_old"], ["AFIB"], ["LVH"], ["CRBBB"], ["TINV"]][i % 6]
        sig, meta = synth.synthesize(np.random.default_rng([9, i]), labels=labels, seconds=12.0 if i % 4 else 10.0)
        signals.write_wfdb(root / "records" / "toy", f"T{i:03d}", sig, 500)
        rows.append({"source": "toy", "record": f"toy/T{i:03d}", "fs": 500, "n_samples": sig.shape[1],
                     **meta["labels"], "NORM": int(labels == ["NORM"]), "raw_labels": ""})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "rep"
    res = S2R.main([f"--real={root}", "--n_train=64", "--epochs=1", "--n_stats=12", "--folds=2", "--ft_seeds=1",
                    "--ft_epochs=1", "--boot=20", "--workers=1", "--threads=1", "--seeds=1", "--knowledge=0.5", "--n_know=16",
                    "--augment=true", f"--out={out}"])
    md = next(out.glob("sim2real_*.md")).read_text()
    assert "## 1. Signal route, zero-shot" in md and "discriminator" in md and "Verdict" in md
    assert "| knowledge | half B |" in md and "randomise_batch" in md
    assert len(list(out.glob("sim2real_*.png"))) == 2
    js = json.loads(next(out.glob("sim2real_*.json")).read_text())
    assert js["n_real"] == 12 and set(js["zero_shot"]["by_subset"]) == {"all", "half A", "half B"}
    m = res["zero_shot"]["by_subset"]["all"]["macro"]
    assert 0 <= m["lo"] <= m["hi"] <= 1 and set(res["pretrain"]) >= {"random_init", "synthetic_pretrained", "diff"}
    assert 0 <= res["realism"]["discriminator_auroc"] <= 1
    # an earlier run's JSON as --before adds the which-gaps-closed table
    res.update(date=js["date"], tuning_note="", before=S2R.before_summary(next(out.glob("sim2real_*.json"))))
    assert "Which gaps closed" in S2R.render_report(res, ["a.png", "b.png"])
    # a run against itself as a variant: paired difference 0, one recipe with two runs
    js_path = next(out.glob("sim2real_*.json"))
    res.update(recipe="toy", variants=[S2R.variant_summary("toy", js_path, res)])
    assert res["variants"][0]["diff"]["diff"] == 0.0
    assert "| toy | 2 |" in S2R.render_report(res, ["a.png", "b.png"])


def test_image_route_scores_real_records_with_a_stage2_run(tmp_path, monkeypatch):
    """Section 2 end to end: a tiny 2-fold image run scores 4 real records drawn as scans and photos, through
    src.infer's own functions; a rerun gives the same numbers."""
    import pandas as pd
    from src import train
    from src.config import REPO
    from tests.fake_cache import make_cache, make_folds
    real = REPO.parent / "shared" / "real"
    if not (real / "labels.csv").is_file():
        pytest.skip(f"{real} (the shared real dev set) is not here")
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    cache, labels_csv = make_cache(tmp_path / "cache", 12)
    run = train.main([f"--cache={cache}", f"--train_csv={labels_csv}", "--fold=all", "--name=s2",
                      f"--folds_csv={make_folds(labels_csv, tmp_path / 'folds.csv', 2)}", "--arch=convnext_atto",
                      "--epochs=1", "--batch_size=4", "--workers=0", "--threads=1", "--warmup_epochs=0.5"])["out"]
    sub = tmp_path / "real"
    sub.mkdir()
    (sub / "records").symlink_to(real / "records")
    pd.read_csv(real / "labels.csv").iloc[:4].to_csv(sub / "labels.csv", index=False)
    args = ["--image_only=true", f"--run={run}", f"--real={sub}", "--scan_hw=110,142", "--photo_hw=120,208",
            "--image_n=1", "--boot=20", "--workers=1", "--threads=1"]
    res = S2R.main([*args, f"--out={tmp_path / 'a'}"])
    ir = res["image_route"]
    assert ir["routes"] == ["image"] and ir["folds"] == ["0", "1"] and ir["preprocess"] == "raw 32x64"
    assert set(ir["styles"]) == {"scan", "photo"} and ir["synthetic"]["oof_macro"][run] is not None
    for style, r in ir["styles"].items():
        p = np.array(r["real_pred"])
        assert p.shape == (4, len(LABELS)) and np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1
        assert set(r["by_subset"]) == {"all", "half A", "half B"} and r["n_pages"] == 4 and r["unreadable"] == 0
        assert set(r["by_subset"]["all"]) == {*LABELS, "macro"}
    md = (tmp_path / "a" / f"sim2real_image_{res['date']}.md").read_text()
    assert "## 2. Image route, zero-shot" in md and "| photo (120x208) | half A |" in md
    assert not list((tmp_path / "a").glob(".sim2real_pages.*"))  # the drawn pages are removed
    again = S2R.main([*args, f"--out={tmp_path / 'b'}"])["image_route"]
    for style in ir["styles"]:
        assert again["styles"][style]["real_pred"] == ir["styles"][style]["real_pred"]
    assert "Not measured: pass `--run=" in "\n".join(S2R.image_route_lines(None))
