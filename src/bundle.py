"""Build the offline Kaggle dataset the kernels install the kit from: the kit's source plus wheels.

    python -m src.bundle --kaggle_user=me                  # outputs/bundle/ecgka-bundle/ (source + wheels)
    kaggle datasets create -p outputs/bundle/ecgka-bundle --dir-mode zip     # first upload
    kaggle datasets version -p outputs/bundle/ecgka-bundle --dir-mode zip -m "update"
    python -m src.bundle install                           # in a kernel, from <bundle>/ecgka: offline pip install

Kaggle notebooks already ship torch, torchvision, numpy, pandas, scikit-learn, opencv and friends, and
code-competition submissions run with the internet off. So the bundle carries only what Kaggle lacks (or has at
another version), as wheels for Kaggle's Python, downloaded here with `pip download`, and installed there with
`pip install --no-index --find-links`. The kit's source is copied from `git ls-files`, so no caches, weights or
outputs can leak into the upload.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .config import REPO, parse_args, paths
from .utils import write_text

# Installed from the bundle on Kaggle: pinned like requirements.txt, without what the Kaggle image already has.
KAGGLE_EXTRA = ("timm", "ultralytics", "ultralytics-thop", "albumentations", "albucore", "iterative-stratification",
                "wfdb", "grad-cam", "ttach", "stringzilla", "simsimd")


@dataclasses.dataclass
class BundleConfig:
    mode: str = "build"  # build: make the bundle here | install: pip-install its wheels (run from <bundle>/ecgka)
    out: str = ""  # bundle folder (default: outputs/bundle/ecgka-bundle)
    kaggle_user: str = "your-kaggle-username"  # owner of the Kaggle dataset (dataset-metadata.json id)
    slug: str = "ecgka-bundle"  # dataset slug; kernels attach /kaggle/input/<slug>
    wheels: bool = True  # download wheels (needs PyPI); false: source only (for tests, or an online kernel)
    python_version: str = "3.11"  # Kaggle's Python, for `pip download --python-version`
    platform: str = "manylinux2014_x86_64"  # Kaggle's platform tag


def pinned(names: tuple[str, ...]) -> list[str]:
    """The requirement lines of requirements.txt for `names`; extra names not pinned there are taken unpinned."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pins[line.split("==")[0].lower()] = line
    return [pins.get(n.lower(), n) for n in names]


def copy_source(dst: Path) -> int:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not files:
        raise SystemExit("git ls-files listed nothing: run the bundle from a git checkout of the kit")
    if dst.exists():
        shutil.rmtree(dst)
    for f in files:
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    return len(files)


def install() -> None:
    """Runs inside the bundle's copy of the kit: the bundle is the folder above it. No network is used."""
    bundle = REPO.parent
    reqs = bundle / "requirements-kaggle.txt"
    if not reqs.exists():
        raise SystemExit(f"{reqs} not found: attach the dataset built by `python -m src.bundle` to this notebook")
    wheels = bundle / "wheels"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "-q", "-r", str(reqs)]
    if wheels.is_dir():
        cmd[4:4] = ["--find-links", str(wheels)]
    subprocess.run(cmd, check=True)
    print(f"[bundle] installed {reqs.name} from {wheels if wheels.is_dir() else 'the local environment'}")


def main(argv=None) -> None:
    cfg = parse_args(BundleConfig, argv, positional=("mode",))
    if cfg.mode == "install":
        return install()
    if cfg.mode != "build":
        raise SystemExit("mode must be build or install")
    out = Path(cfg.out) if cfg.out else paths().outputs / "bundle" / cfg.slug
    out.mkdir(parents=True, exist_ok=True)
    n = copy_source(out / "ecgka")
    reqs = pinned(KAGGLE_EXTRA)
    write_text(out / "requirements-kaggle.txt", "\n".join(reqs) + "\n")
    if cfg.wheels:
        wheel_dir = out / "wheels"
        wheel_dir.mkdir(exist_ok=True)
        # --no-deps: the dependencies not listed here are already in the Kaggle image.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", cfg.python_version, "--platform", cfg.platform, "-d", str(wheel_dir),
                        *reqs], check=True)
    write_text(out / "dataset-metadata.json", json.dumps(
        {"title": "ecgka bundle", "id": f"{cfg.kaggle_user}/{cfg.slug}", "licenses": [{"name": "other"}]}, indent=1))
    print(f"[bundle] {n} source files{' + wheels' if cfg.wheels else ''} -> {out}\n"
          f"  upload: kaggle datasets create -p {out} --dir-mode zip")


if __name__ == "__main__":
    main()
