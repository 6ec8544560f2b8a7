"""Signal-level ceiling: how well the five labels can be learned from the synthetic *signals* themselves, and how much
of that survives what a page image keeps (time resolution, 2.5 s per lead in a 3x4 layout).

    python -m bench.ceiling                                   # full 10 s view at 100 Hz, 400 and 2000 training records
    python -m bench.ceiling --views=full:100,full:38,3x4:38 --n_train=400,2000

Why: when the image model scores near chance, this says whether the labels themselves are learnable (the synthesiser
is fine and the image route is the bottleneck) and which label the page format hurts most. A small 1D CNN is trained
from scratch on records drawn like src.make_data's (default prevalences, noise on), on one thread, and scored on
held-out records with the competition metric. A view `KIND:HZ` resamples the record to HZ samples/s (38 Hz is what a 384 px-wide
ROI crop of a 25 mm/s page keeps: ~250 mm over 384 px) and, for `3x4`, blanks each lead outside its 2.5 s column of
the standard 3x4 page, keeping lead II whole as the rhythm strip. Amplitude quantisation, trace width, photo effects
and layout variety are not modelled: the figure is an upper bound for the image route at that resolution.
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from src import synth
from src.config import LABELS, LEADS, parse_args, paths
from src.engine import positive_weights
from src.model import make_signal_net as make_net  # the signal route's 1D CNN (ecgka_sig1d)
from src.score import macro_auroc, per_class_auroc
from src.utils import parallel_map, seed_everything, set_threads, write_json

# The standard 3x4 page: columns of 2.5 s, leads per column (rows I/II/III, aVR/aVL/aVF, V1-V3, V4-V6)
COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))


@dataclasses.dataclass
class CeilingConfig:
    """1D-CNN on synthetic signals, per view and training-set size."""
    views: tuple[str, ...] = ("full:100", "full:38", "3x4:38")  # KIND:HZ, KIND = full | 3x4 (see the docstring)
    n_train: tuple[int, ...] = (400, 2000)  # training-set sizes (records); 400 = a demo Stage II fold
    n_test: int = 1000  # held-out records
    epochs: int = 25  # training epochs per (view, size); an epoch is at least 2000 records (small sets repeat)
    lr: float = 3e-3  # AdamW peak lr (one-cycle)
    seed: int = 0  # data and init seed
    threads: int = 1  # torch threads
    workers: int = 0  # synthesis processes (0: one per core)
    out: str = ""  # result JSON (default outputs/bench/ceiling.json)


def _record(i: int, seed: int, split: int) -> tuple[int, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 90 + split, i])  # streams apart from make_data's split codes (1-4)
    sig, meta = synth.synthesize(rng)
    return i, sig.astype(np.float32), np.array([meta["labels"][k] for k in LABELS], np.float32)


def make_set(n: int, seed: int, split: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    from functools import partial
    out = sorted(parallel_map(partial(_record, seed=seed, split=split), range(n), workers=workers, desc=f"synth {n}"),
                 key=lambda o: o[0])  # workers return out of order; the set must not depend on scheduling
    return np.stack([o[1] for o in out]), np.stack([o[2] for o in out])


def apply_view(x: np.ndarray, view: str, fs: int = 500) -> np.ndarray:
    """[N, 12, n] at fs -> the view's [N, 12, m]: resampled by area averaging, then masked for 3x4."""
    import cv2
    kind, hz = view.split(":")
    n = x.shape[-1]
    m = int(round(n * float(hz) / fs))
    flat = x.reshape(-1, n)
    y = cv2.resize(flat, (m, flat.shape[0]), interpolation=cv2.INTER_AREA).reshape(x.shape[0], 12, m)
    if kind == "3x4":
        keep = np.zeros((12, m), bool)
        for c, leads in enumerate(COLUMNS):
            for lead in leads:
                keep[LEADS.index(lead), c * m // 4:(c + 1) * m // 4] = True
        keep[LEADS.index("II")] = True  # the rhythm strip
        y = y * keep
    elif kind != "full":
        raise ValueError(f"view {view!r}: kind must be full or 3x4")
    return y.astype(np.float32)


def fit(net, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int, batch: int = 64,
        min_epoch: int = 2000, aux: np.ndarray | None = None, aux_weight: float = 0.3, desc: str = "fit",
        augment=None):
    """Train `net` in place on [N, 12, n] signals and [N, C] 0/1 labels: AdamW one-cycle, the image stages' weighted BCE,
    gain jitter. An epoch is at least `min_epoch` records (small sets repeat). With `aux` ([N, A], standardised), the
    net has C + A outputs and the extra ones regress aux (MSE, weighted `aux_weight`). `augment(batch, generator)`, if
    given, randomises each batch further (after the gain jitter)."""
    import torch
    from tqdm import tqdm
    steps_per_epoch = max(len(x), min_epoch) // batch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, epochs * steps_per_epoch))
    pos = torch.tensor(positive_weights(y), dtype=torch.float32)
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=pos)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    at = None if aux is None else torch.from_numpy(aux.astype(np.float32))
    c = y.shape[1]
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(epochs), desc=f"{desc} n={len(x)}", leave=False):
        for _ in range(steps_per_epoch):
            idx = torch.randint(0, len(xt), (batch,), generator=g)
            xb = xt[idx] * (1 + 0.1 * torch.randn(batch, 1, 1, generator=g))  # gain: amplitudes vary by device
            out = net(xb if augment is None else augment(xb, g))
            loss = lossf(out[:, :c], yt[idx])
            if at is not None:
                loss = loss + aux_weight * torch.nn.functional.mse_loss(out[:, c:], at[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net


def predict(net, x: np.ndarray, n_out: int) -> np.ndarray:
    """Sigmoid of the first n_out outputs, in batches of 256."""
    import torch
    net.eval()
    with torch.no_grad():
        out = [net(torch.from_numpy(x[i:i + 256]))[:, :n_out] for i in range(0, len(x), 256)]
    return torch.sigmoid(torch.cat(out)).numpy()


def fit_and_score(xtr, ytr, xte, yte, cfg: CeilingConfig) -> dict:
    seed_everything(cfg.seed)
    net = fit(make_net(len(LABELS)), xtr, ytr, cfg.epochs, cfg.lr, cfg.seed)
    p = predict(net, xte, len(LABELS))
    return {"macro_auroc": macro_auroc(yte, p, LABELS, skip_degenerate=True),
            "per_class": per_class_auroc(yte, p, LABELS, skip_degenerate=True)}


def main(argv=None):
    cfg = parse_args(CeilingConfig, argv)
    t0 = time.time()
    xtr_all, ytr_all = make_set(max(cfg.n_train), cfg.seed, 1, cfg.workers)
    xte_all, yte = make_set(cfg.n_test, cfg.seed, 2, cfg.workers)
    set_threads(cfg.threads)  # after the synthesis pool (forking after torch threads start can hang workers)
    rows = []
    for view in cfg.views:
        xtr_v, xte_v = apply_view(xtr_all, view), apply_view(xte_all, view)
        for n in cfg.n_train:
            t = time.time()
            r = fit_and_score(xtr_v[:n], ytr_all[:n], xte_v, yte, cfg)
            rows.append({"view": view, "n_train": n, **r, "seconds": round(time.time() - t, 1)})
            pc = " ".join(f"{k}={v:.3f}" for k, v in r["per_class"].items())
            print(f"[ceiling] view {view:<9} n_train {n:>5}: macro-AUROC {r['macro_auroc']:.4f} [{pc}] "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    out = cfg.out or str(paths().outputs / "bench" / "ceiling.json")
    write_json(out, {"config": dataclasses.asdict(cfg), "results": rows, "wall_s": round(time.time() - t0, 1)})
    print(f"[ceiling] {len(rows)} fits in {time.time() - t0:.0f} s -> {out}")
    return rows


if __name__ == "__main__":
    main()
