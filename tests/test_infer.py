"""Fold voting (pure functions) and the end-to-end path: trained fold checkpoints -> src.infer -> src.score."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from src import infer
from src.engine import setup_runtime
from src.run import RunFolder, gather_folds, load_fold_models, shared_preprocess_config


def test_hard_vote_five_folds_gives_fractions_of_folds():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 300, 5))
    thr = rng.uniform(0.2, 0.8, (5, 5))
    v = infer.hard_vote(probs, thr)
    assert v.shape == (300, 5)
    assert np.allclose(v * 5, np.round(v * 5))  # exactly {0, .2, .4, .6, .8, 1}
    assert set(np.round(v.ravel(), 6)) == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    # each fold uses its own per-class thresholds
    expect = np.mean([[probs[f, :, c] >= thr[f, c] for c in range(5)] for f in range(5)], axis=0).T
    assert np.array_equal(v, expect)
    # a single default threshold applies to every fold and class
    assert np.array_equal(infer.hard_vote(probs), (probs >= 0.5).mean(0))
    assert np.array_equal(infer.ensemble(probs, "hard", thr), v)


def test_hard_tiebreak_keeps_the_vote_and_orders_ties_by_mean_probability():
    rng = np.random.default_rng(3)
    probs = rng.random((5, 400, 5))
    thr = rng.uniform(0.3, 0.7, (5, 5))
    hard, tb, mean = infer.hard_vote(probs, thr), infer.hard_tiebreak_vote(probs, thr), probs.mean(0)
    assert tb.shape == hard.shape and tb.min() >= 0 and tb.max() <= 1
    assert np.array_equal(infer.ensemble(probs, "hard_tiebreak", thr), tb)
    for c in range(5):
        h, t, m = hard[:, c], tb[:, c], mean[:, c]
        more = h[:, None] > h[None, :]  # every pair the vote orders keeps that order
        assert (t[:, None] > t[None, :])[more].all()
        same = (h[:, None] == h[None, :]) & (m[:, None] > m[None, :])  # pairs it ties: ordered by mean probability
        assert same.any() and (t[:, None] > t[None, :])[same].all()
    # known answer: two positives and two negatives all get 3 of 5 votes; the pure vote ties them (AUROC 0.5),
    # the tie-break ranks them by mean probability (here perfectly)
    p = np.array([[0.9, 0.8, 0.6, 0.55]] * 3 + [[0.1, 0.1, 0.1, 0.1]] * 2)[:, :, None]
    y = np.array([1, 1, 0, 0])
    from src.score import macro_auroc
    assert macro_auroc(y[:, None], infer.hard_vote(p)) == 0.5
    assert macro_auroc(y[:, None], infer.hard_tiebreak_vote(p)) == 1.0


def test_soft_vote_is_the_mean():
    probs = np.random.default_rng(1).random((3, 50, 5))
    assert np.allclose(infer.soft_vote(probs), probs.mean(0))
    assert np.allclose(infer.ensemble(probs, "soft"), probs.mean(0))


def test_rank_vote_preserves_order():
    rng = np.random.default_rng(2)
    base = rng.random((80, 5))
    # folds that agree on the order but not on calibration: the vote keeps that order exactly
    probs = np.stack([base, base ** 3, 0.5 * base + 0.2, np.sqrt(base)])
    v = infer.rank_vote(probs)
    assert v.shape == base.shape and v.min() > 0 and v.max() <= 1
    for c in range(5):
        assert spearmanr(v[:, c], base[:, c]).statistic == pytest.approx(1.0)
        assert np.array_equal(np.argsort(v[:, c]), np.argsort(base[:, c]))
    # one fold: the vote is a strictly monotone map of its scores
    one = infer.rank_vote(base[None])
    assert np.array_equal(np.argsort(one, axis=0), np.argsort(base, axis=0))
    # an overconfident fold cannot outvote the others (soft vote would follow it)
    a = np.array([[0.1], [0.2], [0.3]])
    b = np.array([[0.99], [0.0], [0.01]])
    assert np.argmax(infer.soft_vote(np.stack([a, a, b]))[:, 0]) == 0
    assert np.argmax(infer.rank_vote(np.stack([a, a, b]))[:, 0]) == 2


@pytest.mark.parametrize("vote", infer.VOTES)
def test_unreadable_images_are_scored_on_the_vote_scale(vote):
    """An unreadable image scores as a readable one would whose every fold predicted the training prevalence (issue
    22: under hard_tiebreak the raw prevalence outranked images a fold had voted for)."""
    rng = np.random.default_rng(4)
    probs = rng.random((5, 60, 3))
    thr = rng.uniform(0.35, 0.65, (5, 3))
    prev = np.array([0.3, 0.1, 0.25])  # below every threshold: no fold would vote for it
    bad = np.zeros(60, bool)
    bad[[0, 7]] = True
    probs[:, bad] = np.nan  # what predict leaves there
    probs[:, 1] = prev  # a readable twin on which every fold predicted the prevalence
    s = infer.vote_with_fallback(probs, bad, prev, vote, thr)
    assert s.shape == (60, 3) and np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    assert np.allclose(s[0], s[1]) and np.allclose(s[7], s[1])
    if vote != "rank":  # per-image votes: the readable images keep exactly the scores they get without the fallback
        assert np.allclose(s[~bad], infer.ensemble(probs[:, ~bad], vote, thr))
    if vote.startswith("hard"):  # no votes: below every image that any fold voted for
        voted = infer.hard_vote(probs[:, ~bad], thr) > 0
        assert (s[0][None, :] < np.where(voted, s[~bad], np.inf)).all()
    if vote == "hard_tiebreak":
        assert np.allclose(s[0], prev / 6)


def test_unknown_vote_is_an_error():
    with pytest.raises(ValueError, match="unknown vote 'median'"):
        infer.ensemble(np.zeros((2, 3, 5)), "median")


# ----------------------------------------------------------------------------------------------------------------
# End to end: tiny synthetic competition -> preprocess -> folds -> train (2 folds) -> infer -> score
# ----------------------------------------------------------------------------------------------------------------
THREADS = torch.get_num_threads()
TINY_TRAIN = ["--arch=convnext_atto", "--epochs=1", "--batch_size=8", "--workers=0", "--threads=1",
              "--warmup_epochs=0.5", "--aug=none"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 2-fold Stage II run on a tiny synthetic competition (outputs under a simulated Kaggle root)."""
    from src import folds, make_data, preprocess, train
    tmp = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGKA_KAGGLE_ROOT", str(tmp / "kaggle"))
        make_data.main([f"--root={tmp / 'data'}", "--preset=tiny", "--n_train=16", "--n_test=10", "--n_scans=0",
                        "--n_roi=0", "--photo_hw=176,320", "--workers=1", "--public_fraction=0.5",
                        "--prevalence=MI=0.5,AF=0.5,HYP=0.5,CD=0.5,STTC=0.5"])
        comp = tmp / "data" / "ecg-synth-comp"
        cache = tmp / "cache"
        preprocess.main([f"--src={comp / 'train.csv'}", f"--dst={cache}", "--strategy=roi_clahe", "--size=64,128",
                         "--workers=1"])
        folds.main([f"--train_csv={comp / 'train.csv'}", "--n_folds=2", f"--out={tmp / 'folds.csv'}"])
        res = train.main([f"--cache={cache}", f"--train_csv={comp / 'train.csv'}", f"--folds_csv={tmp / 'folds.csv'}",
                          "--fold=all", "--name=e2e", *TINY_TRAIN])
        torch.set_num_threads(THREADS)
        yield {"tmp": tmp, "comp": comp, "run": Path(res["out"]),
               "solution": tmp / "data" / "ecg-synth-comp-solution" / "solution.csv", "mp_root": tmp / "kaggle"}


