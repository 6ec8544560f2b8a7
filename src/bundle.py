"""Build the offline Kaggle dataset the kernels install the kit from: the kit's source plus wheels.

    python -m src.bundle --kaggle_user=me                  # outputs/bundle/ecgka-bundle/ (source + wheels)
    kaggle datasets create -p outputs/bundle/ecgka-bundle --dir-mode zip     # first upload
    kaggle datasets version -p outputs/bundle/ecgka-bundle --dir-mode zip -m "update"
    python -m src.bundle install                           # in a kernel, from <bundle>/ecgka: offline pip install
    python -m src.bundle check                             # anywhere: import every src module, name what is missing

Kaggle notebooks already ship torch, torchvision, numpy, pandas, scikit-learn, opencv and friends (KAGGLE_SHIPS), and
code-competition submissions run with the internet off. So the bundle carries only what Kaggle lacks or what the kit
pins (BUNDLED, versions from requirements.txt, the rest in EXTRA_PINS), as wheels for Kaggle's interpreter, and
installs them with `pip install --no-index --find-links wheels --no-deps`: nothing of Kaggle's is upgraded or pulled
in, torch least of all. Because --no-deps skips pip's own dependency resolution, the build does it instead: every
Requires-Dist of every bundled wheel (markers evaluated for the target interpreter) must be bundled at a version it
accepts or be declared in KAGGLE_SHIPS, and `install` checks the shipped versions against those specifiers (and the
kit's own minimums) before installing. Packages published only as source distributions (grad-cam) are built into
wheels here with `pip wheel --no-deps`; every wheel's tags must match the target interpreter. The kit's source is
copied from `git ls-files`, so no caches, weights or outputs can leak into the upload.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import email.parser
import importlib
import importlib.metadata
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .config import REPO, parse_args, paths
from .utils import write_text

# Installed from the bundle, at requirements.txt's pins: Kaggle lacks these, or ships a version the kit was not run with
# (timm: checkpoints must load into the same architectures; albumentations: old argument names are silently ignored).
BUNDLED = ("timm", "ultralytics", "albumentations", "wfdb", "iterative-stratification", "grad-cam")

# Bundled too, but not pinned in requirements.txt (pip resolved them there): the one place their versions live.
EXTRA_PINS = {
    "albucore": ("0.0.24", "albumentations 2.0.8 requires exactly albucore==0.0.24"),
    "stringzilla": ("5.3.2", "albucore needs stringzilla>=3.10.4 (compiled); the version the kit's venv resolved"),
    "simsimd": ("6.5.16", "albucore needs simsimd>=5.9.2 (compiled); the version the kit's venv resolved"),
    "ultralytics-thop": ("2.2.3", "ultralytics 8.4.190 requires ultralytics-thop>=2.2.3"),
    "ultralytics-platform": ("0.1.99", "ultralytics 8.4.190 requires ultralytics-platform>=0.1.45 on Python>=3.11"),
    "nvidia-ml-py": ("13.615.71", "ultralytics 8.4.190 requires nvidia-ml-py>=12.0.0; Kaggle's CPU image lacks it"),
    "ttach": ("0.0.3", "grad-cam 1.5.7 requires ttach (unpinned); its latest release"),
}

# What the Kaggle image ships and the bundle leaves alone (its CPU image's package list, Kaggle/docker-python
# installed_cpu_packages.txt, 2026-04: torch 2.10, torchvision 0.25, numpy 2.4.6, opencv 4.13, ...): name -> the kit's
# own minimum ("" = none beyond what the bundled wheels declare). `install` checks every installed version against it
# and against every bundled wheel's Requires-Dist on it, before installing anything.
KAGGLE_SHIPS = {
    "torch": ">=2.3",  # torch.amp.GradScaler(device_type) in src/engine.py (added in torch 2.3)
    "torchvision": "", "numpy": "", "pandas": "", "scipy": "", "scikit-learn": "", "opencv-python": "",
    "opencv-python-headless": "", "matplotlib": "", "pillow": "", "pyyaml": "", "requests": "", "tqdm": "",
    "psutil": "", "polars": "", "httpx": "", "huggingface-hub": "", "safetensors": "", "pydantic": "", "h5py": "",
    "aiohttp": "", "fsspec": "", "soundfile": "", "packaging": "", "kaggle": "", "six": "",
}


@dataclasses.dataclass
class BundleConfig:
    mode: str = "build"  # build: make it here | install: checked offline install (from <bundle>/ecgka) | check: imports
    out: str = ""  # bundle folder (default: outputs/bundle/ecgka-bundle)
    kaggle_user: str = "your-kaggle-username"  # owner of the Kaggle dataset (dataset-metadata.json id)
    slug: str = "ecgka-bundle"  # dataset slug; kernels attach /kaggle/input/<slug>
    wheels: bool = True  # fetch/build the wheels (needs PyPI); false: source only (install checks the pins are there)
    python_version: str = "3.12"  # the interpreter the wheels are for (Kaggle's image: 3.12 since Dec 2025)
    glibc: str = "2.31"  # newest glibc a compiled wheel may need (manylinux_2_X); Kaggle's was 2.31 in 2024, newer now


def pins() -> list[str]:
    """The requirement lines of the bundled packages: BUNDLED at requirements.txt's pins, then EXTRA_PINS."""
    pinned = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pinned[canonicalize_name(Requirement(line).name)] = line
    both = sorted(set(pinned) & set(EXTRA_PINS))
    if both:
        raise SystemExit(f"{both} pinned in both requirements.txt and src/bundle.py EXTRA_PINS: keep one pin")
    missing = [n for n in BUNDLED if canonicalize_name(n) not in pinned]
    if missing:
        raise SystemExit(f"{missing} in src/bundle.py BUNDLED have no pin in requirements.txt: pin them there")
    return [pinned[canonicalize_name(n)] for n in BUNDLED] + [f"{n}=={v}" for n, (v, _) in EXTRA_PINS.items()]


