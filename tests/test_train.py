"""Stage I and Stage II end to end on tiny fake caches: run folders, OOF + thresholds, skip/resume, DDP on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src import pretrain, train
from src.config import REPO
from src.data import CacheDataset, ShardedSampler, make_loader, read_cache
from src.engine import Runtime, evaluate
from src.model import create_model, load_checkpoint, norm_tensors
from tests.fake_cache import make_cache, make_folds

TINY = ["--arch=convnext_atto", "--batch_size=4", "--workers=0", "--threads=1", "--warmup_epochs=0.5"]


@pytest.fixture
def kaggle_root(tmp_path, monkeypatch):
    """Outputs go under tmp_path (a simulated Kaggle working dir) instead of the repo's outputs/."""
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    return tmp_path / "kaggle" / "working" / "outputs"


def _comp(tmp_path, n=15, n_folds=3):
    cache, labels_csv = make_cache(tmp_path / "comp-cache", n, skipped=1)
    return cache, labels_csv, make_folds(labels_csv, tmp_path / "folds.csv", n_folds)


def test_help_lists_every_option(capsys):
    for mod, must in ((train, ["--init", "--fold", "--cache", "--ema_decay", "--session_epochs"]),
                      (pretrain, ["--sources", "--source_weights", "--val_frac", "--amp", "--grad_checkpointing=False",
                                  "--batch_fit=True", "--pretrained="])):
        with pytest.raises(SystemExit) as e:
            mod.main(["--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert all(m in text for m in must)


def test_pretrain_then_train_all_folds(tmp_path, kaggle_root, capsys):
    a, a_labels = make_cache(tmp_path / "a", 20, labels=("MI", "AF", "HYP"), prefix="a")
    (tmp_path / "a-data").mkdir()  # labels beside the source images, found through preprocess.yaml's src
    a_labels.rename(tmp_path / "a-data" / "labels.csv")
    (a / "preprocess.yaml").write_text(f"src: {tmp_path / 'a-data'}\nstrategy: raw\n")
    b, b_labels = make_cache(tmp_path / "b", 12, labels=("CD", "STTC", "NORM"), prefix="b", seed=1)
    res = pretrain.main([f"--sources={a},{b}:{b_labels}", "--source_weights=0.5,0.5", "--epoch_size=16",
                         "--val_frac=0.25", "--epochs=2", "--name=s1", "--grad_checkpointing", *TINY])
    s1 = Path(res["out"])
    assert s1 == kaggle_root / "pretrain" / "s1" and res["finished"]
    for f in ("config.yaml", "git.txt", "data.json", "log.csv", "log.jsonl", "learning_curve.png", "best.pt",
              "last.pt", "oof.csv", "done.json", "batch_fit.json"):
        assert (s1 / f).is_file(), f
    assert yaml.safe_load((s1 / "config.yaml").read_text())["grad_checkpointing"] is True
    fitted = json.loads((s1 / "batch_fit.json").read_text())
    assert not fitted["probed"] and (fitted["micro_batch"], fitted["accum_steps"], fitted["size"]) == (4, 1, [32, 64])
    best = load_checkpoint(s1 / "best.pt")
    assert best["labels"] == ["MI", "AF", "HYP", "CD", "STTC", "NORM"] and best["arch"] == "convnext_atto"
    assert best["optimizer"] is None and best["input"]["size"] == [32, 64]
    assert len(pd.read_csv(s1 / "log.csv")) == 2
    assert pretrain.main([f"--sources={a},{b}:{b_labels}", "--name=s1", *TINY])["skipped"]

    cache, labels_csv, folds_csv = _comp(tmp_path)
    args = [f"--cache={cache}", f"--train_csv={labels_csv}", f"--folds_csv={folds_csv}", "--fold=all",
            f"--init={s1 / 'best.pt'}", "--epochs=2", "--name=s2", *TINY]
    capsys.readouterr()
    r = train.main(args + ["--pretrained=hub"])  # --init wins: the hub (offline here) is not even asked
    run = Path(r["out"])
    text = capsys.readouterr().out
    assert "new head for" in text and "OOF macro-AUROC" in text and "--pretrained=hub not loaded" in text
    folds = pd.read_csv(folds_csv, dtype={"id": str})
    usable = set(read_cache(cache)["id"])
    for k in range(3):
        d = run / f"fold{k}"
        for f in ("config.yaml", "git.txt", "log.csv", "log.jsonl", "learning_curve.png", "best.pt", "last.pt",
                  "oof.csv", "thresholds.json", "done.json"):
            assert (d / f).is_file(), (k, f)
        thr = json.loads((d / "thresholds.json").read_text())
        assert set(thr["thresholds"]) == {"MI", "AF", "HYP", "CD", "STTC"} and thr["method"] == "f1"
        assert all(0 <= t <= 1 for t in thr["thresholds"].values())
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(usable) and oof["id"].is_unique
    assert (oof.set_index("id")["fold"] == folds.set_index("id").loc[oof["id"], "fold"]).all()
    preds = oof[[f"pred_{lb}" for lb in ("MI", "AF", "HYP", "CD", "STTC")]].to_numpy()
    assert ((preds >= 0) & (preds <= 1)).all()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["cache"] == str(cache)  # infer finds the preprocessing through it, or through the copy:
    assert yaml.safe_load((run / "preprocess.yaml").read_text()) == yaml.safe_load((cache / "preprocess.yaml").read_text())
    assert json.loads((run / "oof_metrics.json").read_text())["n"] == len(usable)

    train.main(args)  # everything finished: every fold is skipped, the OOF summary is printed again
    text = capsys.readouterr().out
    assert text.count("finished earlier, skipped") == 3 and "OOF macro-AUROC" in text


def test_missing_init_checkpoint_is_named_before_the_run_folder_exists(tmp_path, kaggle_root):
    cache, labels_csv, folds_csv = _comp(tmp_path, n=6, n_folds=2)
    missing = tmp_path / "stage1" / "best.pt"
    with pytest.raises(SystemExit, match=f"checkpoint not found: {missing}"):
        train.main([f"--cache={cache}", f"--train_csv={labels_csv}", f"--folds_csv={folds_csv}", f"--init={missing}",
                    "--name=noinit", *TINY])
    assert not (kaggle_root / "train" / "noinit").exists()


def test_hub_weights_offline_stop_stage1_before_anything_is_written(tmp_path, kaggle_root):
    cache, labels_csv = make_cache(tmp_path / "c", 8)
    with pytest.raises(SystemExit, match=r"^\[pretrain\] .*HF_HUB_OFFLINE=0"):
        pretrain.main([f"--sources={cache}:{labels_csv}", "--pretrained=hub", "--name=hub", *TINY])
    assert not (kaggle_root / "pretrain" / "hub").exists()


def test_resume_after_a_stopped_session_equals_uninterrupted(tmp_path, kaggle_root):
    cache, labels_csv, folds_csv = _comp(tmp_path, n=12, n_folds=2)
    base = [f"--cache={cache}", f"--train_csv={labels_csv}", f"--folds_csv={folds_csv}", "--fold=0", "--epochs=3",
            "--ema_decay=0.9", "--aug=medium", "--accum_steps=2", "--drop_path_rate=0.1", *TINY, "--workers=2"]
    train.main(base + ["--name=full"])
    train.main(base + ["--name=cut", "--session_epochs=1"])
    cut = kaggle_root / "train" / "cut" / "fold0"
    assert load_checkpoint(cut / "last.pt")["epoch"] == 1 and not (cut / "done.json").exists()
    with pytest.raises(SystemExit, match="--resume"):
        train.main(base + ["--name=cut"])
    train.main(base + ["--name=cut", "--resume"])
    a = load_checkpoint(kaggle_root / "train" / "full" / "fold0" / "last.pt")
    b = load_checkpoint(cut / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert a["scheduler"] == b["scheduler"]
    strip = lambda h: [{k: v for k, v in r.items() if "per_s" not in k and k != "epoch_s"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert len(pd.read_csv(cut / "log.csv")) == 3  # the log was rebuilt, not appended twice


def test_ddp_two_cpu_processes_validate_each_image_once(tmp_path):
    cache, labels_csv, folds_csv = _comp(tmp_path, n=27, n_folds=2)  # fold 1: 13 images (odd, 2 ranks)
    env = {**os.environ, "ECGKA_KAGGLE_ROOT": str(tmp_path / "kaggle"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "src.train",
           f"--cache={cache}", f"--train_csv={labels_csv}", f"--folds_csv={folds_csv}", "--fold=1", "--epochs=2",
           "--name=ddp", *TINY]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("epoch 1/2 train_loss") == 1  # only rank 0 reports
    assert "2 rank(s)" in p.stdout and "micro-batch 2 x accum 1 x ranks 2 = 4" in p.stdout
    fold = tmp_path / "kaggle" / "working" / "outputs" / "train" / "ddp" / "fold1"
    log = [json.loads(line) for line in (fold / "log.jsonl").read_text().splitlines()]
    assert [r["val_n"] for r in log] == [13, 13]
    oof = pd.read_csv(fold / "oof.csv", dtype={"id": str})
    folds = pd.read_csv(folds_csv, dtype={"id": str})
    usable = set(read_cache(cache)["id"])  # the preprocess-skipped id of fold 1 is not validated on
    assert sorted(oof["id"]) == sorted(set(folds.loc[folds["fold"] == 1, "id"]) & usable) and len(oof) == 13

    # the gathered metric equals a plain single-process evaluation of the saved best model
    ck = load_checkpoint(fold / "best.pt")
    model = create_model(ck["arch"], len(ck["labels"]))
    model.load_state_dict(ck["model"])
    labels = ck["labels"]
    ds = CacheDataset([str(cache / "images" / f"{i}.png") for i in oof["id"]], oof[labels].to_numpy(np.float32))
    rt = Runtime(torch.device("cpu"), 0, 1, None, False)
    va = evaluate(model, make_loader(ds, ShardedSampler(len(ds), False, pad=False), 4, 0, False), ds.targets, labels,
                  rt, norm_tensors(model, "cpu"))
    best = max(log, key=lambda r: r["val_macro_auroc"])
    assert va["n"] == 13 and va["macro_auroc"] == pytest.approx(best["val_macro_auroc"], abs=1e-6)
    assert np.allclose(va["probs"], oof[[f"pred_{lb}" for lb in labels]].to_numpy(), atol=1e-5)
