"""Seconds per image of the ECG renderer on ONE core, and how that compares with just PNG-encoding the result.

Run:  python -m bench.render [--reps 8]

Cases (2200 x 1700 px: US letter at 200 dpi; photo 3460 x 1900):
  plain scan          header, lead names, calibration, red grid; no artefacts
  scan + artefacts    header + creases + wrinkles + rotation + noise (each forced on)
  photo (all on)      page with creases/wrinkles + camera with bend, 2 shadows, glare, defocus, motion blur, noise, JPEG
  photo (sampled)     make_image(style="photo") at 3460 x 1900 with sampled parameters, mean over seeds
  demo sizes          make_image at the make_data demo sizes (photo 1152 x 640, scan 1100 x 850), mean over seeds
Reference (issue #3, same machine class): ECG-Image-Kit 1.8 s plain, 5.7 s with header + wrinkles + augment.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from src import compose, photo, render, synth  # noqa: E402
from src.pixels import finalize_meta  # noqa: E402


def _time(fn, reps: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds (CPU time is steadier when other jobs share the machine)."""
    out = fn()  # warm-up: grid and noise caches, first-call allocations
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu), out


def _png_seconds(img: np.ndarray, reps: int = 3) -> float:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return _time(lambda: cv2.imencode(".png", bgr), reps)[1]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    reps = int(argv[argv.index("--reps") + 1]) if "--reps" in argv else 8
    cv2.setNumThreads(1)
    signal, smeta = synth.synthesize(synth.record_rng(0, 0))
    fs = smeta["fs"]
    rows = []

    def case(name, fn, n_reps=reps):
        wall, cpu, (img, _) = _time(fn, n_reps)
        rows.append((name, f"{img.shape[1]}x{img.shape[0]}", wall, cpu, _png_seconds(img)))

    plain = render.RenderParams()
    case("plain scan", lambda: render.render_ecg(signal, fs, plain, np.random.default_rng(1)))
    art = render.RenderParams(artefacts={k: [1.0, 0.7] for k in ("crease", "wrinkle", "rotate", "noise")})
    case("scan + header/crease/wrinkle/rotate/noise", lambda: render.render_ecg(signal, fs, art, np.random.default_rng(2)))
    page_p = render.RenderParams(artefacts={"crease": [1.0, 0.6], "wrinkle": [1.0, 0.6]})
    cam = photo.PhotoParams(curl=0.01, shadows=2, glare=0.6, defocus=1.0, motion=4.0, noise=4.0, jpeg=85, clutter=4)

    def full_photo():
        rng = np.random.default_rng(3)
        page, meta, gain = render.draw_page(signal, fs, page_p, rng, defer_gain=True)  # as make_image does
        img, meta = photo.camera(page, meta, cam, rng, gain)
        return img, finalize_meta(meta)
    case("photo, every camera effect on", full_photo)

    seeds = iter(range(10_000))
    case("photo, sampled (make_image)", lambda: compose.make_image(signal, fs, np.random.default_rng(next(seeds)),
                                                                   "photo"), max(reps, 12))
    case("photo 1152x640 demo (make_image)", lambda: compose.make_image(
        signal, fs, np.random.default_rng(next(seeds)), "photo", hw=(640, 1152)), max(reps, 12))
    case("scan 1100x850 demo (make_image)", lambda: compose.make_image(
        signal, fs, np.random.default_rng(next(seeds)), "scan", hw=(850, 1100)), max(reps, 12))

    print(f"render benchmark: 1 core (cv2.setNumThreads(1)), median of {reps}+ reps, cv2 {cv2.__version__}")
    print(f"{'case':42s} {'size':>10s} {'wall s':>7s} {'cpu s':>7s} {'png cpu s':>9s} {'cpu/png':>7s}")
    for name, size, wall, cpu, png in rows:
        print(f"{name:42s} {size:>10s} {wall:7.3f} {cpu:7.3f} {png:9.3f} {cpu / png:7.2f}")
    print(f"load average while running: {os.getloadavg()[0]:.2f} (wall times inflate when > 1 on this machine)")
    print("targets: plain <= 0.05 s, full photo path <= 0.15 s; ECG-Image-Kit anchor: 1.8 s plain, 5.7 s augmented")


if __name__ == "__main__":
    main()
