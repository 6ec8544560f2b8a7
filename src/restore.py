"""Carry a run over Kaggle sessions: copy the previous version's output back into the working folder.

    python -m src.restore --src=ecgka-stage2          # in a kernel, before `python -m src.train ... --resume`
    python -m src.restore --src=/path/to/old/working --dst=/path/to/new/working

Each saved version of a Kaggle notebook starts with an empty /kaggle/working; the previous version's /kaggle/working
is only visible, read-only, when the notebook lists its own output as an input (Kaggle mounts it under
/kaggle/input/<slug>, or a folder deeper on newer images; `src.config.find_input` looks in both). This copies what a
later stage resumes from, the run folders (`outputs/`) and the preprocessing caches (`input/`), into the working
folder, so `--resume` continues the unfinished fold or epoch and finished folds and cached images are skipped.

Rules: a file already in the destination with the same size is kept (restoring twice copies nothing); every file is
written through a temporary name and renamed, so a session killed mid-copy never leaves a half file that a resume
would trust; a missing source is not an error (the first version has nothing to restore) unless --required.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .config import find_input, parse_args, paths
from .utils import atomic_path, temp_target


@dataclasses.dataclass
class RestoreConfig:
    src: str  # the previous version's output: its slug as attached (e.g. ecgka-stage2) or a path
    dst: str = ""  # where to copy to (default: the working folder, /kaggle/working on Kaggle, the repo locally)
    what: tuple[str, ...] = ("outputs", "input")  # sub-folders of the output to copy (run folders, caches)
    required: bool = False  # fail when the source is not attached (default: the first version has none; say so)


def restore(src: Path, dst: Path, what: tuple[str, ...]) -> dict:
    """Copies src/<w> into dst/<w> for each w in `what`; returns {"copied", "kept", "bytes"}."""
    copied = kept = nbytes = 0
    for w in what:
        root = src / w
        if not root.is_dir():
            continue
        for f in sorted(p for p in root.rglob("*") if p.is_file() and temp_target(p.name) is None):
            target = dst / f.relative_to(src)
            size = f.stat().st_size
            if target.is_file() and target.stat().st_size == size:
                kept += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(f, tmp)
            copied += 1
            nbytes += size
    return {"copied": copied, "kept": kept, "bytes": nbytes}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(RestoreConfig, argv)
    dst = Path(cfg.dst) if cfg.dst else paths().outputs.parent
    try:
        src = find_input(cfg.src)
    except FileNotFoundError as e:
        if cfg.required:
            raise SystemExit(f"[restore] {e}; attach the previous version's output to this notebook") from None
        print(f"[restore] no previous output {cfg.src!r} attached: starting fresh")
        return {"copied": 0, "kept": 0, "bytes": 0}
    if src.resolve() == dst.resolve():
        raise SystemExit(f"[restore] --src and --dst are the same folder ({dst})")
    res = restore(src, dst, cfg.what)
    print(f"[restore] {src} -> {dst}: {res['copied']} files copied ({res['bytes'] / 1e6:.1f} MB), "
          f"{res['kept']} already there")
    return res


if __name__ == "__main__":
    main()