def _infer(tiny_run, *args):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGKA_KAGGLE_ROOT", str(tiny_run["mp_root"]))
        try:  # one torch thread: as fast for a tiny model, and robust to a busy neighbour process
            run = [] if any(a.startswith("--run=") for a in args) else ["--run=e2e"]
            return infer.main([*run, "--threads=1", *args])
        finally:
            torch.set_num_threads(THREADS)


def test_end_to_end_hard_vote_submission_is_scored(tiny_run, capsys):
    from src import score
    comp, run = tiny_run["comp"], tiny_run["run"]
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    bad_id = sample["id"].iloc[3]
    test_copy = tiny_run["tmp"] / "test_broken"  # same test set with one truncated image
    shutil.copytree(comp / "test", test_copy)
    img = test_copy / f"{bad_id}.png"
    img.write_bytes(img.read_bytes()[:200])
    out = tiny_run["tmp"] / "sub" / "submission.csv"
    # 1 of 10 unreadable is more than the default 1 %: no submission
    with pytest.raises(SystemExit, match=r"(?s)1 of 10 test images .*--max_unreadable=0.01.*truncated"):
        _infer(tiny_run, "--vote=hard", f"--out={out}", f"--test_dir={test_copy}", "--workers=0")
    assert not out.exists()
    r = _infer(tiny_run, "--vote=hard", f"--out={out}", f"--test_dir={test_copy}", "--workers=2", "--batch_size=4",
               "--max_unreadable=0.1")
    assert "img/s" in capsys.readouterr().out

    sub = pd.read_csv(out, dtype={"id": str})
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    labels = list(sample.columns[1:])
    ok = sub["id"] != bad_id
    vals = sub.loc[ok, labels].to_numpy()
    assert set(np.unique(vals)) <= {0.0, 0.5, 1.0}  # two folds vote
    # the unreadable image is listed and scored as if both folds had predicted the training prevalence (the run's
    # OOF labels), at their thresholds
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    thr = np.stack([[json.loads((run / f"fold{k}" / "thresholds.json").read_text())["thresholds"][lb]
                     for lb in labels] for k in (0, 1)])
    prev = oof[labels].mean().to_numpy()
    assert np.allclose(sub.loc[~ok, labels].to_numpy()[0], infer.hard_vote(np.broadcast_to(prev, (2, 1, 5)), thr)[0])
    unreadable = pd.read_csv(out.with_name("submission_unreadable.csv"), dtype={"id": str})
    assert unreadable["id"].tolist() == [bad_id] and "truncated" in unreadable["error"].iloc[0]
    # the submission is the hard vote of the per-fold probabilities at each fold's thresholds.json
    per = pd.read_csv(out.with_name("submission_folds.csv"), dtype={"id": str})
    assert len(per) == 2 * len(sample) and set(per["fold"]) == {0, 1}
    assert per.loc[per["id"] == bad_id, "status"].eq("unreadable").all() and per.loc[per["id"] == bad_id, labels].isna().all().all()
    probs = np.stack([per[per["fold"] == k].set_index("id").loc[sample["id"], labels].to_numpy() for k in (0, 1)])
    assert np.array_equal(infer.hard_vote(probs[:, ok.to_numpy()], thr), vals)
    assert r["info"]["unreadable"][0]["id"] == bad_id
    # the default vote is the same hard vote with its ties ordered by the folds' mean probability
    d = _infer(tiny_run, f"--out={out.with_name('default.csv')}", f"--test_dir={test_copy}", "--workers=0",
               "--max_unreadable=0.1")
    assert d["info"]["vote"] == "hard_tiebreak"
    dvals = pd.read_csv(out.with_name("default.csv"), dtype={"id": str}).loc[ok, labels].to_numpy()
    assert np.allclose(dvals, (2 * vals + probs[:, ok.to_numpy()].mean(0)) / 3)

    res = score.main(["--submission", str(out), "--solution", str(tiny_run["solution"]), "--skip_degenerate=true"])
    assert set(res) == {"overall", "Public", "Private"} and 0 <= res["overall"]["macro_auroc"] <= 1


