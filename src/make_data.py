"""Build the embedded synthetic mini-competition, offline, in the BHF Kaggle layout.

    python -m src.make_data --preset=demo --seed=0          # what ./run_all.sh uses
    python -m src.make_data --preset=tiny --root=/tmp/x     # tests: tens of small images, seconds
    python -m src.make_data --preset=full                   # BHF-sized (~15k/3.2k full-resolution photos), GPU users

Writes under input/ (or --root):
  ecg-synth-comp/            train.csv (id, MI, AF, HYP, CD, STTC, patient_id), train/<id>.png, test/<id>.png,
                             sample_submission.csv — the same format as the real competition folder
  ecg-synth-comp-solution/   solution.csv (id, labels, Usage Public/Private) + meta/<id>.json sidecars; kept outside
                             the competition folder so nothing in training can see test labels
  ecg-synth-scans/           Stage I set: labels.csv + images/<id>.png + .json, scan-like renders of *other* signals
  ecg-synth-roi/             YOLO detection set from photo renders and their free ROI boxes (images/, labels/,
                             dataset.yaml)

Every image comes from its own synthetic patient (signal), drawn from a random stream keyed by (seed, split, index), so
an image never depends on how many others are made and the same seed gives the same dataset. Each image has a JSON
sidecar with that key and every render parameter, enough to regenerate it exactly. Interrupted runs resume: finished
images are read back from their sidecars instead of being drawn again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import synth
from .compose import ImageJob
from .roi import write_yolo_yaml, yolo_label
from .config import LABELS, parse_args, paths
from .utils import parallel_map, write_csv, write_json, write_text

# What each preset makes. `demo` is sized for ./run_all.sh on 2 CPU cores: small photos (the model sees a 96 px high
# trace map anyway), a few hundred training images, and a Stage I set 48x as large, because from random weights the
# scans are where the morphology is learned, and a small set is memorised: a 24-epoch schedule over 4000 scans had
# train loss 0.59 against hold-out 3.5 at epoch 9; 5 epochs over 12000 cost as many steps as 16 over 4000 and did not;
# 6 epochs over 24000 took the hidden test from 0.915 to 0.960 (README "Results").
PRESETS = {
    #        n_train n_test n_scans n_roi  photo (H, W)    scan (H, W)
    "tiny": dict(n_train=40, n_test=20, n_scans=40, n_roi=24, photo_hw=(352, 640), scan_hw=(425, 550)),
    "demo": dict(n_train=500, n_test=200, n_scans=24000, n_roi=160, photo_hw=(544, 960), scan_hw=(680, 880)),
    "full": dict(n_train=15000, n_test=3200, n_scans=30000, n_roi=2000, photo_hw=(1900, 3460),
                 scan_hw=(1700, 2200)),
}
SPLIT_CODE = {"train": 1, "test": 2, "scans": 3, "roi": 4}  # separates the random streams of the four sets


@dataclasses.dataclass
class MakeDataConfig:
    preset: str = "demo"  # tiny | demo | full (sizes above); the n_* / *_hw fields below override it
    seed: int = 0  # dataset seed: same seed, same bytes
    root: str = ""  # where the four folders go (default: the input/ data root)
    name: str = "ecg-synth"  # folder prefix: <name>-comp, <name>-comp-solution, <name>-scans, <name>-roi
    n_train: int = -1  # training photos (-1: preset)
    n_test: int = -1  # test photos (-1: preset)
    n_scans: int = -1  # Stage I scan-like images (-1: preset)
    n_roi: int = -1  # ROI-detector photos (-1: preset)
    photo_hw: tuple[int, ...] = ()  # photo height H, width W, e.g. --photo_hw=544,960 (empty: preset)
    scan_hw: tuple[int, ...] = ()  # scan height H, width W, e.g. --scan_hw=680,880 (empty: preset)
    prevalence: str = ""  # label prevalences, e.g. MI=0.25,AF=0.07 (empty: synth's BHF defaults)
    images_per_patient: int = 1  # >1 puts several photos of one signal in train (shares patient_id)
    public_fraction: float = 0.3  # share of the test set scored on the Public leaderboard
    roi_val_fraction: float = 0.2  # share of the ROI set held out for validation
    workers: int = 0  # processes (0: one per core)

    def resolved(self) -> dict:
        p = dict(PRESETS[self.preset])
        for k in ("n_train", "n_test", "n_scans", "n_roi"):
            if getattr(self, k) >= 0:
                p[k] = getattr(self, k)
        for k in ("photo_hw", "scan_hw"):
            if getattr(self, k):
                p[k] = tuple(getattr(self, k))
        return p


def image_id(seed: int, split: str, index: int) -> str:
    """Opaque, stable ids (like a real competition's): nothing about the label or split leaks through the id."""
    return hashlib.sha1(f"{seed}/{split}/{index}".encode()).hexdigest()[:12]


def _strip_samples(meta: dict) -> dict:
    """Sidecars keep seeds, parameters and boxes; the per-sample pixel coordinates are regenerated from the seed."""
    meta = dict(meta)
    if "leads" in meta:
        meta["leads"] = [{k: v for k, v in lead.items() if k not in ("x", "y")} for lead in meta["leads"]]
    return meta


def patient_signal(seed: int, code: int, patient: int, prevalence: str = "") -> tuple[np.ndarray, dict, list[str]]:
    """The synthetic patient `patient` of stream `code`: (signal, synth meta, subtypes) from rng
    [seed, code, patient, 0], labels sampled at `prevalence` (as synth.parse_prevalence reads it; '' = defaults)."""
    rng = np.random.default_rng([seed, code, patient, 0])
    _, subtypes = synth.sample_labels(rng, prevalence or None)
    signal, smeta = synth.synthesize(rng, labels=subtypes)
    return signal, smeta, subtypes


@dataclasses.dataclass(frozen=True)
class _Job:
    split: str  # train | test | scans | roi
    index: int  # image index within the split
    patient: int  # signal index within the split (several images may share one in train)
    seed: int
    prevalence: str  # as synth.parse_prevalence reads it ('' = defaults)
    image: ImageJob  # drawn with rng [seed, split code, index, 1]


def _make_one(job: _Job) -> dict:
    if job.image.done():
        return job.image.read()["row"]  # resume: already made
    signal, smeta, subtypes = patient_signal(job.seed, SPLIT_CODE[job.split], job.patient, job.prevalence)
    img, rmeta = job.image.draw(signal, smeta["fs"])
    # The synthesiser's own record of what it drew is the ground truth (it may add e.g. a secondary ST change).
    row = {"id": Path(job.image.image).stem, **{k: int(smeta["labels"][k]) for k in LABELS},
           "patient_id": f"{job.split}-{job.patient}", "subtype": "|".join(subtypes)}
    job.image.write(img, rmeta, {"row": row, "key": {"seed": job.seed, "split": job.split, "index": job.index,
                                                     "patient": job.patient},
                                 "signal": {k: v for k, v in smeta.items() if k != "leads"},
                                 "render": _strip_samples(rmeta)})
    return row


def _jobs(split: str, n: int, folder_img: Path, folder_meta: Path, style: str, hw, cfg: MakeDataConfig,
          ext: str = ".png", per_patient: int = 1) -> list[_Job]:
    synth.parse_prevalence(cfg.prevalence or None)  # fail early, before any worker starts, on a bad --prevalence
    out = []
    for i in range(n):
        iid = image_id(cfg.seed, split, i)
        image = ImageJob(str(folder_img / f"{iid}{ext}"), str(folder_meta / f"{iid}.json"),
                         (cfg.seed, SPLIT_CODE[split], i, 1), style, tuple(hw))
        out.append(_Job(split, i, i // per_patient, cfg.seed, cfg.prevalence, image))
    return out


def _run(jobs: list[_Job], cfg: MakeDataConfig, desc: str) -> pd.DataFrame:
    rows = list(parallel_map(_make_one, jobs, workers=cfg.workers, desc=desc, chunksize=4))
    order = {Path(j.image.image).stem: k for k, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["id"]])  # parallel results arrive unordered; tables are in index order
    return pd.DataFrame(rows, columns=["id", *LABELS, "patient_id", "subtype"])


def make_competition(cfg: MakeDataConfig, root: Path, p: dict) -> None:
    comp, sol = root / f"{cfg.name}-comp", root / f"{cfg.name}-comp-solution"
    train = _run(_jobs("train", p["n_train"], comp / "train", sol / "meta", "photo", p["photo_hw"], cfg,
                       per_patient=cfg.images_per_patient), cfg, "competition train")
    test = _run(_jobs("test", p["n_test"], comp / "test", sol / "meta", "photo", p["photo_hw"], cfg), cfg,
                "competition test")
    write_csv(comp / "train.csv", train[["id", *LABELS, "patient_id"]])
    write_csv(comp / "sample_submission.csv", test[["id"]].assign(**{k: 0.5 for k in LABELS}))
    usage_rng = np.random.default_rng([cfg.seed, 99])
    public = usage_rng.random(len(test)) < cfg.public_fraction
    solution = test[["id", *LABELS]].assign(Usage=np.where(public, "Public", "Private"))
    write_csv(sol / "solution.csv", solution)
    write_csv(sol / "test_subtypes.csv", test[["id", "subtype"]])
    write_text(comp / "README.md", f"Synthetic BHF-style ECG photo competition, made by `python -m src.make_data "
               f"--preset={cfg.preset} --seed={cfg.seed}`. Hidden test labels: ../{sol.name}/solution.csv\n")


def make_scans(cfg: MakeDataConfig, root: Path, p: dict) -> None:
    d = root / f"{cfg.name}-scans"
    df = _run(_jobs("scans", p["n_scans"], d / "images", d / "images", "scan", p["scan_hw"], cfg), cfg,
              "stage I scans")
    write_csv(d / "labels.csv", df)


def make_roi(cfg: MakeDataConfig, root: Path, p: dict) -> None:
    """Photos + their ROI boxes in YOLO format (class 0 = the printed ECG grid area)."""
    d = root / f"{cfg.name}-roi"
    n_val = max(1, round(p["n_roi"] * cfg.roi_val_fraction)) if p["n_roi"] > 1 else 0
    jobs = []
    for i, j in enumerate(_jobs("roi", p["n_roi"], d / "images" / "train", d / "meta", "photo", p["photo_hw"], cfg,
                                ext=".jpg")):
        if i < n_val:
            j = dataclasses.replace(j, image=dataclasses.replace(
                j.image, image=j.image.image.replace("/images/train/", "/images/val/")))
        jobs.append(j)
    _run(jobs, cfg, "roi set")
    for j in jobs:  # labels from the sidecars: cheap, and correct on resume too
        meta = j.image.read()["render"]
        label = Path(j.image.image.replace("/images/", "/labels/")).with_suffix(".txt")
        write_text(label, yolo_label(meta["roi_box"], *meta["size"]))
    write_yolo_yaml(d)


def check_manifest(cfg: MakeDataConfig, root: Path, p: dict) -> None:
    """Resuming is only safe into folders made with the same image settings (counts may differ: images are keyed by
    index). The manifest sits in the solution folder so the competition folder keeps the real one's layout."""
    f = root / f"{cfg.name}-comp-solution" / "make_data.json"
    want = {"seed": cfg.seed, "photo_hw": list(p["photo_hw"]), "scan_hw": list(p["scan_hw"]),
            "prevalence": cfg.prevalence, "images_per_patient": cfg.images_per_patient}
    if f.exists():
        have = json.loads(f.read_text())
        for old, new in (("photo_size", "photo_hw"), ("scan_size", "scan_hw")):  # written before sizes were (H, W)
            if old in have:
                have[new] = have.pop(old)[::-1]
        if have != want:
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            raise SystemExit(f"{root}/{cfg.name}-* were made with other settings {diff} (was, now): delete those "
                             f"folders, or pass --name=<another prefix> to build beside them")
    write_json(f, want)


def main(argv=None) -> None:
    cfg = parse_args(MakeDataConfig, argv)
    if cfg.preset not in PRESETS:
        raise SystemExit(f"--preset must be one of {', '.join(PRESETS)}")
    root = Path(cfg.root) if cfg.root else paths().input
    p = cfg.resolved()
    check_manifest(cfg, root, p)
    make_competition(cfg, root, p)
    make_scans(cfg, root, p)
    make_roi(cfg, root, p)
    print(f"[make_data] preset={cfg.preset} seed={cfg.seed}: {p['n_train']} train + {p['n_test']} test photos, "
          f"{p['n_scans']} scans, {p['n_roi']} ROI photos -> {root}/{cfg.name}-*")


if __name__ == "__main__":
    main()
