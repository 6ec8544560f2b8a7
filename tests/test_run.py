"""The run folder (src.run): layout round trips, fold discovery and selection, the fold model rebuilt from its
checkpoint; the one AMP rule; the engine contract (datasets built with their transforms, fit changes nothing it is
given); Stage II labels read from train.csv alone."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from src.config import LABELS
from src.data import build_dataset, read_cache, read_competition_table
from src.engine import FitConfig, amp_dtype, fit, loader_workers, setup_runtime
from src.model import create_model
from src.run import (FoldModel, RunFolder, gather_folds, input_record, load_fold_models, select_folds)
from src.utils import torch_save
from tests.fake_cache import make_cache


def _checkpoint(path, labels=LABELS, seed=0, input_key="caches", cache="some/cache"):
    torch.manual_seed(seed)
    m = create_model("ecgka_tracenet", len(labels), drop_rate=0.0).eval()
    info = input_record((32, 64), m, [cache])
    if input_key == "cache":  # as Stage II wrote it before src.run
        info["cache"] = info.pop("caches")[0]
    torch_save({"model": m.state_dict(), "arch": "ecgka_tracenet", "labels": list(labels), "config": {},
                "epoch": 1, "input": info}, path)
    return m


def test_layout_round_trips(tmp_path):
    run = RunFolder(tmp_path / "stage2")
    run.prepare(FitConfig(epochs=3))
    assert run.config()["epochs"] == 3 and (run.path / "git.txt").is_file()
    f0 = run.fold(0)
    assert f0.path == run.path / "fold0" and RunFolder.of_checkpoint(f0.best) == run
    f0.path.mkdir()
    f0.last.write_bytes(b"x")
    with pytest.raises(SystemExit, match="unfinished run.*--resume"):
        f0.check_resumable(False)
    f0.check_resumable(True)
    assert not f0.finished and f0.metric("best_metric") is None
    f0.best.write_bytes(b"x")
    f0.write_done({"best_metric": 0.75})
    assert f0.finished and f0.metric("best_metric") == 0.75
    f0.check_resumable(False)  # a finished fold may be run again (it is skipped)
    # thresholds: read in any label order, 0.5 where absent
    assert run.fold(1).read_thresholds(["MI", "AF"])[1] is False
    f0.write_thresholds({"thresholds": {"MI": 0.3, "AF": 0.6}})
    thr, found = f0.read_thresholds(["AF", "MI", "HYP"])
    assert found and thr.tolist() == [0.6, 0.3, 0.5]
    # OOF: only finished folds are joined
    f0.write_oof(["a", "b"], {"fold": 0}, ["MI"], np.array([[1.0], [0.0]]), np.array([[0.9], [0.2]]))
    run.fold(1).path.mkdir()
    run.fold(1).write_oof(["c"], {"fold": 1}, ["MI"], np.array([[1.0]]), np.array([[0.4]]))
    oof = run.join_oof([0, 1])
    assert oof["id"].tolist() == ["a", "b"] and list(oof.columns) == ["id", "fold", "MI", "pred_MI"]
    assert run.read_oof().equals(oof)
    with pytest.raises(SystemExit, match="config.yaml not found"):
        RunFolder(tmp_path / "nothing").config()


def test_fold_discovery_and_selection(tmp_path):
    a, b = RunFolder(tmp_path / "a"), RunFolder(tmp_path / "b")
    for run, k in ((a, 0), (a, 2), (b, 1)):
        run.fold(k).path.mkdir(parents=True)
        run.fold(k).best.write_bytes(f"{k}".encode())
    (a.path / "fold3").mkdir()  # no checkpoint: not a fold
    (a.path / "foldx").mkdir()
    assert sorted(a.fold_checkpoints()) == [0, 2]
    assert gather_folds([a, b], "all") == {0: a.fold(0).best, 1: b.fold(1).best, 2: a.fold(2).best}
    assert list(gather_folds([a, b], "2,0")) == [2, 0]
    assert select_folds("all", [0, 1]) == [0, 1] and select_folds(" 1 ", [0, 1]) == [1]
    with pytest.raises(SystemExit, match=r"--fold=5: folds \[5\] not in folds.csv"):
        select_folds("5", [0, 1])
    with pytest.raises(SystemExit, match="expected all, a fold number"):
        select_folds("one", [0, 1])
    with pytest.raises(SystemExit, match="no fold<k>/last.pt"):
        gather_folds([a], "all", "last.pt")


@pytest.mark.parametrize("input_key", ["caches", "cache"])
def test_fold_model_is_rebuilt_from_its_checkpoint(tmp_path, input_key):
    cache, _ = make_cache(tmp_path / "cache", 2)
    run = RunFolder(tmp_path / "run")
    run.fold(0).path.mkdir(parents=True)
    m = _checkpoint(run.fold(0).best, input_key=input_key, cache=str(cache))
    run.fold(0).write_thresholds({"thresholds": {lb: 0.1 * (j + 1) for j, lb in enumerate(LABELS)}})
    want = list(reversed(LABELS))
    fm = FoldModel.load(run.fold(0).best, 0, want, channels_last=False)
    assert fm.size == (32, 64) and fm.caches == [str(cache)] and fm.run == run and fm.arch == "ecgka_tracenet"
    assert fm.thresholds_found and np.allclose(fm.thresholds, [0.5, 0.4, 0.3, 0.2, 0.1])
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        assert torch.allclose(fm.model(x)[:, fm.order], m(x)[:, fm.order]) and fm.order == [4, 3, 2, 1, 0]
    # no preprocess.yaml in the run folder: the training cache's, named by the checkpoint
    assert fm.preprocess_config().size == (32, 64)
    with pytest.raises(SystemExit, match="predicts .* but the submission wants"):
        FoldModel.load(run.fold(0).best, 0, ["MI", "AF"])
    run.fold(1).path.mkdir()
    ck = torch.load(run.fold(0).best, weights_only=False)
    torch_save({**ck, "arch": "resnet18"}, run.fold(1).best)
    with pytest.raises(SystemExit, match=r"fold 1 \(.*fold1/best.pt\) is a resnet18 model but fold 0"):
        load_fold_models(run.fold_checkpoints(), None, "cpu")


def test_one_amp_rule_and_the_runtime_leaves_its_config_alone():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16 and amp_dtype("fp16", cpu) is torch.float16
    with pytest.raises(SystemExit, match="--amp=fp8: choose auto, off, bf16 or fp16"):
        amp_dtype("fp8", cpu)
    cfg = FitConfig(threads=torch.get_num_threads(), workers=-1)
    rt = setup_runtime(cfg)
    assert cfg.workers == -1 and rt.amp_dtype is None
    assert 1 <= loader_workers(-1) <= 8 and loader_workers(0) == 0 and loader_workers(3) == 3


def test_datasets_carry_their_transforms_and_fit_changes_nothing_it_is_given(tmp_path):
    cache, labels_csv = make_cache(tmp_path / "cache", 12)
    files = read_cache(cache)["file"].tolist()
    y = pd.read_csv(labels_csv)[list(LABELS)].to_numpy(np.float32)
    tr = build_dataset(files[:8], y[:8], (32, 64), True, "medium", seed=3)
    va = build_dataset(files[8:], y[8:], (32, 64), False)
    assert tr.transform is not None and tr.seed == 3 and va.transform is None
    view = tr.at_epoch(2)
    assert view.epoch == 2 and tr.epoch == 0 and not torch.equal(view[0][0], tr[0][0])
    cfg = FitConfig(arch="ecgka_tracenet", epochs=1, batch_size=4, workers=-1, threads=1, aug="strong", seed=5,
                    warmup_epochs=0.5)
    before_cfg, before_tr = copy.deepcopy(cfg), (tr.transform, tr.seed, tr.epoch)
    torch.manual_seed(0)
    res = fit(cfg, setup_runtime(cfg), create_model("ecgka_tracenet", len(LABELS)), LABELS, tr, va, ["a"] * 4,
              RunFolder(tmp_path / "run"), input_info={"size": [32, 64]})
    assert res["finished"] and dataclasses.asdict(cfg) == dataclasses.asdict(before_cfg)
    assert (tr.transform, tr.seed, tr.epoch) == before_tr and va.transform is None
    assert json.loads((tmp_path / "run" / "batch_fit.json").read_text())["micro_batch"] == 4


def test_stage2_labels_come_from_train_csv_alone(tmp_path):
    comp = tmp_path / "comp"  # no train/ or test/ image folder at all
    comp.mkdir()
    pd.DataFrame({"record": ["00042", "7"], "MI": [1, 0], "AF": [0, None], "subject_id": [3, 3], "age": [50, 60]}
                 ).to_csv(comp / "train.csv", index=False)
    (comp / "sample_submission.csv").write_text("record,AF,MI\n")
    df, labels = read_competition_table(comp / "train.csv")
    assert labels == ["AF", "MI"] and list(df.columns) == ["id", "patient_id", "AF", "MI"]
    assert df["id"].tolist() == ["00042", "7"] and df["patient_id"].tolist() == ["3", "3"]
    assert df["MI"].tolist() == [1.0, 0.0] and np.isnan(df["AF"].iloc[1])
    (comp / "sample_submission.csv").write_text("record,AF,MI,CD\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['CD'\]"):
        read_competition_table(comp / "train.csv")
