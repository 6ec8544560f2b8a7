"""Where everything lives, what the labels are, and the typed-config helper every stage uses.

Paths resolve here and nowhere else:
  local:   input/ (data, read and written), outputs/ (run folders), submissions/
  Kaggle:  /kaggle/input (attached datasets, read-only), /kaggle/working/{input,outputs} (what we write),
           /kaggle/working/submission.csv
Kaggle is detected from KAGGLE_KERNEL_RUN_TYPE (set in every Kaggle notebook) or ECGKA_KAGGLE_ROOT, which also moves
the /kaggle root somewhere else so tests can simulate a Kaggle session on a laptop.

Configs: each stage declares one dataclass; every field has a `# comment` on its line, which `--help` prints.
    cfg = parse_args(TrainConfig)           # python -m src.train --fold=2 --lr=3e-4
Unknown keys are errors (with a did-you-mean), never silently ignored.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import sys
import types
import typing
from pathlib import Path

# Offline by construction: nothing may reach a hub at run time (see README "Troubleshooting").
for _k, _v in {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "YOLO_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)

LABELS: tuple[str, ...] = ("MI", "AF", "HYP", "CD", "STTC")
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------
def on_kaggle() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.environ.get("ECGKA_KAGGLE_ROOT"))


@dataclasses.dataclass(frozen=True)
class Paths:
    read_inputs: tuple[Path, ...]  # where datasets are looked for, first hit wins
    input: Path  # where generated datasets and caches are written
    outputs: Path  # run folders: outputs/<stage>/<name>/
    submissions: Path  # submission CSVs


def paths() -> Paths:
    """Resolved on every call, so tests can flip the environment."""
    if on_kaggle():
        root = Path(os.environ.get("ECGKA_KAGGLE_ROOT", "/kaggle"))
        work = root / "working"
        return Paths((work / "input", root / "input"), work / "input", work / "outputs", work)
    return Paths((REPO / "input",), REPO / "input", REPO / "outputs", REPO / "submissions")


# Kaggle mounts an attached source at /kaggle/input/<slug>, and newer notebooks also at
# /kaggle/input/competitions/<slug>, /kaggle/input/datasets/<owner>/<slug> or /kaggle/input/notebooks/<owner>/<slug>;
# which one has changed over time, so a slug is looked for one and two folders further down too.
KAGGLE_MOUNT_PATTERNS = ("*", "*/*")


def _input_candidates(rel: Path) -> list[Path]:
    """Where `rel` (a slug, or slug/sub/path) may live: each read root, then on Kaggle the nested mounts."""
    out = [d / rel for d in paths().read_inputs]
    if on_kaggle() and not any(c in str(rel) for c in "*?["):  # a pattern is for find_inputs
        mounts = paths().read_inputs[-1]  # /kaggle/input
        for pat in KAGGLE_MOUNT_PATTERNS:
            out += sorted(m / rel.relative_to(rel.parts[0]) for m in mounts.glob(f"{pat}/{rel.parts[0]}"))
    return out


def find_input(name: str | Path) -> Path:
    """A dataset folder by slug (`ecg-synth-comp`) or by path. Raises with the places searched."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        return p.resolve()
    for t in (_input_candidates(p) if p.parts else []):
        if t.exists():
            return t
    tried = [d / p for d in paths().read_inputs]
    if on_kaggle():
        tried += [paths().read_inputs[-1] / pat / p for pat in KAGGLE_MOUNT_PATTERNS]
    raise FileNotFoundError(
        f"dataset '{name}' not found; looked in: {', '.join(map(str, tried))}. "
        f"Build the synthetic one with `python -m src.make_data --preset demo`, or download real data "
        f"with `python -m src.download ...` (see README 'Real data').")


