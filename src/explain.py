"""Grad-CAM explanations: where on the page a fold model looks for each class.

    # per-image figures (the paper's Fig. 5): the model input, then one heat-map overlay per class with its probability
    python -m src.explain --ckpt outputs/train/stage2/fold0/best.pt --images input/ecg-synth-comp/test --limit 8
    python -m src.explain --run stage2 --fold 2 --images some_photos/ --out outputs/explain/mine
    # a contact sheet of the most confident true and false positives per class from the run's OOF predictions
    python -m src.explain --run stage2 --contact_sheet --per_cell 4

Images given with --images are raw photos: they go through `src.preprocess.preprocess_image` with the run's
preprocess.yaml, exactly as in training and inference (--preprocessed=true for images that already are model inputs).
The contact sheet reads the training cache (already preprocessed) and explains every OOF image with the model of the
fold that predicted it, so each panel shows the evidence behind the probability printed above it.

Grad-CAM (pytorch_grad_cam) weights the last backbone stage's feature maps by the spatially averaged gradient of one
class logit, keeps the positive part and upsamples it to the input size; each map is scaled to [0, 1] on its own, so
colours compare regions within a panel, not strength across panels (the probability in the title does that). The last
ConvNeXt stage has stride 32: a 512x768 input gives a 16x24 map, enough to tell lead columns and rows apart.

Writes into --out (default outputs/explain/<run or checkpoint name>): <id>_gradcam.png per image and gradcam.csv
(id, probabilities), or contact_sheet.png and contact_sheet.csv (class, kind, id, fold, label, probability).
"""
from __future__ import annotations

import dataclasses
import io
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .config import find_input, parse_args, paths
from .run import FoldModel, RunFolder, resolve_run
from .utils import ImageReadError, imread, write_bytes, write_csv


# ----------------------------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------------------------
def target_layer(model):
    """The last feature stage: ConvNeXt/most timm CNNs (`stages`), ResNets (`layer4`), or `features`."""
    for name in ("stages", "layer4", "features"):
        mod = getattr(model, name, None)
        if mod is not None:
            return mod[-1] if hasattr(mod, "__getitem__") else mod  # last block of a Sequential/ModuleList
    raise ValueError(f"{type(model).__name__}: no convolutional last stage found (stages/layer4/features); "
                     f"Grad-CAM here supports CNN backbones such as ConvNeXt")


def grad_cam(model, x, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(maps [B, len(classes), H, W] in [0, 1] at the input's size, probabilities [B, C]) for normalised input x."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(x).float()).cpu().numpy()
    maps = np.zeros((x.shape[0], len(classes), x.shape[2], x.shape[3]), np.float32)
    with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        for j, c in enumerate(classes):
            maps[:, j] = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c))] * x.shape[0])
    return np.nan_to_num(maps), probs