def target_tags(python_version: str, glibc: str) -> set[Tag]:
    """Every wheel tag a CPython `python_version` on x86-64 Linux with `glibc` accepts."""
    major, minor = (int(x) for x in python_version.split(".")[:2])
    g_major, g_minor = (int(x) for x in glibc.split(".")[:2])
    plats = [f"manylinux_{g_major}_{m}_x86_64" for m in range(g_minor, 4, -1)]
    # the legacy names of manylinux_2_17, _2_12 and _2_5
    plats += [f"manylinux{alias}_x86_64" for alias, m in (("2014", 17), ("2010", 12), ("1", 5)) if m <= g_minor]
    return set(cpython_tags((major, minor), platforms=plats)) | set(
        compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=plats))


def incompatible(wheels: list[str], accepted: set[Tag]) -> list[str]:
    """The wheel file names among `wheels` that an interpreter accepting the tags `accepted` cannot install."""
    return [w for w in wheels if not parse_wheel_filename(w)[3] & accepted]


def requires(wheel: Path, environment: dict[str, str] | None = None) -> list[Requirement]:
    """The Requires-Dist of a wheel that apply without extras, markers evaluated for `environment` (default: here)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    env = {"extra": "", **(environment or {})}
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def shipped_needs(wheels: list[Path], environment: dict[str, str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """What the wheels need from Kaggle: shipped name -> [(who, specifier)], the kit's own minimums first.

    Raises SystemExit naming every requirement that is neither bundled (at a version it accepts) nor in KAGGLE_SHIPS.
    """
    bundled = {canonicalize_name(parse_wheel_filename(w.name)[0]): parse_wheel_filename(w.name)[1] for w in wheels}
    needs = {n: [("ecgka", spec)] if spec else [] for n, spec in KAGGLE_SHIPS.items()}
    errors = []
    for w in sorted(wheels):
        who = parse_wheel_filename(w.name)[0]
        for r in requires(w, environment):
            name = canonicalize_name(r.name)
            if name in bundled:
                if not r.specifier.contains(bundled[name], prereleases=True):
                    errors.append(f"{who} requires {r}, but the bundle holds {name} {bundled[name]}")
            elif name in KAGGLE_SHIPS:
                needs[name].append((who, str(r.specifier)))
            else:
                errors.append(f"{who} requires {r}, which is neither bundled nor in KAGGLE_SHIPS")
    if errors:
        raise SystemExit("the bundle is not closed:\n  " + "\n  ".join(errors) +
                         "\n  fix: pin the package in src/bundle.py EXTRA_PINS (with the reason), or declare it in "
                         "KAGGLE_SHIPS if the Kaggle image has it")
    return needs


def fetch_wheels(reqs: list[str], dst: Path, python_version: str, glibc: str) -> None:
    """Download `reqs` (no dependencies) for the target into `dst`; build the ones PyPI has only as source here."""
    major, minor = python_version.split(".")[:2]
    plats = sorted({t.platform for t in target_tags(python_version, glibc)} - {"any"})
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        # --no-deps lets pip take a source distribution even for a foreign interpreter; --prefer-binary keeps wheels
        subprocess.run([*pip, "download", "-q", "--no-deps", "--prefer-binary", "--python-version", f"{major}.{minor}",
                        "--implementation", "cp", *(f"--platform={p}" for p in plats), "-d", tmp, *reqs], check=True)
        for f in sorted(Path(tmp).iterdir()):
            if f.suffix == ".whl":
                shutil.move(f, dst / f.name)
            else:  # a source distribution: build its wheel here (the tag check below rejects a compiled one)
                subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dst), str(f)], check=True)
    bad = incompatible([w.name for w in dst.glob("*.whl")], target_tags(python_version, glibc))
    if bad:
        raise SystemExit(f"wheels not installable on CPython {python_version} / glibc {glibc}: {bad}; a source "
                         f"distribution built here is compiled for Python {sys.version_info[0]}.{sys.version_info[1]}: "
                         f"build the bundle with that Python, or pin a release that has a {python_version} wheel")


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


def build(cfg: BundleConfig) -> Path:
    t0 = time.time()
    out = Path(cfg.out) if cfg.out else paths().outputs / "bundle" / cfg.slug
    out.mkdir(parents=True, exist_ok=True)
    reqs = pins()
    n = copy_source(out / "ecgka")
    wheel_dir, partial = out / "wheels", out / "wheels.partial"
    for d in (wheel_dir, partial):
        if d.exists():
            shutil.rmtree(d)
    if cfg.wheels:
        partial.mkdir()
        fetch_wheels(reqs, partial, cfg.python_version, cfg.glibc)
        shipped_needs(sorted(partial.glob("*.whl")),
                      {"python_version": cfg.python_version, "python_full_version": cfg.python_version + ".0"})
        partial.rename(wheel_dir)
    write_text(out / "requirements-kaggle.txt", "\n".join(reqs) + "\n")
    write_text(out / "dataset-metadata.json", json.dumps(
        {"title": "ecgka bundle", "id": f"{cfg.kaggle_user}/{cfg.slug}", "licenses": [{"name": "other"}]}, indent=1))
    wheels = sorted(wheel_dir.glob("*.whl")) if cfg.wheels else []
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[bundle] {n} source files + {len(wheels)} wheels for CPython {cfg.python_version if wheels else '-'}, "
          f"{size / 1e6:.1f} MB, {time.time() - t0:.0f} s -> {out}")
    for w in wheels:
        print(f"  {w.name}  {w.stat().st_size / 1e6:.2f} MB")
    print(f"  upload: kaggle datasets create -p {out} --dir-mode zip")
    return out


def check_shipped(wheels: list[Path]) -> None:
    """Before installing: every package Kaggle must provide is installed at a version the kit and the wheels accept."""
    problems = []
    for name, specs in shipped_needs(wheels).items():
        spec = SpecifierSet(",".join(s for _, s in specs if s))
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if specs:
                problems.append(f"{name} is not installed (needed by {', '.join(sorted({w for w, _ in specs}))})")
            continue
        if not spec.contains(Version(have), prereleases=True):
            problems.append(f"{name} {have} is installed, but {', '.join(f'{w} needs {s}' for w, s in specs if s)}")
    if problems:
        raise SystemExit("[bundle] this image lacks what the kit relies on:\n  " + "\n  ".join(problems) +
                         "\n  fix: pick a Kaggle image (notebook settings: environment) that has them, or bundle the "
                         "package (src/bundle.py BUNDLED/EXTRA_PINS) and rebuild")
    print(f"[bundle] Kaggle's packages OK: torch {importlib.metadata.version('torch')}, "
          f"Python {sys.version.split()[0]}", flush=True)


def install() -> None:
    """Runs inside the bundle's copy of the kit: the bundle is the folder above it. No network is used."""
    bundle = REPO.parent
    reqs = bundle / "requirements-kaggle.txt"
    if not reqs.exists():
        raise SystemExit(f"{reqs} not found: attach the dataset built by `python -m src.bundle` to this notebook")
    wheels = bundle / "wheels"
    bad = incompatible([w.name for w in wheels.glob("*.whl")], set(sys_tags()))
    if bad:
        raise SystemExit(f"[bundle] wheels made for another Python or platform: {bad}; this is Python "
                         f"{sys.version.split()[0]}: rebuild the bundle with --python_version="
                         f"{sys.version_info[0]}.{sys.version_info[1]} and upload it again")
    check_shipped(sorted(wheels.glob("*.whl")))
    # no wheels (a source-only bundle): the pinned packages must already be installed, else pip names the missing one
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-r", str(reqs)]
    if wheels.is_dir():
        cmd += ["--find-links", str(wheels)]
    subprocess.run(cmd, check=True)
    print(f"[bundle] installed {reqs.name} from {wheels if wheels.is_dir() else 'this environment'}", flush=True)
    # a fresh interpreter sees what was just installed, not what this one imported before
    if subprocess.run([sys.executable, "-m", "src.bundle", "check"], cwd=REPO).returncode:
        raise SystemExit("[bundle] installed, but the kit cannot import everything it needs (listed above)")