def test_soft_vote_with_flip_tta_is_the_mean_of_fold_outputs(tiny_run):
    out = tiny_run["tmp"] / "sub_soft" / "s.csv"
    r = _infer(tiny_run, "--vote=soft", "--tta=flip", f"--out={out}", "--workers=0", "--folds=0,1")
    sub = pd.read_csv(out, dtype={"id": str})
    labels = list(sub.columns[1:])
    assert np.allclose(sub[labels].to_numpy(), r["probs"].mean(0), atol=1e-6)
    plain = _infer(tiny_run, "--vote=soft", f"--out={out.with_name('plain.csv')}", "--workers=0")
    assert not np.allclose(plain["probs"], r["probs"])  # the mirrored view did change the outputs


def test_infer_reproduces_training_predictions(tiny_run):
    """Each fold model on its own validation images, through infer's preprocessing: the OOF probabilities again.
    Proves infer re-applies the training preprocessing and normalisation (not a look-alike)."""
    comp, run = tiny_run["comp"], tiny_run["run"]
    train_ids = pd.read_csv(comp / "train.csv", dtype={"id": str})["id"]
    fake_sample = tiny_run["tmp"] / "train_as_test.csv"
    pd.DataFrame({"id": train_ids, **{lb: 0.5 for lb in ("MI", "AF", "HYP", "CD", "STTC")}}).to_csv(fake_sample,
                                                                                                     index=False)
    r = _infer(tiny_run, "--vote=soft", f"--out={tiny_run['tmp'] / 'sub_train' / 's.csv'}", "--workers=0",
               f"--sample_submission={fake_sample}", f"--test_dir={comp / 'train'}")
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    pos = {i: n for n, i in enumerate(train_ids)}
    for k in (0, 1):
        part = oof[oof["fold"] == k]
        got = r["probs"][k][[pos[i] for i in part["id"]]]
        want = part[[f"pred_{lb}" for lb in ("MI", "AF", "HYP", "CD", "STTC")]].to_numpy()
        assert np.allclose(got, want, atol=1e-4), np.abs(got - want).max()


