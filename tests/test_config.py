"""The config helper, path resolution, the small utilities, and the README's set-up promise."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src import config, utils
from src.config import REPO, parse_args


@dataclasses.dataclass
class Demo:
    lr: float = 1e-4  # learning rate
    epochs: int = 3  # passes over the data
    amp: bool = False  # mixed precision
    size: tuple[int, ...] = (256, 512)  # H W
    name: str | None = None  # run name, a comment that goes on
    # over two lines
    # and a third
    out: Path = Path("x")  # output folder
    tags: tuple[str, ...] = ()  # free-text tags


def test_parse_args_types_and_forms():
    c = parse_args(Demo, ["--lr=3e-4", "--epochs", "7", "--amp", "--size=128,64", "--name=none", "--out=/tmp/a"])
    assert c == Demo(lr=3e-4, epochs=7, amp=True, size=(128, 64), name=None, out=Path("/tmp/a"))
    assert parse_args(Demo, ["--amp=false"]).amp is False
    assert parse_args(Demo, ["--size", "32 16"]).size == (32, 16)


def test_unknown_key_is_an_error_with_suggestion():
    with pytest.raises(SystemExit, match=r"unknown option --epoch .*--epochs"):
        parse_args(Demo, ["--epoch=3"])
    with pytest.raises(SystemExit, match="cannot read"):
        parse_args(Demo, ["--epochs=three"])
    with pytest.raises(SystemExit, match="unexpected argument"):
        parse_args(Demo, ["stray"])


def test_help_lists_every_field_with_its_comment(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(Demo, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(Demo):
        assert f"--{f.name}=" in out
    assert "learning rate" in out and "passes over the data" in out
    assert "run name, a comment that goes on over two lines and a third" in out  # continuation lines are kept
    assert "] H W\n" in out  # and only where they follow the field


def test_config_dict_round_trip():
    c = Demo(size=(1, 2), out=Path("p"), tags=("a b", "c,d"))  # list items are kept whole
    assert config.config_from_dict(Demo, config.config_dict(c)) == c
    with pytest.raises(ValueError, match="unknown keys"):
        config.config_from_dict(Demo, {"bogus": 1})


def _recipe(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_recipe_gives_defaults_that_the_command_line_overrides(tmp_path):
    from src.train import TrainConfig
    req = ["--cache=c", "--train_csv=t.csv", "--folds_csv=f.csv"]
    base = _recipe(tmp_path, "base", "fit:\n  lr: 2e-3\n  aug: none\n  epochs: 9\n"
                   "train:\n  epochs: 4\n  threshold: youden\npretrain:\n  epochs: 50\n"
                   "preprocess:\n  size: [48, 192]\n")
    c = parse_args(TrainConfig, [f"--recipe={base}", *req])
    assert (c.lr, c.aug, c.epochs, c.threshold) == (2e-3, "none", 4, "youden")  # YAML's string 2e-3 is a float here
    assert c.arch == TrainConfig.__dataclass_fields__["arch"].default  # what the recipe leaves alone keeps its default
    assert parse_args(TrainConfig, [*req, "--lr=5e-4", "--recipe", base]).lr == 5e-4  # the command line wins
    # files apply in order, each whole: a later file's `fit` beats an earlier file's `train`
    over = _recipe(tmp_path, "over", "fit:\n  epochs: 1\n")
    assert parse_args(TrainConfig, [f"--recipe={base},{over}", *req]).epochs == 1
    # top-level keys are the stage's own options (the form of a run's config.yaml), and fill required ones
    flat = _recipe(tmp_path, "flat", "cache: c\ntrain_csv: t.csv\nfolds_csv: f.csv\nseed: 7\n")
    assert parse_args(TrainConfig, [f"--recipe={flat}"]).seed == 7


def test_recipe_errors_name_the_file_and_the_fix(tmp_path):
    from src.train import TrainConfig
    req = ["--cache=c", "--train_csv=t.csv", "--folds_csv=f.csv"]
    cases = {"pretrian:\n  lr: 1e-4\n": r"unknown section 'pretrian' \(did you mean pretrain",
             "pretrain:\n  lrr: 1e-4\n": r"section pretrain \(src.pretrain\) has no option 'lrr' \(did you mean lr",
             # another stage's section is checked too
             "roi_train:\n  imgsize: 320\n": r"section roi_train \(src.roi\) has no option 'imgsize' \(did you mean",
             "strategy: trace\n": r"TrainConfig has no option 'strategy'; put it under .*\(preprocess\)",
             "fit:\n  lr: fast\n": r"--lr: cannot read 'fast' as float",
             "- a list\n": r"a recipe is a mapping"}
    for i, (text, msg) in enumerate(cases.items()):
        path = _recipe(tmp_path, f"bad{i}", text)
        with pytest.raises(SystemExit, match=re.escape(path) + ": " + msg):
            parse_args(TrainConfig, [f"--recipe={path}", *req])
    with pytest.raises(SystemExit, match=r"'nope' is neither a file nor a recipe in .*recipes \(there: .*cpu"):
        parse_args(TrainConfig, ["--recipe=nope", *req])


def test_a_runs_config_yaml_is_a_recipe_that_reruns_it(tmp_path):
    """Resolved configs, written by prepare_run_dir as every training stage does, read back as --recipe give the same
    config, for Stage I and Stage II built from the kit's recipes."""
    from src.pretrain import PretrainConfig
    from src.train import TrainConfig
    for cls, argv in ((PretrainConfig, ["--sources=a:b.csv,c", "--source_weights=0.5,0.5", "--name=x"]),
                      (TrainConfig, ["--cache=c", "--train_csv=t.csv", "--folds_csv=f.csv", "--fold=0,2"])):
        for recipe in ("cpu", "paper", "paper,debug"):
            cfg = parse_args(cls, [f"--recipe={recipe}", *argv, "--lr=3e-4"])
            run = utils.prepare_run_dir(tmp_path / cls.__name__ / recipe, cfg)
            assert parse_args(cls, [f"--recipe={run / 'config.yaml'}"]) == cfg, (cls, recipe)


