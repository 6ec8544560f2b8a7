"""Backbone + multi-label head, and every way weights get into it.

    model = create_model("convnext_base", num_classes=5, pretrained="weights/convnext_base_22k.pth")
    ckpt = load_checkpoint("outputs/pretrain/stage1/best.pt")
    init_from_checkpoint(model, ckpt, arch="convnext_base", labels=LABELS)   # Stage I -> Stage II

- Any timm backbone by name; the head is timm's own classifier resized to the label count, with dropout before it.
- Plus `ecgka_tracenet`, the kit's own small CNN for trace maps (src.preprocess --strategy=trace), registered with
  timm here so every stage, checkpoint and Grad-CAM path treats it like any timm backbone.
- Plus `ecgka_sig1d`, the signal route's 1D CNN (SIGNAL_ARCHS): input float32 [B, 12, n] in mV with NaN where a page
  does not show a lead (src.data.signal_input); it has the classifier interface the head and checkpoint code use, and
  random weights only (Stage I on signals is its pretraining).
- Pretrained weights (`pretrained=`): "hub" downloads timm's ImageNet weights for the architecture (the tag from
  HUB_TAGS, else timm's default) from the Hugging Face hub; a path loads a local timm weights file (timm's
  `pretrained_cfg_overlay=dict(file=...)`); empty means random weights. The head is always new. src.config sets
  HF_HUB_OFFLINE=1 unless the environment already says otherwise, and huggingface_hub reads it once, at import: "hub"
  then fails at once (check_pretrained) asking for HF_HUB_OFFLINE=0, which e.g. the Kaggle training kernels export.
- A file that does not fit the architecture raises `WeightsMismatchError` naming the file, the architecture asked
  for and the one the file looks like (timm alone says e.g. `KeyError: 'fc.weight'`).

Checkpoint format (written by src.engine, read here and by src.infer): a dict
    {"model": state_dict (no DDP "module." prefix), "arch": timm name, "labels": [label names, head row order],
     "config": the stage config dict, "epoch": completed epochs, "optimizer", "scheduler", "scaler": state dicts
     (None in best.pt, which is for inference), "best_metric": best val macro-AUROC, "ema": EMA state_dict or None,
     "input": {"size": [H, W], "mean": [...], "std": [...]}, "stopper", "history", "rng": RNG states (last.pt)}
In best.pt "model" holds the weights that were validated (the EMA weights when EMA is on).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Sequence

from . import config  # noqa: F401  (offline switches before timm is imported)


# ----------------------------------------------------------------------------------------------------------------
# ecgka_tracenet: a small CNN for trace maps
# ----------------------------------------------------------------------------------------------------------------
# Why its own network: on a trace map (src.page.trace_map) at 96x384 a trace is 1-2 px wide and a QRS complex
# ~4 px long. timm's CNNs shrink the image 4x in their stem (ConvNeXt's 4x4 patchify, ResNet/RegNet's stride-2 conv
# + pool), which blurs exactly that detail away. From random weights on a CPU budget they stayed near chance on these
# maps where this net, which looks at full resolution first and halves the size four times after, learned: hidden-
# test macro-AUROC after 4 epochs on 4500 maps, in a quick comparison outside the stage scripts, ConvNeXt-atto
# 0.55, RegNetX-200MF 0.61, this design 0.75; through src.pretrain (scan hold-out after 6 epochs) ConvNeXt-atto
# 0.49, this net 0.85 (README "Results").
TRACENET_WIDTHS = (16, 32, 64, 96, 128)  # stem, then the four stride-2 stages


def _conv_bn(cin: int, cout: int, stride: int):
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@functools.cache  # one class per process (torch is imported on first use, like everywhere in this module)
def _pooled_head_cls():
    import torch.nn as nn

    class PooledHead(nn.Module):
        """The timm classifier interface (get_classifier / reset_classifier / forward_head / forward) over a
        subclass's forward_features: global average pooling over every axis after the channels, dropout
        (head_drop), linear head (fc); lets the kit's head and checkpoint code treat the kit's own networks like timm
        models."""

        def get_classifier(self):
            return self.fc

        def reset_classifier(self, num_classes: int, global_pool: str | None = None):
            self.num_classes = num_classes
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

        def forward_head(self, x, pre_logits: bool = False):
            x = self.head_drop(x.flatten(2).mean(2))
            return x if pre_logits else self.fc(x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return PooledHead


@functools.cache
def _tracenet_cls():
    import torch.nn as nn

    class TraceNet(_pooled_head_cls()):
        """Full-resolution 3x3 stem, four stages that each halve the size (one stride-2 conv, then one stride-1 conv
        in all but the third), global average pooling, dropout, linear head. BatchNorm throughout: it learns fastest
        from random weights."""

        def __init__(self, num_classes: int = 5, in_chans: int = 3, drop_rate: float = 0.0, **_ignored):
            super().__init__()
            w = TRACENET_WIDTHS
            self.stem = _conv_bn(in_chans, w[0], 1)
            self.stages = nn.Sequential(*[
                nn.Sequential(_conv_bn(w[i], w[i + 1], 2), *([_conv_bn(w[i + 1], w[i + 1], 1)] if i != 2 else []))
                for i in range(4)])
            self.num_features, self.drop_rate = w[-1], drop_rate
            self.head_drop = nn.Dropout(drop_rate)
            self.reset_classifier(num_classes)

        def forward_features(self, x):
            return self.stages(self.stem(x))

    return TraceNet


# timm's register_model reads a module's `default_cfgs`: input size and normalisation for resolve_data_config;
# num_classes=0 says a weights file for it (--pretrained) carries no head we could use: it is dropped on load
default_cfgs = {"ecgka_tracenet": dict(num_classes=0, input_size=(3, 96, 384), mean=(0.5, 0.5, 0.5),
                                       std=(0.5, 0.5, 0.5), crop_pct=1.0, first_conv="stem.0", classifier="fc")}


def ecgka_tracenet(pretrained: bool = False, **kwargs):
    """timm entrypoint for TraceNet (registered on the first create_model call)."""
    from timm.models import build_model_with_cfg
    return build_model_with_cfg(_tracenet_cls(), "ecgka_tracenet", pretrained, **kwargs)


def _register_tracenet() -> None:
    import timm
    if not timm.is_model("ecgka_tracenet"):
        from timm.models import register_model
        register_model(ecgka_tracenet)


# ----------------------------------------------------------------------------------------------------------------
# ecgka_sig1d: the signal route's 1D CNN
# ----------------------------------------------------------------------------------------------------------------
# Seven-wide 1D convolutions with BatchNorm, halving the length four times (~1/16), then global average pooling (so any
# length goes in). On synthetic 10 s records at 100 Hz it learns the five labels to macro-AUROC 0.98-0.99 in 2-3 CPU
# minutes from random weights (python -m bench.ceiling). A lead a page does not show (NaN: outside its 2.5 s column of
# a 3x4 page, or not on the page at all) goes in as 0 mV, the value of a flat lead: no mask channel, so the network
# is the same whether or not anything is missing.
SIGNAL_ARCHS = ("ecgka_sig1d",)
SIG1D_BLOCKS = ((12, 32, 1), (32, 32, 2), (32, 64, 2), (64, 64, 2), (64, 128, 2), (128, 128, 1))  # (in, out, stride)


@functools.cache
def _sig1d_cls():
    import torch
    import torch.nn as nn

    class Sig1DNet(_pooled_head_cls()):
        """The convolution blocks of SIG1D_BLOCKS, global average pooling, dropout, linear head; NaN inputs read as
        0."""

        def __init__(self, num_classes: int = 5, drop_rate: float = 0.0):
            super().__init__()
            self.features = nn.Sequential(*[nn.Sequential(nn.Conv1d(a, b, 7, s, 3, bias=False), nn.BatchNorm1d(b),
                                                          nn.ReLU(True)) for a, b, s in SIG1D_BLOCKS])
            self.num_features = SIG1D_BLOCKS[-1][1]
            self.head_drop = nn.Dropout(drop_rate)
            self.reset_classifier(num_classes)

        def forward_features(self, x):
            return self.features(torch.nan_to_num(x, nan=0.0))

    return Sig1DNet


def make_signal_net(num_classes: int, drop_rate: float = 0.0):
    """The ecgka_sig1d network with a `num_classes` head, random weights (logits out; sigmoid for probabilities)."""
    return _sig1d_cls()(num_classes, drop_rate)


def is_signal_model(model) -> bool:
    """Whether a (possibly DDP-wrapped) model reads signals rather than images."""
    return isinstance(getattr(model, "module", model), _sig1d_cls())


class WeightsMismatchError(ValueError):
    """Weights that belong to another architecture (or another head layout than expected)."""


# --pretrained=hub: which of timm's pretrained tags to download per architecture (others: timm's default tag)
HUB_TAGS = {"convnext_base": "fb_in22k_ft_in1k"}  # the paper's ImageNet-22k ConvNeXt-Base (its 1k fine-tune)


def hub_name(arch: str) -> str:
    """timm's `arch.tag` name that --pretrained=hub downloads."""
    return f"{arch}.{HUB_TAGS[arch]}" if arch in HUB_TAGS else arch


