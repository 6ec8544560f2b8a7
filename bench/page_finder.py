"""How often the page finder (the `full` / `trace` geometry) falls back, and how accurate the corners it accepts are.

    python -m bench.page_finder --root=input/ecg-synth-comp --meta=input/ecg-synth-comp-solution/meta --limit=500
    python -m bench.page_finder --root=input/ecg-synth-scans/images --limit=300 --strategy=trace   # the Stage I scans
    python -m bench.page_finder --root=... --meta=... --overlays=/tmp/pf --limit=100     # draw the failures

--root: a competition root (its train/ folder is read) or a folder of images. The true sheet corners come from
render.paper_quad of <meta>/<id>.json, or of the <id>.json beside the image when --meta is empty (the scans keep
theirs there); images without one count towards the fallback rate only.
--strategy=quad (default) calls src.page.page_quad, the geometry preprocess_image decides on, and nothing else (fast);
--strategy=trace or full runs the whole preprocess_image, which also shows that every image goes through.

Prints the fallback rate overall and by reason; for accepted quads the median / 95th percentile / max of the worst
corner's error (px, and % of the true page diagonal, corners matched at the best cyclic shift: a sideways page is
turned) and the wrong accepts (worst corner > --wrong % of the diagonal); then the fallback rate split by the
photo conditions of render.photo (background, curl, glare, shadows, tilt, clutter, blur, sideways, page cut by the
frame). --overlays draws each fallback and wrong accept (truth green, found quad red) into that folder.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src import page
from src.preprocess import PreprocessConfig, preprocess_image
from src.config import parse_args
from src.roi import IMAGE_EXTS
from src.utils import imread, set_threads


@dataclasses.dataclass
class PageFinderBenchConfig:
    """Fallback rate and corner error of find_paper_quad on images with known sheet corners."""
    root: str = "input/ecg-synth-comp"  # competition root (reads train/) or a folder of images
    meta: str = ""  # folder of <id>.json sidecars with render.paper_quad ('' = the <id>.json beside each image)
    limit: int = 0  # only the first N images (sorted by id; 0: all)
    strategy: str = "quad"  # quad: page.page_quad only | full | trace: the whole preprocess_image
    wrong: float = 3.0  # an accepted quad whose worst corner is off by more than this % of the diagonal is wrong
    overlays: str = ""  # folder to draw fallbacks and wrong accepts into ('' = none)


def _images(root: Path) -> list[Path]:
    folder = root / "train" if (root / "train").is_dir() else root
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _truth(img_path: Path, meta: str) -> tuple[np.ndarray | None, dict]:
    f = Path(meta) / f"{img_path.stem}.json" if meta else img_path.with_suffix(".json")
    if not f.exists():
        return None, {}
    r = json.loads(f.read_text())["render"]
    return np.asarray(r["paper_quad"], np.float64), r.get("photo", {})


def _conditions(photo: dict, truth: np.ndarray, size: tuple[int, int]) -> dict:
    """The photo conditions to split the fallback rate by (keys of render.photo, binned)."""
    w, h = size
    out = (truth[:, 0] < 0) | (truth[:, 0] > w - 1) | (truth[:, 1] < 0) | (truth[:, 1] > h - 1)
    c = {"page cut by frame": "yes" if out.any() else "no"}
    if not photo:
        return c
    roll = abs((photo.get("roll", 0) + 180) % 180 - 90)
    c.update({"background": photo.get("background", "?"),
              "curl": "0" if not photo.get("curl") else ("<0.01" if photo["curl"] < 0.01 else ">=0.01"),
              "glare": "0" if not photo.get("glare") else ("<0.6" if photo["glare"] < 0.6 else ">=0.6"),
              "shadows": str(photo.get("shadows", 0)),
              "tilt": "<10" if photo.get("tilt", 0) < 10 else ("<20" if photo["tilt"] < 20 else ">=20"),
              "clutter": "0-1" if photo.get("clutter", 0) <= 1 else ("2-3" if photo["clutter"] <= 3 else "4-5"),
              "blur": "motion" if photo.get("motion") else ("defocus" if photo.get("defocus") else "none"),
              "sideways": "yes" if roll < 30 else "no"})
    return c


def _draw(img: np.ndarray, truth, found, text: str, path: Path) -> None:
    from src.utils import imwrite
    vis = img.copy()
    if truth is not None:
        cv2.polylines(vis, [np.round(truth).astype(np.int32)], True, (0, 255, 0), 1)
    if found is not None:
        cv2.polylines(vis, [np.round(np.asarray(found)).astype(np.int32)], True, (255, 0, 0), 1)
    cv2.putText(vis, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
    imwrite(path, vis)


def _find(img: np.ndarray, strategy: str) -> tuple[np.ndarray | None, str]:
    """(quad, fallback reason or '') as preprocess_image decides them."""
    if strategy == "quad":
        return page.page_quad(img)
    _, info = preprocess_image(img, PreprocessConfig(strategy=strategy, size=(128, 192)))
    return info["quad"], info["fallback"]


def main(argv=None):
    cfg = parse_args(PageFinderBenchConfig, argv)
    if cfg.strategy not in ("quad", "full", "trace"):
        raise SystemExit(f"--strategy must be quad, full or trace, got {cfg.strategy!r}")
    set_threads(1)
    files = _images(Path(cfg.root))[: cfg.limit or None]
    if not files:
        raise SystemExit(f"--root {cfg.root}: no images")
    if cfg.overlays:
        Path(cfg.overlays).mkdir(parents=True, exist_ok=True)
    reasons, errors, wrong, split = Counter(), [], [], defaultdict(lambda: defaultdict(lambda: [0, 0]))
    t0 = time.perf_counter()
    for p in tqdm(files, desc="page finder"):
        img = imread(p)
        truth, photo = _truth(p, cfg.meta)
        found, problem = _find(img, cfg.strategy)
        reasons[problem or "accepted"] += 1
        text = problem
        if truth is not None:
            for key, val in _conditions(photo, truth, (img.shape[1], img.shape[0])).items():
                split[key][val][0] += bool(problem)
                split[key][val][1] += 1
            if not problem:
                diag = 0.5 * (np.linalg.norm(truth[2] - truth[0]) + np.linalg.norm(truth[3] - truth[1]))
                e = page.corner_distance(np.asarray(found, np.float64), truth)
                errors.append((e, 100 * e / diag))
                if errors[-1][1] > cfg.wrong:
                    wrong.append(p.stem)
                    text = f"WRONG {errors[-1][1]:.1f}%"
        if cfg.overlays and text:
            _draw(img, truth, found, text, Path(cfg.overlays) / f"{text.split()[0]}_{p.stem}.png")
    n = len(files)
    ms = 1000 * (time.perf_counter() - t0) / n
    n_fb = n - reasons["accepted"]
    print(f"{n} images from {cfg.root} ({cfg.strategy}, {ms:.0f} ms/img incl. decode): fallback "
          f"{n_fb} = {100 * n_fb / n:.1f}%")
    for r, k in reasons.most_common():
        if r != "accepted":
            print(f"  {r:<22} {k:4d}  {100 * k / n:5.1f}%")
    if errors:
        e = np.array(errors)
        print(f"accepted quads with truth: {len(e)}; worst-corner error   median / p95 / max")
        print(f"  px                    {np.median(e[:, 0]):6.2f} / {np.percentile(e[:, 0], 95):6.2f} / "
              f"{e[:, 0].max():6.2f}")
        print(f"  % of page diagonal    {np.median(e[:, 1]):6.2f} / {np.percentile(e[:, 1], 95):6.2f} / "
              f"{e[:, 1].max():6.2f}")
        print(f"  wrong accepts (> {cfg.wrong:g}% of the diagonal): {len(wrong)}"
              f"{' ' + ', '.join(wrong[:10]) if wrong else ''}")
    if split:
        print("fallback rate by condition (fallbacks / images):")
        for key, vals in split.items():
            cells = "  ".join(f"{v}: {100 * f / t:5.1f}% ({f}/{t})" for v, (f, t) in sorted(vals.items()))
            print(f"  {key:<18} {cells}")
    return {"n": n, "fallback": n_fb / n, "reasons": dict(reasons), "errors": errors, "wrong": wrong}


if __name__ == "__main__":
    main()
