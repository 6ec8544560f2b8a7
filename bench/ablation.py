"""Ablations of the kit's recipe (issue 9): which pieces earn their place, measured on data the kit makes.

    python -m bench.ablation --preset=cpu --seeds=0                    # all seven, 2 cores: ~3.5 h (3 seeds ~5 h)
    python -m bench.ablation --preset=cpu --experiments=vote,stages --seeds=0,1,2
    python -m bench.ablation --preset=cpu --budget=0.5                 # half the epochs and images of the preset
    HF_HUB_OFFLINE=0 python -m bench.ablation --preset=full --seeds=0,1,2 --workdir=outputs/ablation-full  # GPU
    python -m bench.ablation --preset=tiny --workdir=/tmp/abl --report=/tmp/abl/ablation.md  # smoke-test size

Recipe per preset: the kit's recipes (src/config.py "Recipes"), passed to every stage as --recipe, with the preset's
and AblationConfig's settings on top. tiny (recipes cpu + debug) and cpu follow recipes/cpu.yaml: trace maps, the
kit's small ecgka_tracenet from random weights, lr 2e-3 (Stage I) / 2e-4 (Stage II), no augmentation; full follows
recipes/paper.yaml: roi_clahe, ConvNeXt-Base from ImageNet weights, lr 1e-4, medium augmentation. Every arm trains with
the recipe's augmentation, whatever its strategy (--aug sets another for all).

Experiments (--experiments, any subset, in this order):
  backbone    the kit's ecgka_tracenet vs ConvNeXt vs ResNet vs a transformer (pvt_v2, a pyramid ViT: it takes any
              input size, whereas src.model.create_model cannot pass timm's img_size to a plain ViT/DeiT/Swin), each
              Stage I -> Stage II on the main strategy's caches
  stages      single-stage (random init) vs Stage I on scans -> Stage II vs Stage I on scans + extra photo-like images;
              plus a control: single-stage given Stage I's lr and images-seen (is the gain knowledge or compute?)
  preprocess  raw vs roi_clahe vs full (rectified) vs trace, each the whole Stage I -> Stage II pipeline with caches
              built by that strategy (as the paper's Table 7 compares them); everything else the same
  fraction    Stage II on 1/5/20/100 % of the target training images, with and without Stage I
  vote        hard vs hard with ties broken by mean probability vs soft vs rank vote over the same five fold models
              (src.infer --vote)
  shift       Stage II on photos of ONE page setting (3x4, red grid, no artefacts), tested on the same setting and on
              the diverse competition test set; without and with Stage I on diverse scans
  ceiling     the labels learned from the synthetic *signals* by a small 1D CNN (bench/ceiling.py), at full
              resolution and at what a page image keeps: the upper bound the image route is measured against

Protocol: one synthetic data build (src.make_data) under <workdir>/data, one folds.csv, one preprocessed cache per
(image set, strategy), one Stage I checkpoint per (variant, arch, strategy) trained with seed 0; Stage II seeds vary
(--seeds). To fit a CPU, every arm except `vote` trains fold 0 only (folds 1-4 train, fold 0 validates) and is scored
on the hidden test set (solution.csv) with that single model's probabilities (infer --vote=soft over one fold). `vote`
trains all folds of the Stage I -> Stage II run; its fold 0 is the `stages` arm's, reused. Everything goes through
the stages' own `main(argv)` (the exact command lines are appended to <workdir>/commands.sh) and lands under
--workdir; an arm whose result JSON exists is not run again, so an interrupted ablation resumes. That also means a
work folder keeps the data, runs and results of the preset and recipe it was made with: after changing either, use a
fresh --workdir. reports/ablation.md is rewritten after every experiment, so results are readable as they come out.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from bench import ceiling
from src import config as kit_config
from src import folds, infer, make_data, preprocess, pretrain, score, train
from src.compose import ImageJob
from src.config import LABELS, parse_args, paths
from src.make_data import patient_signal
from src.render import RenderParams
from src.run import RunFolder
from src.utils import parallel_map, write_csv, write_json

from bench.ablation_report import EXPERIMENTS, bootstrap_sd, write_report

# Data sizes per preset, and the recipe (recipes/<name>.yaml, a comma list applied in order) that gives the training
# settings: the main strategy and size (preprocess), arch, lr, epochs, batch and aug (pretrain = Stage I, train =
# Stage II). A preset's `size` or `epochs1`/`epochs2` replace the recipe's. `data` is the src.make_data preset the
# counts override. tiny: the smoke test (seconds per arm); cpu: a 2-core box, run_all.sh's CPU recipe at a smaller
# data size and 8 Stage I epochs (~3.5 h for one seed, mostly the eight Stage I runs); full: paper-like, GPU only.
# ceiling_n's first size is a Stage II fold's training part (4/5 of n_train), so the signal ceiling is read at the image
# arms' data size.
PRESETS = {
    "tiny": dict(recipe="cpu,debug", data="tiny", n_train=25, n_test=20, n_scans=24, n_extra=12, n_shift=12,
                 n_shift_test=16, photo_hw=(270, 480), scan_hw=(340, 440), size=(32, 128), workers=1,
                 backbones=("ecgka_tracenet", "convnext_atto"), min_train=4, ceiling_n=(40,), ceiling_epochs=1),
    "cpu": dict(recipe="cpu", data="demo", n_train=500, n_test=200, n_scans=2000, n_extra=1000, n_shift=300,
                n_shift_test=200, photo_hw=(544, 960), scan_hw=(680, 880), epochs1=8, workers=2,
                backbones=("ecgka_tracenet", "convnext_atto", "resnet18", "pvt_v2_b0"), min_train=8,
                ceiling_n=(400, 2000), ceiling_epochs=10),
    "full": dict(recipe="paper", data="full", n_train=15000, n_test=3200, n_scans=30000, n_extra=10000, n_shift=5000,
                 n_shift_test=1000, photo_hw=(1900, 3460), scan_hw=(1700, 2200), workers=8,
                 backbones=("convnext_base", "resnet50", "pvt_v2_b2"), min_train=32, ceiling_n=(12000,),
                 ceiling_epochs=20),
}
GEN_CODE = {"extra": 11, "shift_train": 12, "shift_test": 13}  # random streams apart from make_data's (codes 1-4)


@dataclasses.dataclass
class AblationConfig:
    """Ablation runner (see the module docstring for the experiments and the protocol)."""
    experiments: tuple[str, ...] = EXPERIMENTS  # comma list of backbone,stages,preprocess,fraction,vote,shift
    seeds: tuple[int, ...] = (0,)  # Stage II seeds per arm; tables give mean ± sd over them
    preset: str = "cpu"  # tiny | cpu | full: data sizes, image size, epochs (the fields below override)
    budget: float = 1.0  # scales the preset's epochs and image counts (0.5: half of each; at least 1 epoch)
    workdir: str = ""  # data, caches, runs, results (default: <outputs>/ablation)
    report: str = ""  # markdown report (default: reports/ablation.md in the repository)
    strategy: str = ""  # main preprocessing, of every arm but `preprocess`'s (default: recipe's, trace on CPU)
    arch: str = ""  # the backbone of every non-backbone experiment (default: recipe's, ecgka_tracenet on CPU)
    backbones: tuple[str, ...] = ()  # timm names or ecgka_tracenet, compared in `backbone` (default: preset's)
    lr1: float = -1  # Stage I peak lr (-1: recipe's, 2e-3 on CPU from random weights; the paper's 1e-4 fine-tunes)
    lr2: float = -1  # Stage II peak lr (-1: recipe's, 2e-4 on CPU)
    aug: str = ""  # augmentation of every arm, none | light | medium | strong (empty: the recipe's)
    fractions: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)  # shares of fold 0's training part used in `fraction`
    shift_inits: tuple[str, ...] = ("none", "none-matched", "scans", "scans+extra")  # Stage I variants in `shift`
    n_folds: int = 5  # folds of folds.csv (the `vote` ensemble size; the paper's 5)
    size: tuple[int, ...] = ()  # cache image H W (default: preset's, else recipe's)
    epochs1: int = -1  # Stage I epochs (-1: preset's, else recipe's, x budget)
    epochs2: int = -1  # Stage II epochs (-1: preset's, else recipe's, x budget)
    batch_size: int = -1  # images per step, both stages (-1: recipe's)
    workers: int = -1  # processes for data making / preprocessing / loading (-1: preset's)
    data_seed: int = 0  # seed of the synthetic data build (fixed across arms and seeds)
    bootstrap: int = 200  # test-set bootstrap resamples for each arm's AUROC sd (0: off)


# ----------------------------------------------------------------------------------------------------------------
# Extra image sets the competition build does not make (src.make_data's synthetic patients, src.compose's image job)
# ----------------------------------------------------------------------------------------------------------------
def narrow_params():
    """The single page setting of the `shift` experiment: 3x4 + lead II rhythm strip, red grid, letter, no paper
    artefacts (no creases, stamps, scribbles), default ink and fonts. The camera still varies per photo."""
    return RenderParams(layout="3x4", rhythm=("II",), paper="letter", grid="red", artefacts={})


def _make_image(item: tuple[ImageJob, str, int, int]) -> dict:
    """One image of a set: kind photo (diverse pages, compose.make_image) | narrow (the one `narrow_params` page
    setting, then photographed); the signal is make_data's synthetic patient `index` of stream `code`."""
    job, kind, code, index = item
    if job.done():
        return job.read()["row"]  # resume
    signal, smeta, subtypes = patient_signal(job.seed[0], code, index)
    img, meta = job.draw(signal, smeta["fs"], params=narrow_params() if kind == "narrow" else None)
    row = {"id": Path(job.image).stem, **{k: int(smeta["labels"][k]) for k in LABELS},
           "patient_id": f"{kind}{code}-{index}"}
    job.write(img, meta, {"row": row, "key": {"kind": kind, "seed": job.seed[0], "code": code, "index": index,
                                              "hw": list(job.hw)},
                          "subtypes": subtypes, "params": {"page": meta["params"], "photo": meta["photo"]}})
    return row


