"""Smoke test of bench/ablation.py at `tiny` size: every experiment runs one short configuration end to end (one data
build shared by all, 1 seed, 1 epoch, 32x128 images, a few dozen images) and writes its table into a tmp report."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import ablation, ablation_report

TITLES = {exp: title for exp, title in ablation_report.TITLES.items()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("ablation")
    report = work / "report" / "ablation.md"
    argv = [f"--workdir={work}", f"--report={report}", "--preset=tiny", "--seeds=0", "--n_folds=3",
            "--backbones=ecgka_tracenet,convnext_atto", "--fractions=0.2,1.0", "--shift_inits=none-matched,scans",
            "--bootstrap=20", "--workers=1"]
    ablation.main(argv)
    return work, report, report.read_text()


def section(text: str, exp: str) -> str:
    start = text.index(f"## {TITLES[exp]}")
    nxt = text.find("\n## ", start + 3)
    return text[start:nxt if nxt > 0 else None]


def table_rows(sec: str) -> list[list[str]]:
    rows = [ln for ln in sec.splitlines() if ln.startswith("|")]
    assert len(rows) >= 3, f"no table in:\n{sec}"
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


@pytest.mark.parametrize("exp", ablation_report.EXPERIMENTS)
def test_each_experiment_writes_a_numeric_table(smoke, exp):
    _, _, text = smoke
    rows = table_rows(section(text, exp))
    expected = {"backbone": 2, "stages": 4, "preprocess": 4, "fraction": 2, "vote": 5, "shift": 3, "ceiling": 3}[exp]
    assert len(rows) == expected, rows
    for row in rows:
        assert "failed" not in " ".join(row), row
        nums = [float(m) for c in row for m in re.findall(r"(?<![\d.])[01]\.\d{3}(?!\d)", c)]
        assert nums and all(0.0 <= v <= 1.0 for v in nums), f"no AUROC in row {row}"


def test_report_has_setup_plots_and_commands(smoke):
    work, report, text = smoke
    assert "Machine:" in text and "Wall time" in text and "python -m bench.ablation" in text
    assert re.search(r"Invocations whose results.*\n  - `python -m bench.ablation [^`]*--preset=tiny[^`]*` — "
                     r"started .*, [\d.]+ min, \d+ new arm results", text)
    reading = text[text.index("## Reading these results"):]
    assert re.search(r"Best image arm: [01]\.\d{3}", reading)
    assert "signal ceiling in the page's own view (3x4:13)" in reading
    assert re.search(r"\*\*Backbone\.\*\* After Stage I -> Stage II: (ecgka_tracenet|convnext_atto) [01]\.\d{3} \((its "
                     r"Stage I: [01]\.\d{3} on held-out scans|no Stage I validation score)\)", reading), reading
    assert (report.parent / "ablation_fraction.png").stat().st_size > 1000
    assert (report.parent / "ablation_roc.png").stat().st_size > 1000
    assert "python -m src.train" in text and "python -m src.infer" in text and "--vote=rank" in text
    cmds = text[text.index("## Exact commands"):]
    assert f"W={work}" in cmds and "--name=$W/runs/train/" in cmds  # one variable for the work folder...
    assert cmds.count(str(work)) == 1, "...which appears nowhere else"
    paper = table_rows(section(text, "preprocess"))
    assert [r[-1] for r in paper] == ["0.753", "0.868", "0.834", "not in the paper"]  # raw, roi_clahe, full, trace
    verdicts = text[text.index("## Verdicts"):text.index("## Reading these results")]
    assert "ecgka_tracenet beats convnext_atto" in verdicts and "trace beats roi_clahe" in verdicts


def run_config(work, stage: str, name: str) -> dict:
    return yaml.safe_load((work / "runs" / stage / name / "config.yaml").read_text())


def test_runs_use_the_presets_recipe(smoke):
    """tiny follows recipes/cpu.yaml (+ debug.yaml): trace maps, ecgka_tracenet, lr 2e-3 / 2e-4, no augmentation; the
    preprocess arms run the whole Stage I -> Stage II pipeline on their own strategy, everything else the recipe's."""
    work, _, text = smoke
    assert "main strategy `trace`, main arch `ecgka_tracenet`" in text and "recipe `cpu,debug`" in text
    for strategy, aug in (("trace", "none"), ("roi_clahe", "none")):
        s1 = run_config(work, "pretrain", f"ecgka_tracenet-{strategy}-scans")
        assert (s1["arch"], s1["lr"], s1["aug"]) == ("ecgka_tracenet", 2e-3, aug)
        assert [f"scans-{strategy}-32x128" in src for src in s1["sources"]] == [True]
        s2 = run_config(work, "train", f"ecgka_tracenet-{strategy}-scans-all-s0")
        assert (s2["arch"], s2["lr"], s2["aug"]) == ("ecgka_tracenet", 2e-4, aug)
        assert s2["cache"].endswith(f"abl-comp-{strategy}-32x128")
        assert s2["init"] == str(work / "runs" / "pretrain" / f"ecgka_tracenet-{strategy}-scans" / "best.pt")
    # the compute-matched control: random init, Stage I's lr, as many images as Stage I on the scans (24 x 1 epoch)
    m = run_config(work, "train", "ecgka_tracenet-trace-none-matched-all-s0")
    s1 = run_config(work, "pretrain", "ecgka_tracenet-trace-scans")
    assert (m["lr"], m["init"] or None) == (s1["lr"], None)
    assert m["epochs"] == 2  # ceil(1 epoch x 24 scans / (25 photos x 2/3: a fold's training part of 3))
    # ... and in `shift` it counts the one-setting photos it trains on: ceil(24 / (12 x 2/3))
    assert run_config(work, "train", "ecgka_tracenet-trace-none-matched-narrow-s0")["epochs"] == 3
    cmds = (work / "commands.sh").read_text()
    assert "--strategy=raw" in cmds and "--strategy=full" in cmds
    stages = [ln for ln in cmds.splitlines() if ln.startswith(("python -m src.pre", "python -m src.train"))]
    assert stages and all("--recipe=cpu,debug" in ln for ln in stages)  # preprocess, pretrain and train
    # every Stage I and II command but the backbone arm's carries the main arch
    fits = [ln for ln in cmds.splitlines() if ln.startswith(("python -m src.train", "python -m src.pretrain"))]
    assert {re.search(r"--arch=(\S+)", ln)[1] for ln in fits} == {"ecgka_tracenet", "convnext_atto"}
    assert all("--arch=convnext_atto" not in ln or "convnext_atto-trace-scans" in ln for ln in fits)