def check_pretrained(arch: str, pretrained: str | Path | None) -> None:
    """Fails fast (before a stage writes anything) when --pretrained cannot be honoured: a missing file, or hub
    weights that do not exist for `arch` or cannot be downloaded because the hub is switched off."""
    import timm
    if not pretrained:
        return
    if arch in SIGNAL_ARCHS:
        raise ValueError(f"--pretrained={pretrained}: {arch} has no pretrained weights (its pretraining is Stage I on "
                         f"signals: pass that run's best.pt as --init); pass --pretrained= (empty)")
    if str(pretrained) != "hub":
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights file {path} not found: copy a timm checkpoint for {arch} (.pth/.bin/.safetensors) "
                f"there, pass --pretrained=hub to download timm's ImageNet weights (needs the network), or "
                f"--pretrained= (empty) to start from random weights.")
        return
    _register_tracenet()
    cfg = timm.models.get_pretrained_cfg(hub_name(arch))
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"--pretrained=hub: timm has no pretrained weights for {arch!r}; pass a weights file or "
                         f"--pretrained= (empty) for random weights")
    import huggingface_hub.constants
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"--pretrained=hub downloads {hub_name(arch)} from the Hugging Face hub, but HF_HUB_OFFLINE=1 (src.config "
            f"sets it when the environment does not). Allow the network with `export HF_HUB_OFFLINE=0` before "
            f"starting Python (on Kaggle also switch the notebook's Internet on), or pass --pretrained=<weights file>, "
            f"or --pretrained= (empty) for random weights.")