def make_image_set(folder: Path, kind: str, code: int, n: int, seed: int, hw, workers: int) -> pd.DataFrame:
    """n photos of `hw` (height, width) in folder/<id>.png (+ .json); returns their label table (id, LABELS,
    patient_id) in index order."""
    items = [(ImageJob(str(folder / f"{kind[0]}{code}_{i:06d}.png"), str(folder / f"{kind[0]}{code}_{i:06d}.json"),
                       (seed, code, i, 1), "photo", tuple(hw)), kind, code, i) for i in range(n)]
    rows = {r["id"]: r for r in parallel_map(_make_image, items, workers=workers, desc=f"{kind} set {folder.name}",
                                              chunksize=2)}
    return pd.DataFrame([rows[Path(job.image).stem] for job, *_ in items], columns=["id", *LABELS, "patient_id"])


# ----------------------------------------------------------------------------------------------------------------
# Running the kit's stages
# ----------------------------------------------------------------------------------------------------------------
class Kit:
    """The stages as called here: each call is logged as a runnable command line, then run in this process."""

    def __init__(self, cfg: AblationConfig):
        self.cfg = cfg
        self.p = resolve_preset(cfg)
        # absolute: the stages resolve a relative --name under their own outputs/<stage>/ folder, so a relative
        # workdir would scatter its runs there (a relative --workdir once sent Stage I to outputs/pretrain/outputs/...)
        self.work = (Path(cfg.workdir) if cfg.workdir else paths().outputs / "ablation").resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.data = self.work / "data"
        self.commands = self.work / "commands.sh"

    # every stage this runner calls, imported by name (what runs is visible to readers and tools)
    STAGES = {"src.make_data": make_data.main, "src.folds": folds.main, "src.preprocess": preprocess.main,
              "src.pretrain": pretrain.main, "src.train": train.main, "src.infer": infer.main, "src.score": score.main,
              "bench.ceiling": ceiling.main}

    def call(self, module: str, argv: list[str]):
        line = f"python -m {module} " + " ".join(shlex.quote(a) for a in argv)
        with open(self.commands, "a") as f:
            f.write(line + "\n")
        print(f"[ablation] {line}", flush=True)
        return self.STAGES[module](argv)

    # ---- data ----
    def build_data(self) -> None:
        p, w = self.p, self.p["workers"]
        if not (self.data / "abl-comp-solution" / "solution.csv").is_file() or \
                not (self.data / "abl-scans" / "labels.csv").is_file():
            self.call("src.make_data", [f"--preset={p['data']}", f"--seed={self.cfg.data_seed}", f"--root={self.data}",
                                        "--name=abl", f"--n_train={p['n_train']}", f"--n_test={p['n_test']}",
                                        f"--n_scans={p['n_scans']}", "--n_roi=2",
                                        "--photo_hw=" + ",".join(map(str, p["photo_hw"])),
                                        "--scan_hw=" + ",".join(map(str, p["scan_hw"])), f"--workers={w}"])
        self.comp = self.data / "abl-comp"
        self.solution = self.data / "abl-comp-solution" / "solution.csv"
        self.scans = self.data / "abl-scans"
        self.folds = self.data / "folds.csv"
        if not self.folds.is_file():
            self.call("src.folds", [f"--train_csv={self.comp / 'train.csv'}", f"--n_folds={self.cfg.n_folds}",
                                    "--seed=42", f"--out={self.folds}"])

    def extra_set(self) -> Path:
        """Stage I's extra source: diverse photo-like pages of other signals (compose.make_image style=photo)."""
        d = self.data / "abl-extra"
        if not (d / "labels.csv").is_file():
            df = make_image_set(d / "images", "photo", GEN_CODE["extra"], self.p["n_extra"], self.cfg.data_seed,
                                self.p["photo_hw"], self.p["workers"])
            write_csv(d / "labels.csv", df)
        return d

    def shift_set(self) -> Path:
        """A competition folder whose train and test photos all have the one `narrow_params` page setting."""
        d = self.data / "abl-narrow-comp"
        sol = self.data / "abl-narrow-comp-solution" / "solution.csv"
        if not sol.is_file():
            tr = make_image_set(d / "train", "narrow", GEN_CODE["shift_train"], self.p["n_shift"], self.cfg.data_seed,
                                self.p["photo_hw"], self.p["workers"])
            te = make_image_set(d / "test", "narrow", GEN_CODE["shift_test"], self.p["n_shift_test"],
                                self.cfg.data_seed, self.p["photo_hw"], self.p["workers"])
            write_csv(d / "train.csv", tr)
            write_csv(d / "sample_submission.csv", te[["id"]].assign(**{k: 0.5 for k in LABELS}))
            write_csv(sol, te[["id", *LABELS]])
        if not (self.data / "narrow-folds.csv").is_file():
            self.call("src.folds", [f"--train_csv={d / 'train.csv'}", f"--n_folds={self.cfg.n_folds}",
                                    "--seed=42", f"--out={self.data / 'narrow-folds.csv'}"])
        return d

    # ---- preprocessing ----
    def cache(self, what: str, src: Path, strategy: str) -> Path:
        """One cache per (image set, strategy). No YOLO weights: roi_clahe, and full/trace where no page outline is
        found, crop with src.roi's OpenCV detector."""
        size = self.p["size"]
        dst = self.work / "cache" / f"{what}-{strategy}-{size[0]}x{size[1]}"
        if not (dst / "index.csv").is_file():
            self.call("src.preprocess", [f"--recipe={self.p['recipe']}", f"--src={src}", f"--dst={dst}",
                                         f"--strategy={strategy}", f"--size={size[0]},{size[1]}",
                                         f"--workers={self.p['workers']}"])
        return dst

    # ---- training ----
    def fit_args(self, stage: int, arch: str, seed: int, epochs: int | None = None) -> list[str]:
        """The recipe's settings for Stage `stage` (1: src.pretrain, 2: src.train) as the preset resolved them (its
        lr, not the other stage's: the compute-matched arm trains Stage II with Stage I's); `epochs` overrides the
        preset's count."""
        w = 0 if self.p["workers"] <= 1 else self.p["workers"]
        return [f"--recipe={self.p['recipe']}", f"--arch={arch}", f"--epochs={epochs or self.p[f'epochs{stage}']}",
                f"--lr={self.p[f'lr{stage}']:g}", f"--aug={self.p['aug']}", f"--batch_size={self.p['batch']}",
                f"--seed={seed}", f"--workers={w}", "--resume"]

    def stage1(self, variant: str, arch: str, strategy: str) -> Path:
        """Stage I checkpoint for `scans` or `scans+extra` on `strategy` caches (seed 0, shared by every arm and seed
        that uses it)."""
        sources = [f"{self.cache('scans', self.scans / 'images', strategy)}:{self.scans / 'labels.csv'}"]
        if variant == "scans+extra":
            extra = self.extra_set()
            sources.append(f"{self.cache('extra', extra / 'images', strategy)}:{extra / 'labels.csv'}")
        elif variant != "scans":
            raise ValueError(f"unknown Stage I variant {variant!r}")
        # run_dir() joins the name under outputs/pretrain/; an absolute name keeps the run inside the workdir
        out = self.work / "runs" / "pretrain" / f"{arch}-{strategy}-{variant}"
        self.call("src.pretrain", [f"--sources={','.join(sources)}", f"--name={out}",
                                   *self.fit_args(1, arch, 0)])
        return RunFolder(out).best

    def matched_epochs(self, n_photos: int | None = None) -> int:
        """Epochs over a fold's training photos (of n_photos, default the competition's) that cost as many images as
        Stage I on the scans: a from-scratch model given Stage I's compute and lr, but on the target data instead of
        the scans."""
        fold_train = (n_photos or self.p["n_train"]) * (self.cfg.n_folds - 1) / self.cfg.n_folds
        return max(1, math.ceil(self.p["epochs1"] * self.p["n_scans"] / fold_train))

    def stage2(self, *, arch: str, strategy: str, init: str, data: str, seed: int, fold: str = "0",
               comp: Path | None = None, folds_csv: Path | None = None) -> Path:
        """A Stage II run named by what defines it, so experiments that need the same run share it. init `none`
        starts from random weights with the Stage II recipe; `none-matched` from random weights with Stage I's lr for
        matched_epochs(); otherwise from the Stage I checkpoint of that variant."""
        comp = comp or self.comp
        folds_csv = folds_csv or self.folds
        cache = self.cache(comp.name, comp / "train.csv", strategy)
        train_csv = comp / "train.csv" if data in ("all", "narrow") else self.subset(data, seed, folds_csv)
        run = self.work / "runs" / "train" / f"{arch}-{strategy}-{init}-{data}-s{seed}"
        matched = init == "none-matched"
        n_photos = self.p["n_shift"] if data == "narrow" else None
        fit = self.fit_args(1, arch, seed, self.matched_epochs(n_photos)) if matched else \
            self.fit_args(2, arch, seed)
        argv = [f"--cache={cache}", f"--train_csv={train_csv}", f"--folds_csv={folds_csv}", f"--fold={fold}",
                f"--name={run}", *fit]
        if init not in ("none", "none-matched"):
            argv.append(f"--init={self.stage1(init, arch, strategy)}")
        self.call("src.train", argv)
        return run

    def subset(self, data: str, seed: int, folds_csv: Path) -> Path:
        """train.csv with all of fold 0 (the validation part stays whole) and a share of the other folds, drawn per
        seed but nested: the 1 % images are inside the 5 %, which are inside the 20 %."""
        frac = float(data.removeprefix("frac"))
        out = self.work / "subsets" / f"train_{data}_s{seed}.csv"
        if out.is_file():
            return out
        df = pd.read_csv(self.comp / "train.csv", dtype={"id": str, "patient_id": str})
        folds = pd.read_csv(folds_csv, dtype={"id": str})
        df = df.merge(folds, on="id")
        rest = df[df["fold"] != 0]
        order = np.random.default_rng([seed, 77]).permutation(len(rest))
        n = max(self.p["min_train"], int(round(frac * len(rest))))
        keep = pd.concat([df[df["fold"] == 0], rest.iloc[np.sort(order[:n])]])
        write_csv(out, keep.drop(columns="fold"))
        return out

    # ---- evaluation ----
    def evaluate(self, run: Path, vote: str = "soft", folds: str = "0", comp: Path | None = None,
                 solution: Path | None = None, tag: str = "") -> dict:
        comp, solution = comp or self.comp, solution or self.solution
        sub = run / f"sub-{tag or comp.name}-{vote}-f{folds.replace(',', '')}.csv"
        scored = sub.with_suffix(".json")
        w = 0 if self.p["workers"] <= 1 else self.p["workers"]
        if sub.is_file() and scored.is_file():  # the same model on the same test set: scored before (another arm)
            res = json.loads(scored.read_text())
            return self._result(res, sub, solution)
        self.call("src.infer", [f"--run={run}", f"--vote={vote}", f"--folds={folds}", f"--out={sub}",
                                f"--test_dir={comp / 'test'}", f"--sample_submission={comp / 'sample_submission.csv'}",
                                f"--workers={w}"])
        res = self.call("src.score", [f"--submission={sub}", f"--solution={solution}", "--skip_degenerate=true",
                                      f"--out={scored}"])
        return self._result(res, sub, solution)

    def _result(self, res: dict, sub: Path, solution: Path) -> dict:
        out = {"test_auroc": res["overall"]["macro_auroc"], "test_per_class": res["overall"]["auroc"],
               "submission": str(sub), "solution": str(solution)}
        if self.cfg.bootstrap:
            out["test_boot_sd"] = bootstrap_sd(sub, solution, self.cfg.bootstrap)
        return out


