"""The run folder: the one owner of what a training stage writes and what inference, explanations and the ablation
read back, and the fold model rebuilt from what its checkpoint says.

    <run>/                  a Stage I run (src.pretrain) or a Stage II run (src.train); a Stage II fold is a run too
      config.yaml git.txt   the resolved stage config and the code's SHA (RunFolder.prepare)
      log.jsonl log.csv learning_curve.png  per-epoch history (RunFolder.write_logs)
      best.pt last.pt       checkpoints (src.engine.fit): best.pt = validated weights for inference, last.pt = resume
      batch_fit.json        the micro-batch the engine chose (src.engine.fit_batch)
      oof.csv               id, [fold], labels, pred_<label>: the best epoch's predictions on the held-out images
      oof_metrics.json      Stage II run: the OOF scores over every finished fold
      thresholds.json       Stage II fold: per-class cut-offs chosen on its OOF predictions (src.train)
      done.json             finished: a finished run or fold is skipped when the stage runs again
      preprocess.yaml roi.pt  Stage II run: the cache's preprocessing (src.preprocess.export_config), for test images
      data.json             Stage I run: the sources and their shares
      fold<k>/              Stage II: one run folder per fold

A checkpoint's `input` says how to feed its model: {"route": image | signal, "size": [H, W] (signal: [12, n]), "mean",
"std", "caches": [cache folders], signal route also "fs"} (input_record); checkpoints without "route" are image
models. Checkpoints written before this module said "cache" (one folder) in Stage II; FoldModel reads both.
"""
from __future__ import annotations

import dataclasses
import filecmp
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import find_input, find_inputs, paths
from .model import is_signal_model, norm_tensors
from .utils import atomic_path, prepare_run_dir, torch_save, write_csv, write_json, write_text


