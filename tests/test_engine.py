"""Engine and data pieces: masked loss, optimisation, schedule, sampler, augmentation presets, cache dataset."""
from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.data import (AUG_PRESETS, CacheDataset, ShardedSampler, build_transform, holdout_split, read_cache,
                      read_label_table, reseed)
from src.engine import (EarlyStopping, FitConfig, build_optimizer, build_scheduler, masked_bce, positive_weights,
                        setup_runtime)
from src.model import create_model
from src.run import RunFolder
from tests.fake_cache import make_cache


def test_masked_bce_matches_bce_over_known_labels():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    y = (torch.rand(6, 5) < 0.5).float()
    y[0, 1] = y[3, 4] = y[5, 0] = float("nan")
    pw = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.5])
    known = ~torch.isnan(y)
    per = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), pos_weight=pw, reduction="none")
    assert torch.allclose(masked_bce(logits, y, pw), per[known].mean())


def test_all_nan_labels_give_zero_loss_and_zero_gradient():
    torch.manual_seed(0)
    m = create_model("convnext_atto", 5)
    loss = masked_bce(m(torch.rand(3, 3, 32, 64)), torch.full((3, 5), float("nan")), torch.full((5,), 2.0))
    loss.backward()
    assert float(loss.detach()) == 0.0
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 and torch.isfinite(g).all() for g in grads)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    m = create_model("convnext_atto", 5, drop_rate=0.0)
    x = torch.rand(4, 3, 32, 64)
    y = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 0, 1, 0], [0, 0, 0, 1, float("nan")]])
    opt = build_optimizer(m, lr=1e-3, weight_decay=1e-2)
    losses = []
    for _ in range(8):
        loss = masked_bce(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_positive_weights_inverse_prevalence_on_known_labels():
    y = np.array([[1, 0, np.nan], [0, 0, np.nan], [0, 0, 1], [0, 1, 0]], dtype=float)
    w = positive_weights(y, "inverse", cap=50)
    assert np.allclose(w, [3.0, 3.0, 1.0])
    assert np.allclose(positive_weights(np.zeros((4, 1)), "inverse"), [1.0])  # no positives: neutral
    assert np.allclose(positive_weights(y, "none"), 1.0)


def test_warmup_then_cosine_per_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_scheduler(opt, total_steps=100, warmup_steps=10, min_ratio=0.01)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_early_stopping_patience():
    s = EarlyStopping(patience=2)
    assert s.step(0.7, 0) and not s.step(0.6, 1) and not s.stop
    assert s.step(0.8, 2) and not s.step(0.8, 3) and not s.step(0.79, 4) and s.stop
    assert (s.best, s.best_epoch) == (0.8, 2)
    t = EarlyStopping(2)
    t.load_state_dict(s.state_dict())
    assert t.stop


def test_sampler_shards_cover_the_set_once_unpadded_and_pad_for_training():
    n, world = 13, 2
    val = [ShardedSampler(n, False, 0, r, world, pad=False) for r in range(world)]
    seen = sorted(i for s in val for i in s)
    assert seen == list(range(n)) and [len(s) for s in val] == [7, 6]
    tr = [ShardedSampler(n, True, 3, r, world) for r in range(world)]
    assert [len(list(s)) for s in tr] == [7, 7] and set(i for s in tr for i in s) == set(range(n))
    a = list(tr[0])
    tr[0].set_epoch(1)
    assert list(tr[0]) != a
    tr[0].set_epoch(0)
    assert list(tr[0]) == a  # the order is a function of (seed, epoch) only: exact resume


def test_holdout_keeps_patients_whole():
    import pandas as pd
    df = pd.DataFrame({"id": [f"r{i}" for i in range(200)],
                       "patient_id": [None] * 40 + [f"p{i // 4}" for i in range(160)]})
    val = holdout_split(df, 0.1, seed=3)
    assert 20 <= val.sum() <= 24
    assert not set(df.loc[val, "patient_id"].dropna()) & set(df.loc[~val, "patient_id"].dropna())
    assert np.array_equal(val, holdout_split(df, 0.1, seed=3)) and not np.array_equal(val, holdout_split(df, 0.1, 4))


def test_weighted_sampler_follows_source_shares():
    weights = np.r_[np.full(10, 0.8 / 10), np.full(90, 0.2 / 90)]  # source 0: 10 images, 80 % of draws
    idx = ShardedSampler(100, True, 0, weights=weights, num_samples=4000).indices()
    assert len(idx) == 4000 and abs(np.mean(np.asarray(idx) < 10) - 0.8) < 0.03


@pytest.mark.parametrize("preset", AUG_PRESETS)
def test_augmentation_presets_build_without_warnings(preset):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # albumentations 2.x only warns on 1.x argument names
        t = build_transform(preset)
        if t is None:
            assert preset == "none"
            return
        outs = []
        for seed in ((0, 0, 1), (0, 0, 2), (0, 0, 1)):
            reseed(t, seed)
            outs.append(t(image=img)["image"])
    assert outs[0].shape == img.shape and outs[0].dtype == np.uint8
    assert np.array_equal(outs[0], outs[2])  # same (seed, epoch, index): same image, whatever ran in between
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        build_transform("extreme")


@pytest.mark.parametrize("preset", ["light", "medium", "strong"])
def test_presets_change_most_images(preset):
    img = np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    t = build_transform(preset)
    changed = 0
    for i in range(8):
        reseed(t, (0, 0, i))
        changed += not np.array_equal(t(image=img)["image"], img)
    assert changed >= 5


def test_cache_dataset_reads_ok_rows_and_survives_a_broken_file(tmp_path, capsys):
    cache, labels_csv = make_cache(tmp_path / "c", 4, size=(32, 64), skipped=2)
    idx = read_cache(cache)
    assert len(idx) == 4  # the skipped rows are not offered
    table, labels = read_label_table(labels_csv)
    assert labels == ["MI", "AF", "HYP", "CD", "STTC"] and table[labels].dtypes.eq(float).all()
    files = list(idx["file"])
    (tmp_path / "c" / "images" / "r0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    y = table.set_index("id").loc[idx["id"], labels].to_numpy(np.float32)
    ds = CacheDataset(files, y)
    x0, y0, i0 = ds[0]
    assert x0.shape == (3, 32, 64) and x0.dtype == torch.uint8 and i0 == 0 and torch.equal(y0, torch.from_numpy(y[0]))
    x1, y1, _ = ds[1]
    assert x1.shape == (3, 32, 64) and torch.isnan(y1).all()  # contributes nothing to loss or metrics
    assert "r0001.png" in capsys.readouterr().err


def test_label_table_rejects_non_binary_columns(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("id,MI,AF\na,1,0\nb,2,1\n")
    with pytest.raises(ValueError, match="'MI' must hold 0/1"):
        read_label_table(p, ["MI", "AF"])
    table, labels = read_label_table(p, ["AF", "HYP"])  # a label the source lacks is unknown (NaN)
    assert table["HYP"].isna().all() and labels == ["AF", "HYP"]


def test_cpu_runtime_has_amp_off_and_disabled_scaler():
    rt = setup_runtime(FitConfig(threads=1))
    assert rt.device.type == "cpu" and rt.amp_dtype is None and not rt.use_scaler and rt.world == 1
    assert not torch.amp.GradScaler("cpu", enabled=rt.use_scaler).is_enabled()
    assert math.isfinite(FitConfig().lr)


# ---------------------------------------------------------------------------------------------------------------
# Memory: batch fit and gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------
def _fake_gpu(capacity: int, per_image: int = 10, fixed: int = 5):
    """A 'try this micro-batch' callable: peak = fixed + m x per_image, out of memory above `capacity` images."""
    tried = []

    def try_batch(m):
        tried.append(m)
        if m > capacity:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory trying {m}")
        return fixed + m * per_image
    return try_batch, tried


def test_batch_fit_takes_the_largest_dividing_micro_batch_and_keeps_the_batch():
    from src.engine import choose_micro_batch
    try_batch, tried = _fake_gpu(capacity=10)
    released = []
    res = choose_micro_batch(32, 32, try_batch, limit=1e9, release=lambda: released.append(1))
    assert tried == [32, 16, 8] and len(released) == 3  # 10 images fit, but 10 does not divide 32
    assert (res["micro_batch"], res["accum_steps"]) == (8, 4) and res["rank_choices"] == [8]
    assert [t["fits"] for t in res["tries"]] == [False, False, True]
    assert res["tries"][0]["peak_bytes"] is None and res["tries"][2]["peak_bytes"] == 85
    # no OOM but above the headroom limit does not fit either; a configured micro-batch below the largest is kept
    try_batch, tried = _fake_gpu(capacity=100)
    assert choose_micro_batch(24, 24, try_batch, limit=70)["micro_batch"] == 6 and tried == [24, 12, 8, 6]
    assert choose_micro_batch(16, 4, _fake_gpu(100)[0], limit=1e9) == {
        "micro_batch": 4, "accum_steps": 4, "tries": [{"micro_batch": 4, "fits": True, "peak_bytes": 45}],
        "rank_choices": [4]}


def test_batch_fit_ranks_agree_on_the_smallest_and_fail_together():
    from src.engine import choose_micro_batch
    res = choose_micro_batch(16, 16, _fake_gpu(capacity=16)[0], 1e9, gather=lambda v: [v, 4])  # other rank: 4
    assert (res["micro_batch"], res["accum_steps"], res["rank_choices"]) == (4, 4, [16, 4])
    with pytest.raises(SystemExit, match="not even one image.*rank 1.*--grad_checkpointing"):
        choose_micro_batch(16, 16, _fake_gpu(capacity=16)[0], 1e9, gather=lambda v: [v, 0])
    with pytest.raises(SystemExit, match="rank 0"):
        choose_micro_batch(16, 16, _fake_gpu(capacity=0)[0], 1e9)


def test_probe_step_leaves_the_model_as_it_found_it():
    from src.engine import Runtime, probe_step
    from src.model import norm_tensors
    torch.manual_seed(0)
    m = create_model("ecgka_tracenet", 5).eval()  # BatchNorm: the probe must not move its running statistics
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 64), dtype=torch.uint8)  # noqa: E731
    probe_step(m, Runtime(torch.device("cpu"), 0, 1, None, False), norm_tensors(m, "cpu"), images, 3, 5)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and not m.training
    assert all(p.grad is None for p in m.parameters())


def test_grad_checkpointing_gives_the_same_gradients():
    from src.engine import enable_grad_checkpointing
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 64), torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        m = create_model("convnext_atto", 5, drop_rate=0.0)
        if ckpt:
            enable_grad_checkpointing(m, "convnext_atto")
            assert all(s.grad_checkpointing for s in m.stages)
        masked_bce(m(x), y).backward()
        grads.append([p.grad for p in m.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    with pytest.raises(SystemExit, match="ecgka_tracenet does not support gradient checkpointing"):
        enable_grad_checkpointing(create_model("ecgka_tracenet", 5), "ecgka_tracenet")


def test_batch_fit_is_a_logged_no_op_on_cpu(tmp_path, capsys):
    import json
    from src.engine import fit_batch
    cfg = FitConfig(threads=1, batch_size=8, accum_steps=2)
    rt = setup_runtime(cfg)
    ds = SimpleNamespace(size=(32, 64))
    assert fit_batch(cfg, rt, None, ds, 5, RunFolder(tmp_path)) == (4, 2)
    rec = json.loads((tmp_path / "batch_fit.json").read_text())
    assert rec["probed"] is False and rec["reason"] == "a no-op on cpu"
    assert (rec["micro_batch"], rec["accum_steps"]) == (4, 2)
    assert "batch_fit a no-op on cpu: micro-batch 4 x accum 2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="must divide"):
        fit_batch(FitConfig(batch_size=6, accum_steps=4), rt, None, ds, 5, RunFolder(tmp_path))