def test_clear_errors_for_bad_runs(tiny_run, tmp_path):
    with pytest.raises(SystemExit, match=r"folds \[7\] not in .*fold<k>/best.pt"):
        _infer(tiny_run, "--folds=0,7", f"--out={tmp_path / 's.csv'}")
    with pytest.raises(SystemExit, match="not found"):
        infer.main([f"--run={tmp_path / 'nope'}"])
    with pytest.raises(SystemExit, match="--vote=median"):
        _infer(tiny_run, "--vote=median")


def _fails_in_workers_like_cuda(real):
    """preprocess_image as it fails in a forked DataLoader worker of a CUDA process (issue 21), fine elsewhere."""
    def fn(img, cfg):
        from torch.utils.data import get_worker_info
        if get_worker_info() is not None:
            raise RuntimeError("Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, "
                               "you must use the 'spawn' start method")
        return real(img, cfg)
    return fn


def test_preprocessing_failing_in_every_worker_stops_without_a_submission(tiny_run, monkeypatch):
    """The fork case on a CPU: forked workers inherit this patch, so every image fails in them as every image did
    on the GPU. The run must stop, naming the reason, with no submission (it used to write a constant one)."""
    from src import preprocess
    monkeypatch.setattr(preprocess, "preprocess_image", _fails_in_workers_like_cuda(preprocess.preprocess_image))
    out = tiny_run["tmp"] / "sub_fork" / "submission.csv"
    with pytest.raises(SystemExit) as e:
        _infer(tiny_run, f"--out={out}", "--workers=2", "--batch_size=4")
    assert e.value.code != 0
    assert re.search(r"10 of 10 test images \(100.0%\).*no submission written.*Cannot re-initialize CUDA",
                     str(e.value), re.S), e.value
    assert not out.exists() and not out.with_name("submission_folds.csv").exists()
    assert len(pd.read_csv(out.with_name("submission_unreadable.csv"))) == 10


def test_spawned_workers_give_the_same_predictions(tiny_run):
    """On CUDA the loader's workers are spawned (a fresh interpreter each): the dataset and worker start must work
    there and preprocess exactly as in this process."""
    run = tiny_run["run"]
    pcfg = RunFolder(run).preprocess_config()
    comp = tiny_run["comp"]
    ids = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})["id"].tolist()[:4]
    ds = infer.TestImages(infer.find_images(comp / "test", ids), ids, pcfg)
    rt = setup_runtime(infer.InferConfig(run=str(run), amp="off", threads=THREADS))
    try:
        folds = load_fold_models(gather_folds([RunFolder(run)], "0"), None, rt.device)
        inline = infer.predict(folds, ds, rt, batch_size=2, workers=0)
        spawned = infer.predict(folds, ds, rt, batch_size=2, workers=1, start_method="spawn")
    finally:
        torch.set_num_threads(THREADS)
    assert not any(spawned["errors"]) and np.isfinite(spawned["probs"]).all()
    assert np.allclose(spawned["probs"], inline["probs"], atol=1e-6)