class RunFolder:
    """One run folder (see the module docstring); every file name of the layout is a property here."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunFolder) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path) -> RunFolder:
        """The Stage II run a fold checkpoint belongs to: <run>/fold<k>/best.pt -> <run>."""
        return cls(Path(ckpt).parent.parent)

    def fold(self, k: int) -> RunFolder:
        return RunFolder(self.path / f"fold{k}")

    # files of the layout
    config_yaml = property(lambda self: self.path / "config.yaml")
    best = property(lambda self: self.path / "best.pt")
    last = property(lambda self: self.path / "last.pt")
    batch_fit = property(lambda self: self.path / "batch_fit.json")
    oof = property(lambda self: self.path / "oof.csv")
    oof_metrics = property(lambda self: self.path / "oof_metrics.json")
    thresholds = property(lambda self: self.path / "thresholds.json")
    done = property(lambda self: self.path / "done.json")
    preprocess_yaml = property(lambda self: self.path / "preprocess.yaml")
    data_json = property(lambda self: self.path / "data.json")

    # writing
    def prepare(self, cfg) -> None:
        """config.yaml (the resolved config) and git.txt (SHA + dirty flag); creates the folder."""
        prepare_run_dir(self.path, cfg)

    def check_resumable(self, resume: bool) -> None:
        """Refuses to silently overwrite an unfinished run (stages call this before touching the folder)."""
        if self.last.exists() and not self.done.exists() and not resume:
            raise SystemExit(f"{self.path} holds an unfinished run (last.pt): pass --resume to continue it, or "
                             f"delete the folder to start again")

    @property
    def finished(self) -> bool:
        return self.done.exists() and self.best.exists()

    def write_done(self, result: dict) -> None:
        write_json(self.done, result)

    def export_preprocess(self, cache: Path) -> None:
        """Copies the cache's preprocess.yaml (and its ROI weights, as roi.pt) here: what infer re-applies."""
        from .preprocess import export_config
        if (cache / "preprocess.yaml").is_file():
            export_config(cache, self.path)
        else:
            print(f"[run] WARNING {cache}/preprocess.yaml missing: infer cannot re-create this preprocessing",
                  file=sys.stderr)

    def write_thresholds(self, record: dict) -> None:
        write_json(self.thresholds, record)

    def save_best(self, common: dict, state: dict, metrics: dict) -> None:
        """best.pt: the validated weights and what rebuilds their model (FoldModel); no optimizer state."""
        torch_save({**common, "model": state, "optimizer": None, "scheduler": None, "scaler": None, "ema": None,
                    "metrics": metrics}, self.best)

    def save_last(self, common: dict, trained: dict, rng: list) -> None:
        """last.pt: `common` plus the state_dict of every object in `trained` (model, optimizer, scheduler, scaler,
        ema, stopper; None stays None) and every rank's RNG state: what an exact resume needs."""
        torch_save({**common, **{k: None if v is None else v.state_dict() for k, v in trained.items()}, "rng": rng},
                   self.last)

    def resume(self, trained: dict) -> dict:
        """Loads last.pt's states into the objects of `trained` (as saved by save_last); returns the checkpoint."""
        from .model import load_checkpoint
        ck = load_checkpoint(self.last)
        for k, obj in trained.items():
            if obj is not None and ck.get(k):
                obj.load_state_dict(ck[k])
        return ck

    def write_oof(self, ids: Sequence[str], extra_cols: dict, labels: Sequence[str], targets: np.ndarray,
                  probs: np.ndarray) -> None:
        """oof.csv: id, extra_cols, labels, pred_<label> (the best epoch's predictions on the held-out images)."""
        pred = pd.DataFrame({"id": list(ids), **extra_cols})
        for j, lb in enumerate(labels):
            pred[lb] = targets[:, j]
        for j, lb in enumerate(labels):
            pred[f"pred_{lb}"] = probs[:, j]
        write_csv(self.oof, pred)

    def write_logs(self, history: list[dict]) -> None:
        """log.jsonl / log.csv / learning_curve.png, rewritten whole from the history (a resume never duplicates)."""
        write_text(self.path / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        write_csv(self.path / "log.csv", pd.DataFrame(history))
        plot_curves(self.path / "learning_curve.png", history)

    def join_oof(self, folds: Sequence[int]) -> pd.DataFrame | None:
        """The finished folds' oof.csv joined into this run's oof.csv (None when no fold is finished)."""
        done = [k for k in folds if self.fold(k).done.exists()]
        if not done:
            return None
        oof = pd.concat([pd.read_csv(self.fold(k).oof, dtype={"id": str}) for k in done], ignore_index=True)
        write_csv(self.oof, oof)
        return oof

    # reading
    def config(self) -> dict:
        import yaml
        if not self.config_yaml.is_file():
            raise SystemExit(f"{self.config_yaml} not found: {self.path} is not a run folder (python -m src.train "
                             f"writes it)")
        return yaml.safe_load(self.config_yaml.read_text()) or {}

    @property
    def route(self) -> str:
        """The run's route (config.yaml; runs from before routes existed are image runs)."""
        return self.config().get("route") or "image"

    def read_thresholds(self, labels: Sequence[str]) -> tuple[np.ndarray, bool]:
        """Per-class thresholds in `labels` order ({"thresholds": {label: t}}); (0.5s, False) when absent."""
        if not self.thresholds.is_file():
            return np.full(len(labels), 0.5), False
        d = json.loads(self.thresholds.read_text())
        per = d.get("thresholds", d)
        return np.array([float(per.get(lb, 0.5)) for lb in labels]), True

    def read_oof(self) -> pd.DataFrame | None:
        return pd.read_csv(self.oof, dtype={"id": str}) if self.oof.is_file() else None

    def metric(self, key: str) -> float | None:
        """A finished run's (fold's) done.json value, or a run's oof_metrics.json value; None when absent."""
        for f in (self.done, self.oof_metrics):
            if f.is_file() and key in (d := json.loads(f.read_text())):
                return d[key]
        return None

    def preprocess_config(self, caches: Sequence[str] = ()):
        """The PreprocessConfig training used: preprocess.yaml here (copied by src.train), else the one of a
        training cache (`caches`, default: config.yaml's cache)."""
        from .preprocess import load_config
        if self.preprocess_yaml.is_file():
            return load_config(self.path)
        if not caches and self.config_yaml.is_file():
            caches = [self.config().get("cache") or ""]
        for c in caches:
            try:
                d = find_input(c) if c else None
            except FileNotFoundError:
                d = None
            if d is not None and (d / "preprocess.yaml").is_file():
                return load_config(d)
        raise SystemExit(f"{self.preprocess_yaml} not found (nor in the training cache {', '.join(caches)!r}): the "
                         f"preprocessing to apply to test images is unknown. Copy the cache's preprocess.yaml there.")

    def fold_checkpoints(self, checkpoint: str = "best.pt") -> dict[int, Path]:
        """{k: fold<k>/<checkpoint>} for every fold folder that has that checkpoint."""
        return {int(d.name[4:]): d / checkpoint for d in sorted(self.path.glob("fold*"))
                if d.name[4:].isdigit() and (d / checkpoint).is_file()}


def plot_curves(path: Path, history: list[dict]) -> None:
    """Loss and validation AUROC per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    a.set(xlabel="epoch", ylabel="masked weighted BCE", title="loss")
    a.legend()
    b.plot(ep, [h["val_macro_auroc"] for h in history], "o-k", label="macro")
    for k in [k for k in history[0] if k.startswith("val_auroc_")]:
        b.plot(ep, [h[k] for h in history], alpha=0.5, label=k.removeprefix("val_auroc_"))
    b.set(xlabel="epoch", ylabel="AUROC", title="validation AUROC")
    b.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Finding run folders and folds
# ----------------------------------------------------------------------------------------------------------------
def resolve_run(spec: str | Path) -> RunFolder:
    """A Stage II run by name (outputs/train/<name>) or path (also under the input roots, e.g. an attached Kaggle
    output such as ecgka-stage2/outputs/train/stage2)."""
    q = paths().outputs / "train" / str(spec)
    if q.is_dir():
        return RunFolder(q)
    try:
        return RunFolder(find_input(spec))
    except FileNotFoundError:
        raise SystemExit(f"run folder {spec} not found (also looked in {q} and the input roots); train it with "
                         f"`python -m src.train`") from None


def resolve_runs(spec: str) -> list[RunFolder]:
    """The run folders of a comma list, each once: a name or path as resolve_run, or a glob such as
    `*/outputs/train/stage2` (every attached Stage II output on Kaggle) that must match at least one folder."""
    runs = []
    for r in (r.strip() for r in str(spec).split(",")):
        if any(c in r for c in "*?["):
            hits = [RunFolder(h) for h in find_inputs(r) if (h / "config.yaml").is_file()]
            if not hits:
                raise SystemExit(f"--run {r}: no run folder matches this pattern (as a path or under the input roots "
                                 f"{', '.join(map(str, paths().read_inputs))}); attach a Stage II output")
            runs += hits
        elif r:
            runs.append(resolve_run(r))
    if not runs:
        raise SystemExit("--run is empty: give a Stage II run folder (or a comma list of them)")
    return list(dict.fromkeys(RunFolder(r.path.resolve()) for r in runs))


def select_folds(spec: str, available: list[int], flag: str = "--fold", where: str = "folds.csv") -> list[int]:
    """'all' | 'k' | 'i,j,..' -> fold numbers, each one checked against `available`."""
    if spec.strip().lower() == "all":
        return available
    try:
        want = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError:
        raise SystemExit(f"{flag}={spec}: expected all, a fold number or a comma list such as 0,1,2,3,4") from None
    bad = [k for k in want if k not in available]
    if bad:
        raise SystemExit(f"{flag}={spec}: folds {bad} not in {where} (has {available})")
    return want


def same_content(a: str | Path, b: str | Path) -> bool:
    return Path(a).is_file() and Path(b).is_file() and filecmp.cmp(a, b, shallow=False)


def gather_folds(runs: Sequence[RunFolder], spec: str, checkpoint: str = "best.pt") -> dict[int, Path]:
    """{k: <run>/fold<k>/<checkpoint>} for the requested folds, gathered over one or more run folders; clear errors
    for folds that have no checkpoint, and for a fold found in two folders unless both hold the same bytes (the
    same output attached twice): then the first is used."""
    found: dict[int, list[Path]] = {}
    for run in runs:
        for k, f in run.fold_checkpoints(checkpoint).items():
            found.setdefault(k, []).append(f)
    where = ", ".join(map(str, runs))
    if not found:
        raise SystemExit(f"{where}: no fold<k>/{checkpoint}; has training finished? (python -m src.train)")
    out = {}
    for k in select_folds(spec, sorted(found), "--folds", f"{where} (fold<k>/{checkpoint})"):
        first, *others = found[k]
        for other in others:
            if not same_content(first, other):
                raise SystemExit(f"fold {k} is in two run folders with different checkpoints: {first} and {other}; "
                                 f"--run may list a fold once: drop one folder from --run, or leave fold {k} out "
                                 f"with --folds")
        out[k] = first
    return out


def shared_preprocess_config(runs: Sequence[RunFolder]):
    """The PreprocessConfig of every run folder, which must be one: its pixel settings (the input size among them)
    and the ROI weights' content agree, since the test images get one preprocessing for every fold."""
    pcfgs = [r.preprocess_config() for r in runs]
    ref = pcfgs[0]
    keys = [f.name for f in dataclasses.fields(ref) if f.name != "roi_weights"]
    for run, p in zip(runs[1:], pcfgs[1:]):
        diff = {k: (getattr(ref, k), getattr(p, k)) for k in keys if getattr(ref, k) != getattr(p, k)}
        if ref.roi_weights != p.roi_weights and not same_content(ref.roi_weights, p.roi_weights):
            diff["roi_weights"] = (ref.roi_weights or "none", p.roi_weights or "none")
        if diff:
            raise SystemExit(f"--run folders {runs[0]} and {run} were trained on differently preprocessed images "
                             f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in diff.items())}); the test images "
                             f"get one preprocessing, so their folds cannot be voted together: infer them separately")
    return ref