def overlay(img: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image with a jet-coloured heat map blended in (alpha = heat-map weight)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    return show_cam_on_image(img.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1.0 - alpha)


def to_tensor(imgs: list[np.ndarray], fold: FoldModel):
    """RGB uint8 images -> the normalised batch the fold's model was trained on (same as infer/engine)."""
    import torch
    from .engine import to_input
    x = torch.from_numpy(np.stack([np.ascontiguousarray(i.transpose(2, 0, 1)) for i in imgs]))
    return to_input(x, next(fold.model.parameters()).device, *fold.norm, channels_last=False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def image_figure(img: np.ndarray, maps: np.ndarray, probs: np.ndarray, labels: list[str], title: str,
                 alpha: float = 0.5) -> bytes:
    """PNG: the model input, then one overlay per class titled with its probability (3 panels a row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(labels) + 1
    cols = min(3, n)
    rows = math.ceil(n / cols)
    h, w = img.shape[:2]
    pw = 4.5
    fig, axes = plt.subplots(rows, cols, figsize=(pw * cols, pw * h / w * rows + 0.5 * rows), squeeze=False)
    panels = [(img, "model input")] + [(overlay(img, maps[j], alpha), f"{lb}  p={probs[j]:.2f}")
                                       for j, lb in enumerate(labels)]
    for ax, (im, t) in zip(axes.ravel(), panels):
        ax.imshow(im)
        ax.set_title(t, fontsize=11)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


# ----------------------------------------------------------------------------------------------------------------
# Where models, preprocessing and images come from
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExplainConfig:
    ckpt: str = ""  # fold checkpoint (outputs/train/<name>/fold<k>/best.pt) explaining --images
    run: str = ""  # Stage II run folder: for --contact_sheet, or --images explained by fold --fold
    images: str = ""  # photos to explain: an image, a folder, or a CSV (id[,path]); preprocessed as in training
    preprocessed: bool = False  # --images already are model inputs (e.g. cache images): skip preprocessing
    fold: int = 0  # with --run and --images: the fold whose best.pt explains them
    contact_sheet: bool = False  # with --run: most confident true/false positives per class from oof.csv
    per_cell: int = 4  # contact sheet: this many true positives and this many false positives per class
    cam: bool = True  # contact sheet: overlay each panel with the Grad-CAM of its row's class
    classes: str = "all"  # classes to explain: all or a comma list such as MI,AF
    limit: int = 32  # at most this many --images (Grad-CAM costs one backward pass per class and image)
    alpha: float = 0.5  # heat-map opacity in overlays
    out: str = ""  # output folder (default: <outputs>/explain/<run or checkpoint name>)


def pick_classes(spec: str, labels: list[str]) -> list[int]:
    if spec.strip().lower() == "all":
        return list(range(len(labels)))
    want = [s for s in spec.replace(" ", "").split(",") if s]
    bad = [s for s in want if s not in labels]
    if bad:
        raise SystemExit(f"--classes: unknown {bad}; the model's classes are {labels}")
    return [labels.index(s) for s in want]


def model_input(path: str, fold: FoldModel, pcfg) -> np.ndarray:
    """The image as the model sees it (RGB uint8 at the training input size): preprocessed with `pcfg`, or, when it
    is None (--preprocessed), checked for the model's size. Raises ImageReadError/ValueError."""
    img = imread(path)
    size = fold.size
    if pcfg is None:
        if size and img.shape[:2] != size:
            raise ValueError(f"{path}: {img.shape[0]}x{img.shape[1]} but the model takes {size[0]}x{size[1]}; drop "
                             f"--preprocessed to preprocess it")
        return img
    from .preprocess import preprocess_image
    return preprocess_image(img, pcfg)[0]


def explain_images(cfg: ExplainConfig, ckpt: Path, out: Path) -> pd.DataFrame:
    from .preprocess import resolve_sources
    fold = FoldModel.load(ckpt, channels_last=False)
    if fold.route != "image":
        raise SystemExit(f"{ckpt} is a {fold.route}-route model: Grad-CAM here explains image models (a heat map over "
                         f"the page); give an image run's fold")
    pcfg = None
    if not cfg.preprocessed:
        try:
            pcfg = fold.preprocess_config()
        except SystemExit as e:
            raise SystemExit(f"{e} (or pass --preprocessed=true for model-sized images)") from None
    labels = fold.labels
    classes = pick_classes(cfg.classes, labels)
    df = resolve_sources(cfg.images)
    if cfg.limit and len(df) > cfg.limit:
        print(f"[explain] {len(df)} images; explaining the first {cfg.limit} (--limit)")
        df = df.iloc[: cfg.limit]
    rows = []
    from tqdm import tqdm
    for iid, path in tqdm(list(zip(df["id"], df["path"])), desc="grad-cam", dynamic_ncols=True):
        try:
            img = model_input(path, fold, pcfg)
        except (ImageReadError, ValueError) as e:
            print(f"[explain] skipped {iid}: {e}", file=sys.stderr)
            continue
        maps, probs = grad_cam(fold.model, to_tensor([img], fold), classes)
        sel = [labels[c] for c in classes]
        write_bytes(out / f"{iid}_gradcam.png", image_figure(
            img, maps[0], probs[0, classes], sel, f"{iid} - {fold.arch} {ckpt.parent.name}", cfg.alpha))
        rows.append({"id": iid, **{lb: float(probs[0, j]) for j, lb in enumerate(labels)}})
    table = pd.DataFrame(rows, columns=["id", *labels])
    write_csv(out / "gradcam.csv", table)
    print(f"[explain] {len(table)} figure(s) -> {out}")
    return table


# ----------------------------------------------------------------------------------------------------------------
# Contact sheet from OOF predictions
# ----------------------------------------------------------------------------------------------------------------
def select_confident(oof: pd.DataFrame, labels: list[str], k: int) -> pd.DataFrame:
    """Per class the k highest-scored true positives (label 1) and false positives (label 0), best first."""
    rows = []
    for lb in labels:
        known = oof[oof[lb].notna()]
        for kind, val in (("TP", 1.0), ("FP", 0.0)):
            part = known[known[lb] == val].sort_values(f"pred_{lb}", ascending=False, kind="stable").head(k)
            rows += [{"class": lb, "kind": kind, "id": r["id"], "fold": int(r["fold"]), "label": val,
                      "prob": float(r[f"pred_{lb}"])} for _, r in part.iterrows()]
    return pd.DataFrame(rows, columns=["class", "kind", "id", "fold", "label", "prob"])


def contact_sheet(cfg: ExplainConfig, run: RunFolder, out: Path) -> pd.DataFrame:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .data import read_cache
    if run.route != "image":
        raise SystemExit(f"{run} is a {run.route}-route run: the contact sheet shows image runs' photos; give an image "
                         f"run")
    oof_path, oof = run.oof, run.read_oof()
    if oof is None:
        raise SystemExit(f"{oof_path} not found: the contact sheet needs a run's OOF predictions (python -m src.train)")
    labels = [c[5:] for c in oof.columns if c.startswith("pred_") and c[5:] in oof.columns]
    if not labels or "fold" not in oof.columns:
        raise SystemExit(f"{oof_path}: expected columns id, fold, <label>..., pred_<label>...")
    labels = [labels[c] for c in pick_classes(cfg.classes, labels)]
    cache_dir = find_input(run.config().get("cache", ""))
    cache = read_cache(cache_dir)
    files = dict(zip(cache["id"], cache["file"]))
    sel = select_confident(oof, labels, cfg.per_cell)
    models: dict[int, FoldModel] = {}
    k = cfg.per_cell
    fig, axes = plt.subplots(len(labels), 2 * k, figsize=(2.6 * 2 * k, 1.9 * len(labels) + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, lb in enumerate(labels):
        axes[r, 0].text(-0.08, 0.5, lb, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=13,
                        fontweight="bold")
        for kind, off in (("TP", 0), ("FP", k)):
            part = sel[(sel["class"] == lb) & (sel["kind"] == kind)]
            for c, (_, row) in enumerate(part.iterrows()):
                ax = axes[r, off + c]
                try:
                    img = imread(files[row["id"]]) if row["id"] in files else None
                except ImageReadError as e:
                    print(f"[explain] {e}", file=sys.stderr)
                    img = None
                if img is None:
                    ax.set_title(f"{kind} {row['id'][:10]} (no image)", fontsize=7)
                    continue
                if cfg.cam:
                    f = row["fold"]
                    if f not in models:
                        models[f] = FoldModel.load(run.fold(f).best, f, channels_last=False)
                    fold = models[f]
                    maps, _ = grad_cam(fold.model, to_tensor([img], fold), [fold.labels.index(lb)])
                    img = overlay(img, maps[0, 0], cfg.alpha)
                ax.imshow(img)
                ax.set_title(f"{kind} {row['id'][:10]} f{row['fold']} p={row['prob']:.2f}", fontsize=7,
                             color="green" if kind == "TP" else "red")
    fig.suptitle(f"{run.name}: most confident true positives (left, green) and false positives (right, red) per "
                 f"class, out-of-fold" + (", Grad-CAM of the row's class" if cfg.cam else ""), fontsize=10)
    fig.tight_layout()
    write_bytes(out / "contact_sheet.png", _png(fig))
    plt.close(fig)
    write_csv(out / "contact_sheet.csv", sel)
    print(f"[explain] contact sheet of {len(sel)} OOF images ({len(labels)} classes) -> {out / 'contact_sheet.png'}")
    return sel


def main(argv: list[str] | None = None):
    cfg = parse_args(ExplainConfig, argv)
    run = resolve_run(cfg.run) if cfg.run else None
    if cfg.contact_sheet:
        if run is None:
            raise SystemExit("--contact_sheet needs --run (a Stage II run folder with oof.csv)")
        out = Path(cfg.out) if cfg.out else paths().outputs / "explain" / run.name
        return contact_sheet(cfg, run, out)
    if not cfg.images:
        raise SystemExit("nothing to do: give --images (with --ckpt or --run) or --run with --contact_sheet")
    ckpt = Path(cfg.ckpt) if cfg.ckpt else (run.fold(cfg.fold).best if run else None)
    if ckpt is None:
        raise SystemExit("--images needs a model: --ckpt <fold<k>/best.pt> or --run <run> [--fold k]")
    out = Path(cfg.out) if cfg.out else paths().outputs / "explain" / (run or RunFolder.of_checkpoint(ckpt)).name
    return explain_images(cfg, ckpt, out)


if __name__ == "__main__":
    main()