def test_ceiling_rows_follow_the_views_at_the_cache_width(smoke):
    _, _, text = smoke
    rows = table_rows(section(text, "ceiling"))
    # tiny caches are 128 px wide: a 10 s row keeps ~13 samples/s
    assert [r[0] for r in rows] == ["full:100", "full:13", "3x4:13"]
    assert all(r[1] == "40" for r in rows)


def test_vote_uses_all_folds_and_shift_has_a_gap(smoke):
    work, _, _ = smoke
    info = pd.read_json(next((work / "runs" / "train").glob("*-all-s0/sub-abl-comp-hard-fall_info.json")),
                        typ="series")
    assert sorted(info["folds"]) == [0, 1, 2]
    r = pd.read_json(work / "results" / "shift" / "one_setting__none-matched_s0.json", typ="series")
    assert r["gap"] == pytest.approx(r["in_dist"] - r["test_auroc"])
    # both scored submissions are kept, so the gap contrast can be bootstrapped on each test set
    assert pd.read_csv(r["in_dist_submission"]).shape[0] == pd.read_csv(r["in_dist_solution"]).shape[0] == 16
    assert pd.read_csv(r["submission"]).shape[0] == pd.read_csv(r["solution"]).shape[0] == 20
    assert re.search(r"\| Stage I on diverse scans shrinks the single-source gap .*\| "
                     r"(gap [+-]\d\.\d{3} -> [+-]\d\.\d{3} \(Δ [+-]\d\.\d{3}, σ \d\.\d{3}\) \| "
                     r"(reproduces|does not|not resolved)|.* untestable: an arm)", smoke[2])
    assert re.search(r"Agreement of the fold models: .* r = -?[01]\.\d{3}", section(smoke[2], "vote"))