def recipe_settings(recipe: str) -> dict:
    """What the ablation reads of a recipe: the main strategy and size, arch, Stage I / II lr and epochs, batch, aug."""
    from src.config import recipe_defaults
    from src.preprocess import PreprocessConfig
    from src.pretrain import PretrainConfig
    from src.train import TrainConfig
    pre, s1, s2 = (recipe_defaults(c, recipe) for c in (PreprocessConfig, PretrainConfig, TrainConfig))
    return dict(strategy=pre["strategy"], size=pre["size"], arch=s1["arch"], lr1=s1["lr"], lr2=s2["lr"],
                epochs1=s1["epochs"], epochs2=s2["epochs"], batch=s1["batch_size"], aug=s1["aug"])


def resolve_preset(cfg: AblationConfig) -> dict:
    if cfg.preset not in PRESETS:
        raise SystemExit(f"--preset={cfg.preset}: choose one of {', '.join(PRESETS)}")
    if cfg.budget <= 0:
        raise SystemExit("--budget must be > 0")
    p = {**recipe_settings(PRESETS[cfg.preset]["recipe"]), **PRESETS[cfg.preset]}
    for k in ("n_train", "n_test", "n_scans", "n_extra", "n_shift", "n_shift_test"):
        p[k] = max(10, int(round(p[k] * cfg.budget)))  # 10: five folds must each hold a couple of images
    p["epochs1"] = cfg.epochs1 if cfg.epochs1 > 0 else max(1, int(round(p["epochs1"] * cfg.budget)))
    p["epochs2"] = cfg.epochs2 if cfg.epochs2 > 0 else max(1, int(round(p["epochs2"] * cfg.budget)))
    if cfg.size:
        if len(cfg.size) != 2:
            raise SystemExit("--size takes H,W")
        p["size"] = tuple(cfg.size)
    p["batch"] = cfg.batch_size if cfg.batch_size > 0 else p["batch"]
    p["workers"] = cfg.workers if cfg.workers >= 0 else p["workers"]
    p["strategy"] = cfg.strategy or p["strategy"]
    p["arch"] = cfg.arch or p["arch"]
    p["backbones"] = tuple(cfg.backbones) or p["backbones"]
    p["lr1"] = cfg.lr1 if cfg.lr1 > 0 else p["lr1"]
    p["lr2"] = cfg.lr2 if cfg.lr2 > 0 else p["lr2"]
    p["aug"] = cfg.aug or p["aug"]
    # checked here: a typo would otherwise fail every arm, one by one, over the whole run
    from src.data import AUG_PRESETS
    from src.preprocess import STRATEGIES
    if p["strategy"] not in STRATEGIES:
        raise SystemExit(f"--strategy={p['strategy']}: choose one of {', '.join(STRATEGIES)}")
    if p["aug"] not in AUG_PRESETS:
        raise SystemExit(f"--aug={p['aug']}: choose one of {', '.join(AUG_PRESETS)}")
    return p