def test_the_kits_recipes(tmp_path):
    """Every stage that run_all.sh and the kernels give a recipe accepts the kit's recipes; their key values; and the
    debug overlay makes any recipe toy-sized and download-free."""
    from src.engine import FitConfig
    from src.infer import InferConfig
    from src.preprocess import PreprocessConfig
    from src.pretrain import PretrainConfig
    from src.roi import RoiTrainConfig
    from src.train import TrainConfig
    got = {}
    for recipe in ("cpu", "paper", "cpu,debug", "paper,debug"):
        for cls in (PreprocessConfig, RoiTrainConfig, PretrainConfig, TrainConfig, InferConfig):
            got[recipe, cls.__name__] = config.recipe_defaults(cls, recipe)
    pick = lambda r, c, *keys: tuple(got[r, c][k] for k in keys)  # noqa: E731
    assert pick("cpu", "PreprocessConfig", "strategy", "size") == ("trace", (96, 384))
    assert pick("cpu", "PretrainConfig", "arch", "lr", "epochs", "aug", "pretrained") == \
        ("ecgka_tracenet", 2e-3, 6, "none", "")
    assert pick("cpu", "TrainConfig", "lr", "epochs", "aug") == (2e-4, 4, "none")
    assert pick("cpu", "RoiTrainConfig", "epochs") == (0,)  # run_all.sh skips the detector
    assert pick("paper", "PreprocessConfig", "strategy", "size") == ("roi_clahe", (512, 768))
    assert pick("paper", "PretrainConfig", "arch", "lr", "epochs", "aug", "pretrained") == \
        ("convnext_base", 1e-4, 50, "medium", "hub")
    assert pick("paper", "TrainConfig", "epochs", "pretrained") == (30, "")  # Stage II starts from Stage I (--init)
    assert got["paper", "InferConfig"]["vote"] == "hard_tiebreak"
    for recipe in ("cpu,debug", "paper,debug"):
        assert got[recipe, "PreprocessConfig"]["size"] == (48, 192)
        for stage in ("PretrainConfig", "TrainConfig"):
            assert pick(recipe, stage, "arch", "pretrained", "epochs", "batch_size") == ("ecgka_tracenet", "", 1, 8)
    assert got["paper,debug", "PreprocessConfig"]["strategy"] == "roi_clahe"  # the paper's steps, at toy size
    assert got["paper,debug", "TrainConfig"]["aug"] == "medium"
    assert set(config.recipe_sections()["fit"][2]) == {f.name for f in dataclasses.fields(FitConfig)}


def test_config_cli_prints_what_a_recipe_gives_a_stage(capsys, tmp_path):
    assert config.main(["cpu,debug", "preprocess.size"]) == "48,192"
    assert config.main(["paper", "roi_train.epochs"]) == "30"
    text = config.main(["paper", "pretrain"])
    assert "arch: convnext_base" in text and "pretrained: hub" in text and "sources" not in text  # required: no value
    with pytest.raises(SystemExit, match=r"no stage reads section 'trian' \(did you mean train"):
        config.main(["cpu", "trian.lr"])
    with pytest.raises(SystemExit) as e:
        parse_args(Demo, [f"--recipe={_recipe(tmp_path, 'demo', 'epochs: 11')}", "--help"])
    assert e.value.code == 0
    assert "--epochs=11 " in capsys.readouterr().out  # --help shows the recipe's defaults


def test_paths_local_and_simulated_kaggle(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("ECGKA_KAGGLE_ROOT", raising=False)
    p = config.paths()
    assert p.input == REPO / "input" and p.outputs == REPO / "outputs"
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path))
    p = config.paths()
    assert p.outputs == tmp_path / "working" / "outputs"
    assert p.read_inputs == (tmp_path / "working" / "input", tmp_path / "input")
    (tmp_path / "input" / "some-set").mkdir(parents=True)
    assert config.find_input("some-set") == tmp_path / "input" / "some-set"
    with pytest.raises(FileNotFoundError, match="make_data"):
        config.find_input("missing-set")


