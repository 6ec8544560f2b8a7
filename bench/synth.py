"""Synthesiser throughput on ONE core: 12-lead, 10 s, 500 Hz records per second (target >= 500).

    python -m bench.synth                 # synthesis only, then synthesis + WFDB writing
    python -m bench.synth --n 2000 --labels CLBBB

BLAS/OpenMP threads are pinned to 1 before NumPy is imported, so the figure is per core; the CLI scales it with
--workers. Sampled records follow the default prevalences (noise on), as `python -m src.synth` makes them.
"""
import os

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_k] = "1"

import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from src import synth as S  # noqa: E402
from src.config import parse_args  # noqa: E402


@dataclasses.dataclass
class BenchConfig:
    n: int = 1000  # records to time (after 50 warm-up records)
    labels: str = ""  # optional fixed subtype list, e.g. CLBBB,AFIB (default: sampled labels)
    write: int = 200  # records to time with WFDB writing as well (0 = skip)


def main() -> None:
    cfg = parse_args(BenchConfig)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, really
    kw = {"labels": cfg.labels.split(",")} if cfg.labels else {}
    for i in range(50):
        S.synth_record(0, i, **kw)
    best, best_cpu = 0.0, 0.0
    for rep in range(3):  # best of 3: the figure is the code's speed, not the neighbours' load
        t, c = time.perf_counter(), time.process_time()
        for i in range(cfg.n):
            sig, _ = S.synth_record(1, i, **kw)
        best = max(best, cfg.n / (time.perf_counter() - t))
        best_cpu = max(best_cpu, cfg.n / (time.process_time() - c))
    print(f"synthesize: {best:.0f} records/s wall, {best_cpu:.0f} records per CPU-second, on 1 core "
          f"({sig.shape[0]} leads x {sig.shape[1]} samples, best of 3 x {cfg.n}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if cfg.write:
        import wfdb  # noqa: F401
        with tempfile.TemporaryDirectory() as d:
            t, c = time.perf_counter(), time.process_time()
            for i in range(cfg.write):
                S._make_record(i, Path(d), 1, S._gen_kw(S.SynthConfig()), plot=False)
            print(f"synthesize + WFDB write (the CLI's per-record work): {cfg.write / (time.perf_counter() - t):.0f} "
                  f"records/s wall, {cfg.write / (time.process_time() - c):.0f} per CPU-second; wfdb.wrsamp dominates")


if __name__ == "__main__":
    main()