def val_auroc(run: Path, fold: int = 0) -> float | None:
    v = RunFolder(run).fold(fold).metric("best_metric")
    return None if v is None else float(v)


# ----------------------------------------------------------------------------------------------------------------
# Experiments: each yields (arm, seed, function returning the arm's result dict)
# ----------------------------------------------------------------------------------------------------------------
def exp_backbone(kit: Kit, seed: int):
    for arch in kit.p["backbones"]:
        def fn(arch=arch):
            run = kit.stage2(arch=arch, strategy=kit.p["strategy"], init="scans", data="all", seed=seed)
            from src.model import create_model  # the kit's factory: it also knows ecgka_tracenet
            n_par = sum(t.numel() for t in create_model(arch, len(LABELS)).parameters()) / 1e6
            return {**kit.evaluate(run), "val_auroc": val_auroc(run), "params_m": round(n_par, 2)}
        yield arch, fn


def exp_stages(kit: Kit, seed: int):
    for init in ("none", "none-matched", "scans", "scans+extra"):
        def fn(init=init):
            run = kit.stage2(arch=kit.p["arch"], strategy=kit.p["strategy"], init=init, data="all", seed=seed)
            return {**kit.evaluate(run), "val_auroc": val_auroc(run)}
        yield init, fn


def exp_preprocess(kit: Kit, seed: int):
    for strategy in ("raw", "roi_clahe", "full", "trace"):
        def fn(strategy=strategy):
            run = kit.stage2(arch=kit.p["arch"], strategy=strategy, init="scans", data="all", seed=seed)
            return {**kit.evaluate(run), "val_auroc": val_auroc(run)}
        yield strategy, fn


