"""How well src.digitize reads the kit's own pages back: SNR per layout x style, on real signals, and seconds per page.

    python -m bench.digitize                           # dated report reports/digitize_<date>.md/.json
    python -m bench.digitize --n=2 --n_real=2 --out=/tmp/dig    # a quick look
    python -m src.digitize --fit && python -m bench.digitize --method=learned    # the learned path, ..._learned.md

Every page is drawn by the kit (compose.make_image) from a known signal, so the truth is exact: for each lead the
samples the page shows (its panel's span, or the whole page for a rhythm strip or a 1-column row), taken at the
digitiser's output rate (anti-aliased, see drawn_truth); everything else is NaN and left out of the score. SNR is
score.snr_db, averaged over the leads each page shows, then over pages.
Synthetic signals come from src.synth; real ones are the first 10 s of the records in ../shared/real (500 Hz), drawn
as scans with sampled page parameters (sampled layouts, so the mix of the renderer). Page parameters are sampled per
image (paper, grid colour, ink, dpi-independent artefacts, speed 12.5/25/50 mm/s, gain 5/10/20 mm/mV) with the
layout fixed per cell; strip pages (2x1) show II and V1, the leads the digitiser assumes (it does not read names).
"""
from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from pathlib import Path

import numpy as np

from src import compose, render, score, synth
from src.config import LEADS, REPO, parse_args
from src.digitize import digitize_image
from src.trace_seg import default_net_path
from src.signals import find_records, read_wfdb
from src.utils import write_json, write_text


def drawn_truth(signal: np.ndarray, fs: float, meta: dict, out_fs: float, seconds: float) -> np.ndarray:
    """[12, round(seconds * out_fs)] mV: the signal as a record at `out_fs` has it (resampled with an anti-aliasing
    filter, as a 100 Hz release of a 500 Hz database is made: what lies above the output's Nyquist frequency no page
    or digitiser can give back at that rate), where the page draws it (from the renderer's per-lead meta: first sample
    i0 and the number drawn), NaN elsewhere."""
    from fractions import Fraction
    from scipy.signal import resample_poly
    n = int(round(seconds * out_fs))
    out = np.full((len(LEADS), n), np.nan, np.float32)
    ratio = Fraction(out_fs / fs).limit_denominator(1000)
    t0 = int(round(meta["params"]["t0"] * fs))
    src = np.arange(n) * fs / out_fs + t0
    for lead in meta["leads"]:
        li = LEADS.index(lead["name"])
        a, b = lead["i0"], lead["i0"] + len(lead["x"]) - 1
        ok = (src >= a - 1e-6) & (src <= b + 1e-6)
        res = resample_poly(np.nan_to_num(signal[li, t0:]).astype(np.float64), ratio.numerator, ratio.denominator)
        k = np.flatnonzero(ok)
        k = k[k < len(res)]
        out[li, k] = res[k]
    return out


def page_snr(signal, fs, meta, d) -> float:
    """Mean SNR (dB) over the leads the page shows."""
    truth = drawn_truth(signal, fs, meta, d.fs, d.signal.shape[1] / d.fs)
    return float(np.nanmean(score.snr_db(truth, d.signal, d.fs)))


@dataclasses.dataclass
class BenchDigitizeConfig:
    """SNR of src.digitize on the kit's own pages (synthetic and real signals) and seconds per page."""
    n: int = 6  # synthetic pages per layout and style
    n_real: int = 16  # real records (../shared/real) drawn as scans
    layouts: tuple[str, ...] = ("3x4", "6x2", "12x1", "2x1")  # layouts of the synthetic cells
    scan_hw: tuple[int, ...] = (1700, 2200)  # scan height, width (the kit's full-size scans: 200 dpi letter)
    photo_hw: tuple[int, ...] = (1088, 1920)  # photo height, width
    method: str = "classical"  # digitiser method: classical | learned
    net: str = ""  # trace network checkpoint for --method=learned (default outputs/digitize/trace_net.pt)
    fs: float = 100.0  # digitiser output rate (the truth is taken at it)
    seed: int = 0  # page and signal seeds
    real: str = ""  # folder of real WFDB records (default ../shared/real/records beside the repo)
    out: str = ""  # report folder (default reports/)


def _one(sig, fs, rng, style, hw, params, cfg) -> dict:
    img, meta = compose.make_image(sig, fs, rng, style, hw, params=params)
    t0 = time.perf_counter()
    d = digitize_image(img, fs=cfg.fs, method=cfg.method, net=cfg.net)
    sec = time.perf_counter() - t0
    shown = sorted({LEADS.index(lead["name"]) for lead in meta["leads"]})
    return {"snr": page_snr(sig, fs, meta, d), "seconds": sec, "layout": meta["params"]["layout"],
            "layout_ok": d.layout == meta["params"]["layout"], "read": float((d.confidence[shown] > 0).mean()),
            "speed": meta["params"]["speed"], "gain": meta["params"]["gain"]}