# ----------------------------------------------------------------------------------------------------------------
# What a checkpoint says about its input, and the model rebuilt from it
# ----------------------------------------------------------------------------------------------------------------
def input_record(size: Sequence[int], model, caches: Sequence[str | Path]) -> dict:
    """A checkpoint's `input`: its route, input size (image H, W; signal 12, n at "fs"), the backbone's normalisation
    and the caches (signal route: digitised records or signal sources) it was trained on."""
    from .data import SIGNAL_FS
    mean, std = (t.flatten().tolist() for t in norm_tensors(model, "cpu"))
    signal = is_signal_model(model)
    return {"route": "signal" if signal else "image", "size": list(size), "mean": mean, "std": std,
            "caches": [str(c) for c in caches], **({"fs": SIGNAL_FS} if signal else {})}


@dataclasses.dataclass
class FoldModel:
    """A model ready to predict, rebuilt from its checkpoint alone (architecture, labels, weights, input size and
    normalisation) plus the thresholds beside it. `order`: the model's output column of each wanted label."""
    fold: int
    path: Path
    model: object
    arch: str
    labels: list[str]
    norm: tuple  # (mean, std) tensors on the model's device, [1, 3, 1, 1] (images) or [1, 1, 1] (signals)
    order: list[int]
    thresholds: np.ndarray  # [C] in the wanted labels' order
    thresholds_found: bool
    input: dict

    @property
    def size(self) -> tuple[int, int] | None:
        return tuple(self.input["size"]) if self.input.get("size") else None

    @property
    def route(self) -> str:
        """image (preprocessed photos) or signal (digitised photos)."""
        return self.input.get("route", "image")

    @property
    def name(self) -> str:
        """The fold's name in logs and tables: its number, prefixed by its route on the signal route (signal0)."""
        return str(self.fold) if self.route == "image" else f"{self.route}{self.fold}"

    @property
    def caches(self) -> list[str]:
        """The training caches (checkpoints from before `caches` said `cache`)."""
        return list(self.input.get("caches") or ([self.input["cache"]] if self.input.get("cache") else []))

    @property
    def run(self) -> RunFolder:
        return RunFolder.of_checkpoint(self.path)

    def preprocess_config(self):
        """The preprocessing its images had: the run's preprocess.yaml, else its training cache's."""
        return self.run.preprocess_config(self.caches)

    @classmethod
    def load(cls, path: str | Path, fold: int = 0, labels: Sequence[str] | None = None, device="cpu",
             channels_last: bool = True, ckpt: dict | None = None) -> FoldModel:
        """`labels`: the columns wanted, in order (None: the checkpoint's own); a different label set is refused.
        `ckpt`: the checkpoint already read from `path`."""
        import torch
        from .model import create_model, load_checkpoint
        path = Path(path)
        ck = ckpt if ckpt is not None else load_checkpoint(path)
        ck_labels = list(ck["labels"])
        labels = ck_labels if labels is None else list(labels)
        if sorted(ck_labels) != sorted(labels):
            raise SystemExit(f"{path} predicts {ck_labels} but the submission wants {labels}; wrong run or "
                             f"competition?")
        model = create_model(ck["arch"], len(ck_labels), None, drop_rate=0.0)
        model.load_state_dict({key.removeprefix("module."): v for key, v in ck["model"].items()})
        model.eval().to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        info = ck.get("input") or {}
        norm = norm_tensors(model, device)
        if info.get("mean") and info.get("std"):
            norm = tuple(torch.tensor(info[k], device=device).view(t.shape) for k, t in zip(("mean", "std"), norm))
        thr, found = RunFolder(path.parent).read_thresholds(ck_labels)
        order = [ck_labels.index(lb) for lb in labels]
        return cls(fold, path, model, ck["arch"], labels, norm, order, thr[order], found, info)


def load_fold_models(checkpoints: dict[int, Path], labels: Sequence[str] | None, device, channels_last: bool = True
                     ) -> list[FoldModel]:
    """One FoldModel per fold; folds of different architectures are refused, naming both."""
    from .model import load_checkpoint
    out: list[FoldModel] = []
    for k, f in checkpoints.items():
        ck = load_checkpoint(f)
        if out and ck["arch"] != out[0].arch:
            raise SystemExit(f"fold {k} ({f}) is a {ck['arch']} model but fold {out[0].fold} ({out[0].path}) is "
                             f"{out[0].arch}: the folds of one ensemble share an architecture; remove or retrain the "
                             f"odd fold, or leave it out with --folds")
        out.append(FoldModel.load(f, k, labels, device, channels_last, ckpt=ck))
        labels = out[-1].labels
    return out