def exp_fraction(kit: Kit, seed: int):
    for frac in kit.cfg.fractions:
        for init in ("none", "scans"):
            def fn(frac=frac, init=init):
                data = "all" if frac >= 1 else f"frac{frac:g}"
                run = kit.stage2(arch=kit.p["arch"], strategy=kit.p["strategy"], init=init, data=data, seed=seed)
                csv = kit.comp / "train.csv" if data == "all" else kit.subset(data, seed, kit.folds)
                folds = pd.read_csv(kit.folds, dtype={"id": str})
                n_train = len(pd.read_csv(csv, dtype={"id": str})) - int((folds["fold"] == 0).sum())
                return {**kit.evaluate(run), "val_auroc": val_auroc(run), "fraction": frac, "init": init,
                        "n_train": int(n_train)}
            yield f"{frac:g}|{init}", fn


def exp_vote(kit: Kit, seed: int):
    def run5():
        return kit.stage2(arch=kit.p["arch"], strategy=kit.p["strategy"], init="scans", data="all", seed=seed,
                          fold="all")
    for vote in ("hard", "hard_tiebreak", "soft", "rank"):
        def fn(vote=vote):
            run = run5()
            return {**kit.evaluate(run, vote=vote, folds="all"), "oof_auroc": oof_auroc(run)}
        yield vote, fn

    def single():
        run = run5()
        return {**kit.evaluate(run, vote="soft", folds="0"), "val_auroc": val_auroc(run)}
    yield "fold 0 alone", single


