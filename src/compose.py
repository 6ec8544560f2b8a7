"""The page engine's composition: sampled pages at a requested size, photographs of them, the one resumable image job,
the render command line, and signal tables (sources.read_ptbxl / read_code15) rendered into image sets. Below it, side
by side: src/render.py draws the page, src/photo.py photographs it; both stand on src/pixels.py. Signals come from
src/synth.py (synthetic) or src/signals.py (WFDB records, CODE-15% exams).

Run:
    python -m src.compose --out=input/renders --n_synth=8 --preview                 # signals from src.synth
    python -m src.compose --signals=input/synth-signals --out=input/renders --style=scan --n_per_record=2 --seed=0
    python -m src.compose --signals=/data/ptbxl/records500 --out=input/ptbxl-photos --style=photo --layout=3x4

In Python (what src.make_data uses):
    img, meta = make_image(signal, fs, rng, style="scan" | "photo", hw=(H, W))     # sampled, diverse params

Sizes are (height, width) and named `hw`, as everywhere from the cache on; only the JSON metadata keeps
meta["size"] = [W, H], in the x, y order of its coordinates.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import photo, render, synth
from .config import LABELS, LEADS, parse_args
from .pixels import finalize_meta, fit_to_size, masks_from_meta
from .signals import WFDBError, find_records, load_signal, read_wfdb, usable_leads
from .sources import finish_table
from .utils import imread, imwrite, parallel_map, write_csv, write_json

STYLES = ("scan", "photo")


def page_dpi(params: render.RenderParams, hw, pp: photo.PhotoParams | None) -> float:
    """The dpi a page is drawn at, so that no big image is drawn only to be shrunk: a page to be photographed at about
    the resolution it will have in the photo (its height `fill` of the frame's); a scan of size `hw` at the largest
    whole dpi whose page fits it (then padded, not resampled); otherwise the page's own dpi."""
    pw_in, ph_in = (v / 25.4 for v in render.PAPERS_MM[params.paper])
    if pp is not None:
        return float(max(40, 5 * round(pp.out_hw[0] * pp.fill / ph_in / 5)))
    if hw is not None:
        return float(max(40, math.floor(min(hw[1] / pw_in, hw[0] / ph_in))))
    return params.dpi


def make_image(signal, fs, rng: np.random.Generator, style: str = "scan", hw=None, leads=None,
               params: render.RenderParams | None = None, photo_params: photo.PhotoParams | None = None
               ) -> tuple[np.ndarray, dict]:
    """The one call every image builder uses: page parameters (sampled from `rng` unless `params` is given), the page
    drawn, then photographed (style photo; camera parameters sampled after the page's unless `photo_params`) or fitted.
    `leads`: the leads the record has (default all 12); with fewer the page is laid out by render.adapt_layout.

    `hw=(H, W)`: the page is drawn at the dpi that makes it fit (page_dpi: cheap at small sizes, no big render to
    shrink), then a scan is fitted to exactly `hw` (uniform scale + scanner-bed padding, so the grid stays square); a
    photo is taken at exactly `hw`. Deterministic given the rng state. Scans keep px_per_mm exact (dpi/25.4 times the
    fit scale); after the camera it is the local scale at the grid centre.
    """
    if style not in STYLES:
        raise ValueError(f"style {style!r}: expected scan or photo")
    params = render.sample_params(rng, style) if params is None else dataclasses.replace(params)
    if leads is not None:
        render.adapt_layout(params, leads)
    pp = (photo_params or photo.sample_photo_params(rng, out_hw=hw)) if style == "photo" else None
    params.dpi = page_dpi(params, hw, pp)
    page, meta, gain = render.draw_page(signal, fs, params, rng, defer_gain=pp is not None)
    if pp is not None:
        img, meta = photo.camera(page, meta, pp, rng, gain)
    elif hw is not None and tuple(hw) != page.shape[:2]:
        img, meta = fit_to_size(page, meta, hw)
    else:
        img = page
    meta["style"] = style
    return img, finalize_meta(meta)


@dataclasses.dataclass(frozen=True)
class ImageJob:
    """One image and its JSON sidecar, drawn by make_image from the random stream default_rng(seed): the image job of
    every builder (src.make_data, render_signal_source below, this command line, bench.ablation). The sidecar is
    written last, so an image whose sidecar exists is finished: builders check `done` and `read` it back instead of
    drawing again (resume)."""
    image: str  # image path (.png / .jpg)
    sidecar: str  # JSON path
    seed: tuple[int, ...]  # the image's random stream
    style: str = "scan"  # scan | photo
    hw: tuple[int, int] | None = None  # image height, width (None: the page's own size, or PhotoParams.out_hw)
    masks: str = "none"  # none | leads | trace: also write <image stem>_mask.png (pixels.masks_from_meta)

    def done(self) -> bool:
        return Path(self.sidecar).exists() and Path(self.image).exists()

    def read(self) -> dict:
        return json.loads(Path(self.sidecar).read_text())

    def draw(self, signal, fs, leads=None, params=None, photo_params=None) -> tuple[np.ndarray, dict]:
        return make_image(signal, fs, np.random.default_rng(list(self.seed)), self.style, self.hw, leads, params,
                          photo_params)

    def write(self, img: np.ndarray, meta: dict, sidecar: dict) -> dict:
        """The mask (if asked), the image, then the sidecar; returns the sidecar."""
        if self.masks != "none":
            image = Path(self.image)
            imwrite(image.with_name(f"{image.stem}_mask.png"), masks_from_meta(meta, self.masks))
        imwrite(self.image, img)
        write_json(self.sidecar, sidecar)
        return sidecar


# ----------------------------------------------------------------------------------------------------------------
# Signal tables (sources.read_ptbxl / read_code15) -> image sets (PTB-XL is the strongest Stage I source)
# ----------------------------------------------------------------------------------------------------------------
class _RenderJob:
    """One (record, k) -> images/<id>_<k>.<ext> + .json; rng = default_rng([seed, crc32(record id), k]), so an image
    never depends on which or how many other records are rendered."""

    def __init__(self, out: Path, seed: int, style: str, hw, ext: str, min_seconds: float):
        self.out, self.seed, self.style, self.hw, self.ext = out, seed, style, hw, ext
        self.min_seconds = min_seconds

    def __call__(self, item) -> dict:
        row, k = item
        iid = f"{row['id']}_{k:02d}"
        job = ImageJob(str(self.out / "images" / f"{iid}.{self.ext}"), str(self.out / "images" / f"{iid}.json"),
                       (int(self.seed), zlib.crc32(str(row["id"]).encode()), int(k)), self.style, self.hw)
        if job.done():
            return {"id": iid, "path": job.image, "error": ""}
        try:
            sig, fs = load_signal(row)
            leads = usable_leads(sig, fs, self.min_seconds)
            img, meta = job.draw(sig, fs, leads)
        except (ValueError, OSError, KeyError) as e:  # signals.WFDBError and UnusableRecord are ValueErrors
            return {"id": iid, "path": job.image, "error": f"{row['path']}: {e}"}
        labels = {c: (None if pd.isna(row[c]) else float(row[c])) for c in LABELS}
        job.write(img, meta, {"id": iid, "source_id": row["id"], "record": row["path"], "seed": list(job.seed),
                              "style": self.style, "hw": list(self.hw) if self.hw else None, "labels": labels,
                              "regenerate": "sig, fs = signals.load_signal(row); compose.make_image(sig, fs, "
                                            "np.random.default_rng(seed), style, hw, signals.usable_leads(sig, fs, "
                                            "min_seconds))", **meta})
        return {"id": iid, "path": job.image, "error": ""}


def render_signal_source(df: pd.DataFrame, out_dir: str | Path, n_per_record: int = 1, seed: int = 0,
                         style: str = "scan", workers: int = 0, hw: tuple[int, int] | None = None,
                         ext: str = "png", min_seconds: float = 7.0) -> pd.DataFrame:
    """Render every record of a signal table (read_ptbxl / read_code15) `n_per_record` times with sampled page
    parameters into a Stage I set: `<out_dir>/images/<id>.<ext>` + `<id>.json` sidecars (seed and all parameters)
    and `<out_dir>/labels.csv` (id, labels, patient_id, strat_fold, source_id). Resumable (finished images are
    kept), deterministic per seed. Records that cannot be read, have no signal or are shorter than `min_seconds` are
    skipped and reported (7 s keeps CODE-15%'s 7.3 s exams, whose pages draw 1.8 s per 3x4 column instead of 2.5 s;
    a 4 s strip would leave 1 s panels); records with fewer usable leads get strip pages of those leads. Returns the
    image table. `hw`: image height, width (None: the page's own size, or the photo default)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = df.to_dict("records")
    items = [(r, k) for r in records for k in range(n_per_record)]
    job = _RenderJob(out, seed, style, tuple(hw) if hw else None, ext, min_seconds)
    done = {r["id"]: r for r in parallel_map(job, items, workers=workers, desc=f"render {style}")}
    rows, skipped = [], []
    for r, k in items:
        res = done[f"{r['id']}_{k:02d}"]
        if res["error"]:
            skipped.append({"id": res["id"], "path": str(r["path"]), "error": res["error"]})
            continue
        rows.append({"id": res["id"], "path": str(Path(res["path"]).absolute()), **{c: r[c] for c in LABELS},
                     **{c: r[c] for c in ("patient_id", "strat_fold") if c in r}, "source_id": r["id"]})
    cols = ["id", "path", *LABELS] + [c for c in ("patient_id", "strat_fold") if c in df] + ["source_id"]
    table = finish_table(pd.DataFrame(rows, columns=cols), skipped, f"render ({out})")
    write_csv(out / "labels.csv", table.drop(columns=["path"]))
    kinds = Counter("no signal" if "NaN" in x["error"] else "too short" if " s long" in x["error"] else "unreadable"
                    for x in skipped)
    print(f"[sources] rendered {len(table)} images from {len(records)} records -> {out}/images, {out}/labels.csv"
          + (f"; skipped {len(skipped)}: {dict(sorted(kinds.items()))}" if skipped else ""), file=sys.stderr)
    return table


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RenderConfig:
    """Render WFDB records (or freshly synthesised signals) into ECG images with JSON sidecars and index.csv."""
    out: str  # output folder (images + <id>.json + index.csv)
    signals: str = ""  # folder of WFDB records (searched recursively); empty = synthesise --n-synth with src.synth
    style: str = "scan"  # scan | photo
    n_per_record: int = 1  # images per record (each with its own sampled parameters)
    seconds: float = 10.0  # page span, s (less where the paper is too short at the sampled speed); shorter records are errors
    seed: int = 0  # base seed; image rng = default_rng([seed, crc32(record), k, window])
    layout: str = ""  # force a layout (3x4, 6x2, 12x1, 2x1, 1x1); empty = sampled
    hw: tuple[int, ...] = ()  # output height H, width W, e.g. --hw=640,1152 (empty: page as drawn / 1900,3460 photo)
    n_synth: int = 8  # records to synthesise when --signals is empty
    max_windows: int = 0  # page windows per long record (0 = all)
    limit: int = 0  # use only the first N records (0 = all)
    ext: str = "png"  # png | jpg
    masks: str = "none"  # none | leads | trace: also write <id>_mask.png
    workers: int = 0  # processes (0 = one per core, 1 = inline)
    preview: bool = False  # also write preview.png, a contact sheet of the first outputs


def _record_items(cfg: RenderConfig) -> list[tuple]:
    if cfg.signals:
        recs = find_records(cfg.signals)
        if not recs:
            raise SystemExit(f"no WFDB records (*.hea) under {cfg.signals}")
        items = [("wfdb", str(r), str(r.relative_to(cfg.signals)).replace("/", "_")) for r in recs]
    else:
        items = [("synth", str(i), f"synth_{i:06d}") for i in range(cfg.n_synth)]
    items = items[:cfg.limit] if cfg.limit > 0 else items
    return [(kind, src, rid, k) for kind, src, rid in items for k in range(cfg.n_per_record)]


def _load(kind: str, src: str, seed: int, min_seconds: float):
    if kind == "wfdb":
        sig, fs, found = read_wfdb(src, min_seconds=min_seconds)
        return sig, fs, found, {}
    sig, smeta = synth.synthesize(synth.record_rng(seed, int(src)))
    return sig, smeta["fs"], list(LEADS), {"labels": smeta.get("labels", {})}


class _Job:
    """One (record, k): page and camera parameters from rng [seed, crc32(id), k], shared by the record's page windows;
    window w is drawn with rng [..., k, w]."""

    def __init__(self, cfg: RenderConfig):
        self.cfg = cfg

    def __call__(self, item) -> list[dict]:
        kind, src, rid, k = item
        cfg, out = self.cfg, Path(self.cfg.out)
        hw = tuple(cfg.hw) if cfg.hw else None
        crc = zlib.crc32(rid.encode())
        try:
            sig, fs, found, extra = _load(kind, src, cfg.seed, cfg.seconds)
            prng = np.random.default_rng([cfg.seed, crc, k])
            params = render.sample_params(prng, cfg.style)
            pp = photo.sample_photo_params(prng, out_hw=hw) if cfg.style == "photo" else None
            if cfg.layout:
                params.layout = cfg.layout
            render.adapt_layout(params, found, keep_layout=bool(cfg.layout))
            span = min(cfg.seconds, render.page_layout(params, sig.shape[1], fs, set(found))["span"])
            nwin = max(1, int((sig.shape[1] / fs + 1e-6) // span))
            nwin = min(nwin, cfg.max_windows) if cfg.max_windows > 0 else nwin
        except (WFDBError, ValueError, OSError) as e:
            return [{"id": f"{rid}_{k:02d}", "record": src, "status": "error", "error": f"{src}: {e}"}]
        rows = []
        for w in range(nwin):
            iid = f"{rid}_{k:02d}_w{w:02d}"
            job = ImageJob(str(out / f"{iid}.{cfg.ext}"), str(out / f"{iid}.json"), (cfg.seed, crc, k, w), cfg.style,
                           hw, cfg.masks)
            if job.done():
                rows.append(job.read()["row"])
                continue
            wparams = dataclasses.replace(params, t0=w * span, seconds=span)
            try:
                img, meta = job.draw(sig, fs, params=wparams, photo_params=pp)
            except ValueError as e:
                rows.append({"id": iid, "record": src, "status": "error", "error": f"{src}: {e}"})
                continue
            row = {"id": iid, "record": src, "k": k, "window": w, "t0": w * span, "style": cfg.style,
                   "layout": wparams.layout, "width": meta["size"][0], "height": meta["size"][1],
                   "image": Path(job.image).name, "status": "ok", "error": "",
                   **{lab: extra["labels"][lab] for lab in LABELS if lab in extra.get("labels", {})}}
            job.write(img, meta, {"row": row, "rng_seed": list(job.seed), "params_seed": [cfg.seed, crc, k],
                                  "record": src, "config": dataclasses.asdict(cfg), **meta})
            rows.append(row)
        return rows


def contact_sheet(paths: list[Path], cols: int = 4, cell_w: int = 480) -> np.ndarray:
    """Thumbnails in a grid (cell aspect of the first image) for a quick look at a run."""
    imgs = [imread(p) for p in paths]
    cols = max(1, min(cols, len(imgs)))
    cell_h = max(1, round(cell_w * imgs[0].shape[0] / imgs[0].shape[1]))
    tiles = []
    for im in imgs:
        s = min(cell_w / im.shape[1], cell_h / im.shape[0])
        im = cv2.resize(im, (max(1, int(im.shape[1] * s)), max(1, int(im.shape[0] * s))), interpolation=cv2.INTER_AREA)
        t = np.full((cell_h + 4, cell_w + 4, 3), 64, np.uint8)
        t[2:2 + im.shape[0], 2:2 + im.shape[1]] = im
        tiles.append(t)
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 64))
    return np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])


def main(argv=None) -> None:
    cfg = parse_args(RenderConfig, argv)
    if cfg.style not in STYLES:
        raise SystemExit("--style must be scan or photo")
    if cfg.layout and cfg.layout not in render.LAYOUTS:
        raise SystemExit(f"--layout must be one of {', '.join(render.LAYOUTS)}")
    if cfg.hw and len(cfg.hw) != 2:
        raise SystemExit("--hw takes two numbers: height H, width W (e.g. --hw=640,1152)")
    if cfg.masks not in ("none", "leads", "trace"):
        raise SystemExit("--masks must be none, leads or trace")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    items = _record_items(cfg)
    rows = [r for rs in parallel_map(_Job(cfg), items, workers=cfg.workers, desc=f"render {cfg.style}") for r in rs]
    df = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    write_csv(out / "index.csv", df)
    ok = df[df["status"] == "ok"] if len(df) else df
    bad = df[df["status"] != "ok"] if len(df) else df
    for _, r in bad.iterrows():
        print(f"[render] skipped: {r['error']}")
    if cfg.preview and len(ok):
        imwrite(out / "preview.png", contact_sheet([out / i for i in ok["image"].head(12)]))
    print(f"[render] {len(ok)} images ({len(bad)} skipped) -> {out} (index.csv{', preview.png' if cfg.preview else ''})")


if __name__ == "__main__":
    main()