def test_fold_agreement_is_one_for_copies_and_near_zero_for_independent_models(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random((400, len(ablation_report.LABELS)))

    def folds_csv(name, probs):
        rows = [pd.DataFrame({"id": [f"i{k:03d}" for k in range(len(p))], "fold": f, "status": "ok",
                              **{lb: p[:, j] for j, lb in enumerate(ablation_report.LABELS)}})
                for f, p in enumerate(probs)]
        pd.concat(rows).sample(frac=1, random_state=0).to_csv(tmp_path / f"{name}_folds.csv", index=False)
        return tmp_path / f"{name}.csv"  # the submission path; the per-fold file sits beside it

    assert ablation_report.fold_agreement(folds_csv("copies", [base, base, base])) == pytest.approx(1.0)
    assert abs(ablation_report.fold_agreement(folds_csv("indep", [rng.random(base.shape) for _ in range(3)]))) < 0.1
    assert ablation_report.fold_agreement(tmp_path / "missing.csv") is None


def test_finished_arms_are_not_rerun(smoke):
    work, report, _ = smoke
    before = (work / "commands.sh").read_text()
    ablation.main([f"--workdir={work}", f"--report={report}", "--preset=tiny", "--experiments=stages,vote",
                   "--n_folds=3", "--workers=1", "--bootstrap=20"])
    after = (work / "commands.sh").read_text()
    new = after[len(before):]
    assert "src.train" not in new and "src.pretrain" not in new, new
    assert "and 1 that only rewrote this report from existing results" in report.read_text()


def test_a_stopped_invocation_is_still_listed(tmp_path):
    # a run stopped by hand never logs "end": its start and last finished experiment must still reach the report
    kit = ablation.Kit(ablation.parse_args(ablation.AblationConfig, [f"--workdir={tmp_path}", "--preset=tiny"]))
    ev = {"id": "a", "argv": ["--experiments=backbone"], "started": "2026-12-03 10:00 UTC"}
    lines = [{**ev, "event": "start", "wall_min": 0.0, "new_arms": 0},
             {**ev, "event": "progress", "wall_min": 42.5, "new_arms": 3},
             {"argv": ["--experiments=stages"], "started": "2026-12-01 09:00 UTC", "wall_min": 61.4}]  # old format
    (tmp_path / "invocations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = "\n".join(ablation_report.past_invocations(kit))
    assert "--experiments=backbone` — started 2026-12-03 10:00 UTC, stopped or still running; 42.5 min" in text
    assert "3 new arm results" in text and "--experiments=stages` — started 2026-12-01 09:00 UTC, 61.4 min" in text
    assert "only rewrote" not in text


def test_fraction_subsets_are_nested_and_keep_fold0(smoke):
    work, _, _ = smoke
    kit = ablation.Kit(ablation.parse_args(ablation.AblationConfig, [f"--workdir={work}", "--preset=tiny",
                                                                     "--n_folds=3", "--workers=1"]))
    kit.build_data()
    folds = pd.read_csv(kit.folds, dtype={"id": str})
    fold0 = set(folds.loc[folds["fold"] == 0, "id"])
    a = set(pd.read_csv(kit.subset("frac0.3", 0, kit.folds), dtype={"id": str})["id"])
    b = set(pd.read_csv(kit.subset("frac0.6", 0, kit.folds), dtype={"id": str})["id"])
    assert fold0 <= a <= b and len(b) > len(a)


def test_bad_experiment_name_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        ablation.main([f"--workdir={tmp_path}", "--experiments=stages,backbones"])


def test_a_relative_workdir_is_made_absolute(tmp_path, monkeypatch):
    # the stages join a relative --name under outputs/<stage>/: run paths must be absolute to stay in the workdir
    monkeypatch.chdir(tmp_path)
    kit = ablation.Kit(ablation.parse_args(ablation.AblationConfig, ["--workdir=rel/abl", "--preset=tiny"]))
    assert kit.work == tmp_path / "rel" / "abl" and kit.work.is_dir()


def test_paired_bootstrap_auroc_matches_sklearn_and_cancels_what_arms_share(tmp_path):
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(1)
    n, labels = 150, list(ablation_report.LABELS)
    y = (rng.random((n, len(labels))) < 0.3).astype(int)
    p = np.round(y * 0.3 + rng.random(y.shape), 1)  # rounded: ties, which must count half as in sklearn
    ident = np.arange(n)[None, :]
    want = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(len(labels))])
    assert ablation_report.boot_macro_auroc(y, p, ident)[0] == pytest.approx(want, abs=1e-12)

    ids = [f"t{k:03d}" for k in range(n)]
    sol = tmp_path / "solution.csv"
    pd.DataFrame(y, columns=labels).assign(id=ids).to_csv(sol, index=False)

    def arm(name, probs, seed=0):
        sub = tmp_path / f"{name}.csv"
        pd.DataFrame(probs, columns=labels).assign(id=ids).sample(frac=1, random_state=0).to_csv(sub, index=False)
        return [{"seed": seed, "submission": str(sub), "solution": str(sol), "test_auroc": 0.0}]

    a, b = arm("a", p), arm("b", p + 0.001)  # same ranking: a difference with no noise at all
    assert ablation_report.paired_sd([(a, 1.0), (b, -1.0)]) == pytest.approx(0.0, abs=1e-12)
    c = arm("c", rng.random(y.shape))
    sd = ablation_report.paired_sd([(a, 1.0), (c, -1.0)])
    assert 0.0 < sd < 0.1
    assert ablation_report.paired_sd([(a, 1.0), (arm("d", p, seed=5), -1.0)]) is None  # no seed in common

    def shift_arm(name, p_in, p_out):  # scored on a one-setting test (here: the same labels) and on the diverse one
        inside = arm(f"{name}_in", p_in)[0]["submission"]
        return [{**arm(f"{name}_out", p_out)[0], "gap": 0.1, "in_dist_submission": inside,
                 "in_dist_solution": str(sol)}]

    g1, g2 = shift_arm("g1", p, p), shift_arm("g2", p + 0.001, p + 0.002)
    assert ablation_report.gap_contrast_noise(g1, g2) == pytest.approx(0.0, abs=1e-12)  # same rankings on both test sets
    g3 = shift_arm("g3", rng.random(y.shape), rng.random(y.shape))
    ood = ablation_report.paired_sd([(g1, 1.0), (g3, -1.0)])
    assert ablation_report.gap_contrast_noise(g1, g3) > ood > 0.0  # the one-setting test set's noise adds to the diverse one


def test_report_sentences_follow_their_numbers():
    """The two sentences that once stated a conclusion whatever the numbers now say what the numbers decide."""
    few = ablation_report.rectified_sentence(0.87, 0.06)
    assert "87% of the competition photos and 6% of the Stage I scans" in few and "mostly from crops" in few
    alike = ablation_report.rectified_sentence(0.80, 0.75)
    assert "framed alike" in alike and "crops" not in alike
    reverse = ablation_report.rectified_sentence(0.30, 0.90)
    assert "other 70% of the photos" in reverse
    better = ablation_report.stronger_start_sentence(0.728, 0.821)
    assert "scores higher overall" in better and "0.821 vs 0.728" in better and "better start" in better
    worse = ablation_report.stronger_start_sentence(0.80, 0.79)
    assert "does not score higher" in worse and "0.790 vs 0.800" in worse
    assert ablation_report.stronger_start_sentence(None, 0.8) == ""