def oof_auroc(run: Path) -> float | None:
    v = RunFolder(run).metric("macro_auroc")
    return None if v is None else float(v)


def exp_shift(kit: Kit, seed: int):
    narrow = kit.shift_set()
    nsol = kit.data / "abl-narrow-comp-solution" / "solution.csv"

    def result(run: Path, train: str, init: str) -> dict:  # scored on the one-setting test and the diverse test
        ind = kit.evaluate(run, comp=narrow, solution=nsol, tag="narrow")
        ood = kit.evaluate(run)
        return {"train": train, "init": init, "in_dist": ind["test_auroc"], "in_dist_boot_sd": ind.get("test_boot_sd"),
                "in_dist_submission": ind["submission"], "in_dist_solution": ind["solution"],
                "test_auroc": ood["test_auroc"], "test_boot_sd": ood.get("test_boot_sd"),
                "submission": ood["submission"], "solution": ood["solution"],
                "gap": ind["test_auroc"] - ood["test_auroc"], "val_auroc": val_auroc(run)}

    for init in kit.cfg.shift_inits:
        def fn(init=init):
            run = kit.stage2(arch=kit.p["arch"], strategy=kit.p["strategy"], init=init, data="narrow", seed=seed,
                             comp=narrow, folds_csv=kit.data / "narrow-folds.csv")
            return result(run, "one setting", init)
        yield f"one setting|{init}", fn

    def reference():  # the same recipe trained on the diverse competition photos: the gap without a shift
        run = kit.stage2(arch=kit.p["arch"], strategy=kit.p["strategy"], init="scans", data="all", seed=seed)
        return result(run, "diverse", "scans")
    yield "diverse|scans", reference