def create_model(arch: str = "convnext_base", num_classes: int = 5, pretrained: str | Path | None = None,
                 drop_rate: float = 0.2, drop_path_rate: float = 0.0):
    """A timm model (or ecgka_sig1d) with a `num_classes` multi-label head (logits; apply sigmoid for probabilities);
    `pretrained`: "hub", a weights file or None (see the module doc)."""
    import timm
    if arch in SIGNAL_ARCHS:
        check_pretrained(arch, pretrained)
        return make_signal_net(num_classes, drop_rate)
    _register_tracenet()
    kw = dict(num_classes=num_classes, drop_rate=drop_rate)
    if drop_path_rate:
        kw["drop_path_rate"] = drop_path_rate  # not every timm family accepts the argument
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm architecture {arch!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    if not pretrained:
        return timm.create_model(arch, pretrained=False, **kw)
    check_pretrained(arch, pretrained)
    if str(pretrained) == "hub":
        try:
            return timm.create_model(hub_name(arch), pretrained=True, **kw)
        except Exception as e:  # noqa: BLE001  (hub and network errors come in many types)
            raise RuntimeError(f"--pretrained=hub: could not download {hub_name(arch)} ({type(e).__name__}: "
                               f"{str(e)[:300]}); check the network, or pass --pretrained=<weights file>") from e
    path = Path(pretrained)
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
    except (RuntimeError, KeyError, ValueError) as e:
        raise WeightsMismatchError(
            f"{path} does not fit {arch!r}: the file looks like {describe_weights(_read_state_dict(path))}. "
            f"Pass --arch matching the file, or a weights file for {arch}. (timm said: {str(e)[:300]})") from None


def _read_state_dict(path: Path) -> dict:
    from timm.models import load_state_dict
    try:
        return load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001  (anything unreadable is reported, not re-raised as a traceback)
        return {"__unreadable__": str(e)}


def describe_weights(sd: dict) -> str:
    """A best guess at which architecture a state dict belongs to, from its key names and widths."""
    if "__unreadable__" in sd:
        return f"an unreadable file ({sd['__unreadable__'][:120]})"
    keys = list(sd)
    n = sum(getattr(v, "numel", lambda: 0)() for v in sd.values())
    size = f"{len(keys)} tensors, {n / 1e6:.1f} M values"
    if any(re.match(r"stages\.\d+\.blocks\.\d+\.conv_dw", k) for k in keys) and "stem.0.weight" in sd:
        width = int(sd["stem.0.weight"].shape[0])
        names = {40: "atto", 48: "femto", 64: "pico", 80: "nano", 96: "tiny/small", 128: "base", 192: "large",
                 256: "xlarge"}
        return f"convnext_{names.get(width, f'? (stem width {width})')} ({size})"
    if "stem.0.weight" in sd and "stages.0.0.0.weight" in sd and "fc.weight" in sd:
        return f"ecgka_tracenet ({size})"
    if getattr(sd.get("features.0.0.weight"), "ndim", 0) == 3:
        return f"ecgka_sig1d, a 1D signal network ({size})"
    for pattern, family in ((r"layer1\.0\.conv1\.weight", "a ResNet"), (r"blocks\.0\.attn\.qkv", "a ViT"),
                            (r"layers\.0\.blocks\.0\.attn", "a Swin transformer"),
                            (r"conv_stem\.weight", "an EfficientNet/MobileNet"),
                            (r"downsample_layers\.0", "an original (non-timm) ConvNeXt release")):
        if any(re.match(pattern, k) for k in keys):
            return f"{family} ({size})"
    return f"an unknown architecture ({size}; first keys {keys[:3]})"


# ----------------------------------------------------------------------------------------------------------------
# Our checkpoints
# ----------------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by src.engine; clear errors for a missing or foreign file."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train it first with python -m src.pretrain / "
                                f"src.train, or fix the path)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e}); re-copy it or retrain") from None
    if not isinstance(ckpt, dict) or not {"model", "arch", "labels"} <= set(ckpt):
        raise ValueError(f"{path}: not an ecgka checkpoint (needs keys model, arch, labels). A plain timm weights "
                         f"file goes to --pretrained, not --init.")
    return ckpt


