"""The digitiser's learned path: a small trace-segmentation network, trained on CPU from the renderer's free labels.

    python -m src.digitize --fit       # trains it (minutes on a CPU) -> outputs/digitize/trace_net.pt

fit_trace_net draws synthetic pages (scans and photos), rasterises their traces from the renderer's metadata as the
target and fits the network on patches; load_trace_net rebuilds it from what the checkpoint says; learned_ink gives
src.digitize the trace mask it follows instead of the thresholded ink map.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .config import paths
from .page import trace_map


def default_net_path() -> Path:
    return paths().outputs / "digitize" / "trace_net.pt"


def _trace_net(channels: int):
    """Fully convolutional: the page's RGB and its classical ink map in, a trace logit per pixel out. Dilated 3x3
    convolutions see ~1 mm around a pixel at 200 dpi with a few thousand weights."""
    import torch.nn as nn
    layers, c_in = [], 4
    for d in (1, 2, 4, 8, 1):
        layers += [nn.Conv2d(c_in, channels, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        c_in = channels
    return nn.Sequential(*layers, nn.Conv2d(channels, 1, 1))


def _net_input(page: np.ndarray):
    import torch
    ink = 255 - trace_map(page, column_q=25.0)
    x = np.concatenate([page, ink[..., None]], axis=2).astype(np.float32) / 255.0
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def fit_trace_net(out, pages: int = 24, steps: int = 400, patch: int = 96, channels: int = 16, seed: int = 0,
                  batch: int = 12) -> Path:
    """Train the trace network on pages the kit draws (synthetic signals; 100 dpi scans and photos in turn), the
    target being the traces rasterised from the renderer's metadata (pixels.masks_from_meta). Saves
    {state, channels, ...} to `out` (outputs/, never committed); the predictor is rebuilt from what the checkpoint
    says. Minutes on a CPU."""
    import torch
    from . import compose, synth
    from .pixels import masks_from_meta
    from .utils import torch_save
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    xs, ys = [], []
    for i in range(pages):  # 100 dpi scans and photos in turn (adding 200 dpi scans made the network worse)
        sig, smeta = synth.synthesize(synth.record_rng(seed + 1000, i))
        style = ("scan", "photo")[i % 2]
        img, meta = compose.make_image(sig, smeta["fs"], np.random.default_rng([seed, 7, i]), style,
                                       (850, 1100) if style == "scan" else (1088, 1920))
        xs.append(_net_input(img))
        ys.append(torch.from_numpy(masks_from_meta(meta, "trace") > 0).float()[None])
    net = _trace_net(channels)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(4.0))
    from tqdm import tqdm
    for _ in tqdm(range(steps), desc="fit trace net", dynamic_ncols=True):
        xb, yb = [], []
        for _ in range(batch):
            k = int(rng.integers(pages))
            _, h, w = xs[k].shape
            on = torch.nonzero(ys[k][0])
            if len(on) and rng.random() < 0.7:  # mostly around a trace: most of a page is blank paper
                cy, cx = on[int(rng.integers(len(on)))].tolist()
                y0, x0 = int(np.clip(cy - patch // 2, 0, h - patch)), int(np.clip(cx - patch // 2, 0, w - patch))
            else:
                y0, x0 = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
            xb.append(xs[k][:, y0:y0 + patch, x0:x0 + patch])
            yb.append(ys[k][:, y0:y0 + patch, x0:x0 + patch])
        loss = loss_fn(net(torch.stack(xb)), torch.stack(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    out = Path(out)
    torch_save({"state": net.state_dict(), "channels": channels, "pages": pages, "steps": steps, "patch": patch,
                "seed": seed, "final_loss": float(loss.detach())}, out)
    return out


@functools.lru_cache(maxsize=2)
def load_trace_net(path: str):
    """The trace network a checkpoint describes (eval mode); FileNotFoundError naming the fix when there is none."""
    import torch
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no trace network; train one with `python -m src.digitize --fit` "
                                f"(a few minutes on a CPU) or use --method=classical")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = _trace_net(int(ckpt["channels"]))
    net.load_state_dict(ckpt["state"])
    return net.eval()


def learned_ink(page: np.ndarray, net_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(trace probability x 255 float32, boolean trace mask) of a top-down page from the trace network."""
    import torch
    with torch.inference_mode():
        prob = torch.sigmoid(load_trace_net(net_path)(_net_input(page)[None]))[0, 0].numpy()
    return (255 * prob).astype(np.float32), prob > 0.5