def exp_ceiling(kit: Kit, seed: int):
    """Signal-level 1D CNN per (view, training size); the first size is a Stage II fold's training part."""
    p = kit.p
    # the ROI crop's width in px over a 10 s page row: the time resolution the image model gets (25 mm/s)
    hz = max(10, round(p["size"][1] / 10))
    for view in ("full:100", f"full:{hz}", f"3x4:{hz}"):
        for n in p["ceiling_n"]:
            def fn(view=view, n=n):
                out = kit.work / "runs" / "ceiling" / f"{view.replace(':', '')}-n{n}-s{seed}.json"
                rows = kit.call("bench.ceiling", [f"--views={view}", f"--n_train={n}",
                                                  f"--n_test={max(300, p['n_test'])}",  # signals are cheap
                                                  f"--epochs={p['ceiling_epochs']}", f"--seed={seed}",
                                                  f"--workers={p['workers']}", f"--out={out}"])
                r = rows[0]
                return {"view": view, "n_train": n, "test_auroc": r["macro_auroc"], "test_per_class": r["per_class"]}
            yield f"{view}|{n}", fn


EXPERIMENT_FNS = {"backbone": exp_backbone, "stages": exp_stages, "preprocess": exp_preprocess,
                  "fraction": exp_fraction, "vote": exp_vote, "shift": exp_shift, "ceiling": exp_ceiling}