def _cell(rows: list[dict]) -> dict:
    snr = np.array([r["snr"] for r in rows])
    return {"n": len(rows), "snr_mean": float(np.mean(snr)), "snr_median": float(np.median(snr)),
            "layout_ok": float(np.mean([r["layout_ok"] for r in rows])),
            "leads_read": float(np.mean([r["read"] for r in rows])),
            "sec_per_page": float(np.mean([r["seconds"] for r in rows])),
            "snr_at_25_10": float(np.mean([r["snr"] for r in rows if r["speed"] == 25 and r["gain"] == 10]))
            if any(r["speed"] == 25 and r["gain"] == 10 for r in rows) else float("nan")}


def run(cfg: BenchDigitizeConfig) -> dict:
    cells = {}
    for style, hw in (("scan", tuple(cfg.scan_hw)), ("photo", tuple(cfg.photo_hw))):
        for layout in cfg.layouts:
            rows = []
            for i in range(cfg.n):
                sig, smeta = synth.synthesize(synth.record_rng(cfg.seed, i))
                rng = np.random.default_rng([cfg.seed, i, len(style), int(layout[0]), int(layout[-1])])
                params = render.sample_params(rng, style)
                params.layout = layout
                params.strip_leads = ("II", "V1")
                params.seconds = 0.0
                rows.append(_one(sig, smeta["fs"], rng, style, hw, params, cfg))
            cells[f"{layout} {style}"] = _cell(rows)
            print(f"[bench.digitize] {layout:>5} {style:<5} SNR {cells[f'{layout} {style}']['snr_mean']:6.2f} dB",
                  file=sys.stderr)
    root = Path(cfg.real) if cfg.real else REPO.parent / "shared" / "real" / "records"
    recs = find_records(root)[:cfg.n_real] if root.is_dir() else []
    real_rows = []
    for k, rec in enumerate(recs):
        sig, fs, found = read_wfdb(rec, min_seconds=10.0)
        sig = np.nan_to_num(sig[:, :int(10 * fs)])
        rng = np.random.default_rng([cfg.seed, 99, k])
        params = render.sample_params(rng, "scan")
        params.strip_leads = ("II", "V1")
        real_rows.append(_one(sig, fs, rng, "scan", tuple(cfg.scan_hw), params, cfg))
    if real_rows:
        cells["real (sampled layouts) scan"] = _cell(real_rows)
    res = {"cells": cells, "config": dataclasses.asdict(cfg), "real_records": [str(r.relative_to(root)) for r in recs]}
    if cfg.method == "learned":
        import torch
        path = cfg.net or str(default_net_path())
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        shown = Path(path).resolve()
        shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
        res["net"] = {"path": str(shown), **{k: ckpt[k] for k in ("channels", "pages", "steps", "patch", "seed", "final_loss")}}
    return res


def report(res: dict, command: str) -> str:
    lines = ["# Digitisation benchmark", "", f"Command: `{command}`", "",
             "SNR: score.snr_db per lead (the PhysioNet/CinC 2024 SNR: signal power over error power on the samples "
             "the page shows, NaN read as 0 mV; aligned as the 2025 rerun allows: +-0.2 s shift, offset), mean over "
             "leads, then over pages. Truth: the drawn signal at the output rate (anti-aliased). "
             "`25/10` is the mean over the pages drawn at 25 mm/s and 10 mm/mV only.", "",
             "| layout × style | pages | SNR mean (dB) | median | SNR at 25/10 | layout found | shown leads read | s/page |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in res["cells"].items():
        lines.append(f"| {name} | {c['n']} | {c['snr_mean']:.2f} | {c['snr_median']:.2f} | {c['snr_at_25_10']:.2f} | "
                     f"{c['layout_ok']:.0%} | {c['leads_read']:.0%} | {c['sec_per_page']:.2f} |")
    cfg = res["config"]
    lines += ["", f"Scans {cfg['scan_hw'][1]}×{cfg['scan_hw'][0]} px, photos {cfg['photo_hw'][1]}×{cfg['photo_hw'][0]} "
              f"px; method {cfg['method']}; output {cfg['fs']:g} Hz; seconds per page: digitising only (one process)."]
    if "net" in res:
        net = res["net"]
        lines += ["", f"Trace network `{net['path']}`: {net['channels']} channels, trained by `python -m src.digitize "
                  f"--fit --fit_pages={net['pages']} --fit_steps={net['steps']}` ({net['patch']} px patches, seed "
                  f"{net['seed']}, final loss {net['final_loss']:.3f})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    cfg = parse_args(BenchDigitizeConfig, argv)
    res = run(cfg)
    command = "python -m bench.digitize " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(cfg.out) if cfg.out else REPO / "reports"
    stem = f"digitize_{datetime.date.today().isoformat()}" + ("" if cfg.method == "classical" else f"_{cfg.method}")
    text = report(res, command.strip())
    write_text(out / f"{stem}.md", text)
    write_json(out / f"{stem}.json", {**res, "command": command.strip()})
    print(text)
    print(f"[bench.digitize] -> {out / stem}.md, .json", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