def head_keys(model) -> set[str]:
    """State-dict keys of the classifier (timm's get_classifier()), whatever the family calls it."""
    clf = model.get_classifier()
    prefixes = [name for name, mod in model.named_modules() if mod is clf and name]
    return {k for k in model.state_dict() if any(k.startswith(p + ".") for p in prefixes)}


def init_from_checkpoint(model, ckpt: dict, arch: str, labels: Sequence[str], source: str = "checkpoint") -> str:
    """Loads a checkpoint's weights into `model` (built for `arch` and `labels`). Returns what was done.

    Backbone weights must fit exactly (another architecture -> WeightsMismatchError naming both). The head is carried
    when the checkpoint's label set equals ours (rows reordered if the order differs) and otherwise keeps its fresh
    initialisation: Stage I may have learned a different label space than the target competition.
    """
    import torch
    if ckpt["arch"] != arch:
        raise WeightsMismatchError(f"{source} was trained with arch {ckpt['arch']!r} but this run builds {arch!r}; "
                                   f"pass --arch={ckpt['arch']} or another checkpoint")
    sd = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    head = head_keys(model)
    src_labels, labels = list(ckpt["labels"]), list(labels)
    bad = [k for k in own if k not in head and (k not in sd or sd[k].shape != own[k].shape)]
    extra = [k for k in sd if k not in own]
    if bad or extra:
        ex = bad[0] if bad else extra[0]
        raise WeightsMismatchError(
            f"{source} (arch {ckpt['arch']!r}, looks like {describe_weights(sd)}) does not fit {arch!r}: "
            f"{len(bad)} missing/mis-shaped and {len(extra)} unexpected tensors, e.g. {ex!r}")
    backbone = {k: v for k, v in sd.items() if k not in head}
    if sorted(src_labels) == sorted(labels):
        order = torch.tensor([src_labels.index(lb) for lb in labels])
        for k in head:
            backbone[k] = sd[k].index_select(0, order) if sd[k].shape[:1] == (len(labels),) else sd[k]
        what = "backbone + head" + (" (rows reordered)" if src_labels != labels else "")
    else:
        what = f"backbone only; new head for {labels} (checkpoint head was {src_labels})"
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected and set(missing) <= head, (missing, unexpected)
    return what


def norm_tensors(model, device):
    """The backbone's input normalisation (timm's data config) as two [1, 3, 1, 1] tensors (mean, std) on `device`;
    for a signal network none (0 and 1, [1, 1, 1]): signals go in as mV."""
    import timm
    import torch
    if is_signal_model(model):
        return torch.zeros(1, 1, 1, device=device), torch.ones(1, 1, 1, device=device)
    dc = timm.data.resolve_data_config({}, model=getattr(model, "module", model))  # DDP wraps the model in .module
    return (torch.tensor(dc["mean"], device=device).view(1, 3, 1, 1),
            torch.tensor(dc["std"], device=device).view(1, 3, 1, 1))