def result_path(kit: Kit, exp: str, arm: str, seed: int) -> Path:
    safe = arm.replace("|", "__").replace(" ", "_").replace("+", "-")
    return kit.work / "results" / exp / f"{safe}_s{seed}.json"


def run_arm(kit: Kit, exp: str, arm: str, seed: int, fn) -> dict:
    out = result_path(kit, exp, arm, seed)
    if out.is_file():
        return json.loads(out.read_text())
    t0 = time.time()
    try:
        res = fn()
    except (Exception, SystemExit) as e:  # one broken arm is reported, never kills the others; no JSON: retried
        msg = f"{type(e).__name__}: {e}"
        print(f"[ablation] {exp}/{arm} seed {seed} FAILED: {msg}\n{traceback.format_exc()}", file=sys.stderr)
        return {"exp": exp, "arm": arm, "seed": seed, "error": msg[:300]}
    res = {"exp": exp, "arm": arm, "seed": seed, **res, "seconds": round(time.time() - t0, 1)}
    write_json(out, _clean(res))
    return res


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and math.isnan(o):
        return None
    return o


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(AblationConfig, argv)
    bad = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if bad:
        raise SystemExit(f"--experiments: unknown {bad}; choose from {','.join(EXPERIMENTS)}")
    t0 = time.time()
    kit = Kit(cfg)
    report = Path(cfg.report) if cfg.report else kit_config.REPO / "reports" / "ablation.md"
    kit.build_data()
    failures: list[dict] = []
    log = kit.work / "invocations.jsonl"
    inv = {"id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}-{os.getpid()}", "argv": argv,
           "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))}
    new_arms = 0

    def log_event(event: str) -> None:  # appended, never rewritten: concurrent runs both land, a killed run stays
        with open(log, "a") as f:
            f.write(json.dumps({**inv, "event": event, "wall_min": round((time.time() - t0) / 60, 1),
                                "new_arms": new_arms}) + "\n")

    log_event("start")
    for exp in dict.fromkeys(cfg.experiments):  # in the order given: put what matters most first on a short budget
        for seed in cfg.seeds:
            try:
                arms = list(EXPERIMENT_FNS[exp](kit, seed))
            except (Exception, SystemExit) as e:  # e.g. the shift set could not be made: report it, go on
                failures.append({"exp": exp, "arm": "(setup)", "seed": seed, "error": f"{type(e).__name__}: {e}"})
                print(f"[ablation] {exp} setup FAILED: {e}\n{traceback.format_exc()}", file=sys.stderr)
                continue
            for arm, fn in arms:
                fresh = not result_path(kit, exp, arm, seed).is_file()
                r = run_arm(kit, exp, arm, seed, fn)
                if "error" in r:
                    failures.append(r)
                else:
                    new_arms += fresh
                    print(f"[ablation] {exp} / {arm} / seed {seed}: hidden-test macro-AUROC {r['test_auroc']:.4f}",
                          flush=True)
        log_event("progress")
        write_report(kit, report, failures, time.time() - t0, argv)
    log_event("end")
    write_report(kit, report, failures, time.time() - t0, argv)
    print(f"[ablation] report -> {report} ({(time.time() - t0) / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