def third_party_imports(src: Path) -> dict[str, str]:
    """Top-level modules the kit's source imports that are neither the kit's nor the standard library's -> a file."""
    found = {}
    for f in sorted(src.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__", src.name}:
                found.setdefault(top, f"{src.name}/{f.name}")
    return found


def import_all(names: list[str], where: dict[str, str]) -> list[str]:
    """Import each module (their own output hidden: kaggle's login advice, ultralytics' settings); the failures."""
    failed = []
    for name in names:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure is reported, by name
            failed.append(f"{name}{f' (imported by {where[name]})' if name in where else ''}: {type(e).__name__}: {e}")
    return failed


def check() -> None:
    """Import every module of the kit and every package it imports (also the ones imported inside functions)."""
    src = REPO / "src"
    where = third_party_imports(src)
    names = [f"src.{f.stem}" for f in sorted(src.glob("*.py")) if f.stem != "__init__"] + sorted(where)
    failed = import_all(names, where)
    if failed:
        raise SystemExit("[bundle] cannot import:\n  " + "\n  ".join(failed) +
                         "\n  fix: rebuild the bundle with the missing package pinned (src/bundle.py), or install it")
    print(f"[bundle] all {len(names)} modules import ({len(where)} third-party)")


def main(argv=None) -> None:
    cfg = parse_args(BundleConfig, argv, positional=("mode",))
    if cfg.mode not in ("build", "install", "check"):
        raise SystemExit("mode must be build, install or check")
    {"build": lambda: build(cfg), "install": install, "check": check}[cfg.mode]()


if __name__ == "__main__":
    main()