def test_kaggle_nested_mounts_are_found(monkeypatch, tmp_path):
    """Kaggle mounts sources at /kaggle/input/<slug> or one/two folders deeper (competitions/<slug>,
    datasets/<owner>/<slug>); a slug and a glob find both, the direct mount first."""
    monkeypatch.setenv("ECGKA_KAGGLE_ROOT", str(tmp_path))
    comp = tmp_path / "input" / "competitions" / "some-comp"
    (comp / "test").mkdir(parents=True)
    assert config.find_input("some-comp") == comp
    assert config.find_input("some-comp/test") == comp / "test"
    nb = tmp_path / "input" / "notebooks" / "me" / "stage2-b" / "outputs" / "train" / "stage2"
    nb.mkdir(parents=True)
    direct = tmp_path / "input" / "stage2-a" / "outputs" / "train" / "stage2"
    direct.mkdir(parents=True)
    assert config.find_inputs("*/outputs/train/stage2") == [direct, nb]
    assert config.find_inputs("nothing-*/x") == []
    with pytest.raises(FileNotFoundError, match="competitions|\\*"):
        config.find_input("other-comp")
    monkeypatch.delenv("ECGKA_KAGGLE_ROOT")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    with pytest.raises(FileNotFoundError):  # locally, nothing is searched below the input roots
        config.find_input("competitions-only-on-kaggle")


def test_temp_target_names_what_a_killed_write_left():
    with utils.atomic_path(Path("/tmp") / "a.b.png") as tmp:
        assert utils.temp_target(tmp.name) == "a.b.png"
    assert utils.temp_target("a.b.png") is None and utils.temp_target(".hidden") is None


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    utils.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with utils.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_imread_round_trip_and_clear_errors(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    utils.imwrite(tmp_path / "x.png", img)
    assert np.array_equal(utils.imread(tmp_path / "x.png"), img)
    utils.imwrite(tmp_path / "y.jpg", img, quality=90)
    data = (tmp_path / "y.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    png = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) - 20])
    for name in ("cut.jpg", "junk.png", "cut.png", "absent.png"):
        with pytest.raises(utils.ImageReadError, match=re.escape(name)):
            utils.imread(tmp_path / name)


def test_parallel_map_matches_serial():
    serial = sorted(utils.parallel_map(abs, range(-20, 20), workers=1))
    parallel = sorted(utils.parallel_map(abs, range(-20, 20), workers=2))
    assert serial == parallel == sorted(abs(i) for i in range(-20, 20))


def test_prepare_run_dir(tmp_path):
    d = utils.prepare_run_dir(tmp_path / "run", Demo())
    assert "lr: 0.0001" in (d / "config.yaml").read_text()
    assert re.match(r"^([0-9a-f]{40}|unknown)", (d / "git.txt").read_text())


def _readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    return [c for c in (line.split("#")[0].strip() for line in block.splitlines()) if c]


def test_readme_first_commands_are_the_ones_ci_and_run_all_use():
    cmds = _readme_commands()
    assert cmds[:2] == ["./run_all.sh", "./run_all.sh test"]
    ci = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [cmds[1]]
    script = (REPO / "run_all.sh").read_text()
    assert re.search(r'if \[\[ "\$\{1:-\}" == "test" \]\]', script)
    assert "-m pytest" in script and "setup_venv" in script


def test_stage_help_runs_for_every_stage():
    """Every `python -m src.<stage> --help` prints its options (imports work, config has comments)."""
    stages = [p.stem for p in (REPO / "src").glob("*.py")
              if "parse_args(" in p.read_text() and p.stem not in ("config",)]
    assert stages
    for s in stages:
        r = subprocess.run([sys.executable, "-m", f"src.{s}", "--help"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (s, r.stderr[-2000:])
        assert "--" in r.stdout, s


def test_parallel_work_after_opencv_threads_does_not_hang(tmp_path):
    """Forking while OpenCV's idle worker threads exist used to hang the children for ever (in cv2.setNumThreads);
    run in a subprocess so a regression fails on the timeout instead of hanging the suite."""
    import signal
    import subprocess
    import sys
    script = (
        "import time, numpy as np, cv2\n"
        "from src.utils import parallel_map\n"
        "img = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), np.uint8)\n"
        "for _ in range(3): cv2.GaussianBlur(cv2.resize(img, (1200, 900)), (5, 5), 0)\n"
        "time.sleep(2)  # the pool threads go from spinning to waiting on a condition variable\n"
        "print(sorted(parallel_map(abs, [-1, -2, -3, -4], workers=2)), cv2.getNumThreads())\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung pool workers too
        proc.communicate()
        pytest.fail("parallel map after OpenCV use hung (forked workers stuck in cv2)")
    assert proc.returncode == 0, err[-2000:]
    assert out.split("]")[0] == "[1, 2, 3, 4"