def find_inputs(pattern: str) -> list[Path]:
    """Every existing path matching a glob `pattern` (e.g. `*/outputs/train/stage2`), as a path or under the input
    roots (Kaggle's nested mounts included), without duplicates; [] when none matches."""
    p = Path(pattern)
    if p.is_absolute():
        hits = sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
    else:
        bases = [Path(), *paths().read_inputs]
        pats = [pattern] * len(bases)
        if on_kaggle():
            bases += [paths().read_inputs[-1]] * len(KAGGLE_MOUNT_PATTERNS)
            pats += [f"{pat}/{pattern}" for pat in KAGGLE_MOUNT_PATTERNS]
        hits = [h for base, pat in zip(bases, pats) for h in sorted(base.glob(pat))]
    seen, out = set(), []
    for h in hits:
        key = h.resolve()
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def run_dir(stage: str, name: str) -> Path:
    return paths().outputs / stage / name


# ----------------------------------------------------------------------------------------------------------------
# Typed configs
# ----------------------------------------------------------------------------------------------------------------
def field_comments(cls) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment}, read from the class source."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        last = None  # a comment alone on the lines below a field continues that field's comment
        for line in src.splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
            cont = re.match(r"\s+#\s*(.*)$", line)
            if m:
                last = m.group(1)
                out[last] = m.group(2).strip()
            elif cont and last:
                out[last] += " " + cont.group(1).strip()
            else:
                last = None
    return out


def _convert(text: str, tp, name: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0], name)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"--{name}: expected true/false, got {text!r}")
    if origin in (tuple, list):
        items = [s for s in re.split(r"[,\s]+", text.strip()) if s]
        elem = args[0] if args else str
        vals = [_convert(s, elem, name) for s in items]
        return tuple(vals) if origin is tuple else vals
    if tp is Path:
        return Path(text)
    try:
        return tp(text)
    except (TypeError, ValueError):
        raise SystemExit(f"--{name}: cannot read {text!r} as {getattr(tp, '__name__', tp)}") from None


def format_help(cls, prog: str | None = None) -> str:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    if prog is None:
        prog = cls.__module__
        if prog == "__main__":  # run as `python -m src.x`: name the module, not __main__
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            prog = spec.name if spec else prog
    lines = [f"usage: python -m {prog} [--key=value ...]", ""]
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        lines += [inspect.cleandoc(cls.__doc__), ""]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        tname = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
        lines.append(f"  {f'--{f.name}={default!s}':<32} [{tname}] {comments.get(f.name, '')}")
    return "\n".join(lines)


def parse_args(cls, argv: list[str] | None = None, positional: tuple[str, ...] = ()):
    """Build `cls` from `--key=value` / `--key value` / `--flag` (bool true) arguments.

    `positional` names fields that may also be given bare, in order (e.g. `roi train`). Dashes and underscores in keys
    are interchangeable. Unknown keys raise SystemExit with the closest valid names.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    given: dict[str, object] = {}
    pos = list(positional)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(format_help(cls))
            raise SystemExit(0)
        if not a.startswith("--"):
            if not pos:
                raise SystemExit(f"unexpected argument {a!r}; options are --key=value (see --help)")
            key, text = pos.pop(0), a
        else:
            key, eq, text = a[2:].partition("=")
            key = key.replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
                raise SystemExit(f"unknown option --{key}{hint}; run with --help for the list")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if hints[key] is bool and (nxt is None or nxt.startswith("--")):
                    text = "true"
                elif nxt is None:
                    raise SystemExit(f"--{key} needs a value")
                else:
                    text, i = nxt, i + 1
        given[key] = _convert(text, hints[key], key)
        i += 1
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SystemExit(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    return cls(**given)


def config_dict(cfg) -> dict:
    """A plain, YAML-safe dict (Paths as strings, tuples as lists)."""
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(cls, d: dict):
    """Rebuild a config saved by `config_dict` (unknown keys are errors, as on the command line)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(d) - names
    if extra:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(extra)} in saved config")
    out = {}
    for k, v in d.items():
        tp = hints[k]
        origin = typing.get_origin(tp)
        if origin is tuple and isinstance(v, list):
            v = tuple(v)
        elif tp is Path and v is not None:
            v = Path(v)
        out[k] = v
    return cls(**out)