def _copy_run(src: Path, dst: Path, folds: list[int]) -> Path:
    """A run folder holding some of `src`'s folds, as a second training session would leave it."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    for k in folds:
        shutil.copytree(src / f"fold{k}", dst / f"fold{k}")
    return dst


def test_folds_are_gathered_from_several_run_folders(tiny_run, tmp_path):
    run = tiny_run["run"]
    a = _copy_run(run, tmp_path / "session1" / "stage2", [0])
    b = _copy_run(run, tmp_path / "session2" / "stage2", [1])
    both = _infer(tiny_run, f"--run={a},{b}", "--vote=soft", f"--out={tmp_path / 'ab.csv'}", "--workers=0")
    one = _infer(tiny_run, "--vote=soft", f"--out={tmp_path / 'one.csv'}", "--workers=0")
    assert both["info"]["folds"] == [0, 1] and len(both["info"]["runs"]) == 2
    assert np.allclose(both["probs"], one["probs"], atol=1e-6)
    # a glob gathers the same folders (every attached Stage II output on Kaggle); one that matches nothing is an error
    glob = _infer(tiny_run, f"--run={tmp_path}/session*/stage2", "--vote=soft", f"--out={tmp_path / 'g.csv'}",
                  "--workers=0")
    assert glob["info"]["folds"] == [0, 1] and np.array_equal(glob["probs"], both["probs"])
    with pytest.raises(SystemExit, match="no run folder matches"):
        _infer(tiny_run, f"--run={tmp_path}/nothing*/stage2", f"--out={tmp_path / 'x.csv'}")
    # the same fold attached twice (identical bytes) is used once
    shutil.copytree(run / "fold1", a / "fold1")
    assert _infer(tiny_run, f"--run={a},{b}", "--vote=soft", f"--out={tmp_path / 'dup.csv'}",
                  "--workers=0")["info"]["folds"] == [0, 1]
    # ... but two different checkpoints of one fold: an error naming both
    (a / "fold1" / "best.pt").write_bytes((a / "fold1" / "best.pt").read_bytes() + b"\0")
    with pytest.raises(SystemExit, match=rf"fold 1 is in two run folders .*{re.escape(str(a))}/fold1/best.pt and "
                                         rf"{re.escape(str(b))}/fold1/best.pt"):
        _infer(tiny_run, f"--run={a},{b}", f"--out={tmp_path / 'x.csv'}")
    shutil.rmtree(a / "fold1")
    # folders trained on other preprocessing: named, with the setting that differs
    import yaml
    y = yaml.safe_load((b / "preprocess.yaml").read_text())
    (b / "preprocess.yaml").write_text(yaml.safe_dump({**y, "size": [96, 128]}))
    with pytest.raises(SystemExit, match=rf"{re.escape(str(a))} and {re.escape(str(b))} were trained on differently "
                                         rf"preprocessed images \(size: \(64, 128\) vs \(96, 128\)\)"):
        _infer(tiny_run, f"--run={a},{b}", f"--out={tmp_path / 'x.csv'}")
    # the ROI weights each folder carries (as roi.pt) count by content
    for d, weights in ((a, b"same"), (b, b"same")):
        (d / "roi.pt").write_bytes(weights)
        (d / "preprocess.yaml").write_text(yaml.safe_dump({**y, "roi_weights": "roi.pt"}))
    runs = [RunFolder(a), RunFolder(b)]
    assert shared_preprocess_config(runs).roi_weights == str(a / "roi.pt")
    (b / "roi.pt").write_bytes(b"other")
    with pytest.raises(SystemExit, match=rf"differently preprocessed images \(roi_weights: {re.escape(str(a))}/roi.pt "
                                         rf"vs {re.escape(str(b))}/roi.pt\)"):
        shared_preprocess_config(runs)


def test_a_fold_of_another_architecture_is_refused(tiny_run, tmp_path):
    a = _copy_run(tiny_run["run"], tmp_path / "mixed", [0, 1])
    ck = torch.load(a / "fold1" / "best.pt", map_location="cpu", weights_only=False)
    torch.save({**ck, "arch": "resnet18"}, a / "fold1" / "best.pt")
    with pytest.raises(SystemExit, match=r"fold 1 \(.*mixed/fold1/best.pt\) is a resnet18 model but fold 0 "
                                         r"\(.*mixed/fold0/best.pt\) is convnext_atto"):
        _infer(tiny_run, f"--run={a}", f"--out={tmp_path / 's.csv'}")


def test_an_unwritable_output_folder_fails_before_any_model_or_image(tiny_run, tmp_path, monkeypatch):
    def too_late(*a, **k):
        raise AssertionError("models loaded before the output folder was checked")
    monkeypatch.setattr(infer, "load_fold_models", too_late)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match=rf"cannot write the submission into {re.escape(str(blocker / 'sub'))} "
                                         rf"\(.*--out="):
        _infer(tiny_run, f"--out={blocker / 'sub' / 'submission.csv'}")
    from collections import namedtuple
    monkeypatch.setattr(infer.shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(10**6, 10**6, 4096))
    full = tmp_path / "full"
    with pytest.raises(SystemExit, match=rf"into {re.escape(str(full))} \(0.0 MB free, about 1.1 MB needed\): free "
                                         rf"space there"):
        _infer(tiny_run, f"--out={full / 'submission.csv'}")
    assert not list(full.iterdir())  # nothing left behind
