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

Recipes: `--recipe=NAME|PATH[,NAME|PATH...]` gives a stage its defaults from YAML files (recipes/<NAME>.yaml, or any
path), applied in order, each whole; keys given on the command line override them.
    python -m src.pretrain --recipe=paper --sources=...        # recipes/paper.yaml's Stage I settings
    python -m src.train --recipe=outputs/train/demo-stage2/config.yaml --name=again    # rerun a run's resolved config
    python -m src.config cpu,debug pretrain                     # what a recipe gives a stage (one key: pretrain.lr)
A recipe holds sections named after the stages' config classes (snake case, `Config` dropped: preprocess, pretrain,
train, roi_train, infer, fit = FitConfig, read by both pretrain and train); a stage reads the sections of its class and
of the classes it derives from (train reads fit, then train), and top-level keys, which must be its own options (the
form of the config.yaml a run writes). Every section name and key is checked against the options of its stage, so a
typo anywhere in a recipe is an error (naming the file) in whichever stage reads it first.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
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
RECIPES = REPO / "recipes"  # recipes/<name>.yaml: --recipe=<name>


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


def find_input(name: str | Path) -> Path:
    """A dataset folder by slug (`ecg-synth-comp`) or by path. Raises with the places searched."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        return p.resolve()
    hits = find_inputs(str(p)) if p.parts and not any(c in str(p) for c in "*?[") else []  # a pattern: find_inputs
    if hits:
        return hits[0]  # the read roots first, then Kaggle's nested mounts
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


def _as_text(v) -> str:
    """A YAML value as the command line writes it (lists comma-joined, booleans true/false, null empty)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(_as_text(x) for x in v)
    return str(v)


def _typed(v, tp, name: str):
    """A value read from YAML as the field's type: what config_dict wrote, or what a person typed in a recipe (YAML
    reads 2e-3 as a string). Strings, numbers and lists go through the command line's own conversion."""
    if v is None and type(None) in typing.get_args(tp):
        return None
    if isinstance(v, str) and tp in (str, Path):
        return tp(v)  # as written: an empty string stays one
    origin = typing.get_origin(tp)
    if isinstance(v, list) and origin in (tuple, list):  # item by item: a path in a list may hold a space
        items = [_typed(x, (typing.get_args(tp) or (str,))[0], name) for x in v]
        return tuple(items) if origin is tuple else items
    return _convert(_as_text(v), tp, name)


def format_help(cls, prog: str | None = None, defaults: dict | None = None) -> str:
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
    defaults = {**field_defaults(cls), **(defaults or {})}
    for f in dataclasses.fields(cls):
        default = defaults.get(f.name, "(required)")
        tname = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
        lines.append(f"  {f'--{f.name}={default!s}':<32} [{tname}] {comments.get(f.name, '')}")
    lines.append(f"  {'--recipe=NAME|PATH,...':<32} [str] defaults from recipes/<NAME>.yaml or a run's config.yaml "
                 f"(src/config.py)")
    return "\n".join(lines)


def field_defaults(cls) -> dict:
    """{field: default} of the fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------
def section_name(class_name: str) -> str:
    """TrainConfig -> train, RoiTrainConfig -> roi_train, FitConfig -> fit: a config class's recipe section."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name.removesuffix("Config")).lower()


@functools.lru_cache(maxsize=None)
def recipe_sections() -> dict[str, tuple[str, str, frozenset[str]]]:
    """{section: (module, class, option names)} for every `class <Name>Config` in src/ (inherited options included),
    read from the source so that checking a recipe imports no stage."""
    classes: dict[str, tuple[str, list[str], set[str]]] = {}
    for f in sorted((REPO / "src").glob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                own = {a.target.id for a in node.body
                       if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)}
                classes[node.name] = (f"src.{f.stem}", [b.id for b in node.bases if isinstance(b, ast.Name)], own)

    def options(name: str) -> set[str]:
        _, bases, own = classes[name]
        return own.union(*(options(b) for b in bases if b in classes))
    return {section_name(n): (mod, n, frozenset(options(n))) for n, (mod, _, _) in classes.items()}


def recipe_files(spec: str) -> list[Path]:
    """`cpu,debug` or `path/x.yaml` -> the files, in order. A name is recipes/<name>.yaml."""
    out = []
    for item in [spec] if Path(spec).is_file() else [s.strip() for s in spec.split(",")]:  # a path may hold a comma
        p = Path(item)
        if not p.is_file() and not p.suffix and len(p.parts) == 1:
            p = RECIPES / f"{item}.yaml"
        if not p.is_file():
            names = ", ".join(sorted(f.stem for f in RECIPES.glob("*.yaml")))
            raise SystemExit(f"--recipe: {item!r} is neither a file nor a recipe in {RECIPES} (there: {names})")
        out.append(p)
    return out


def _recipe_error(path: Path, what: str, key: str, known, fix: str = "") -> SystemExit:
    close = difflib.get_close_matches(key, sorted(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return SystemExit(f"{path}: {what} {key!r}{hint}{fix}")


def recipe_values(cls, spec: str) -> dict:
    """The options a recipe (or comma list of recipes) gives `cls`, typed. Each file in turn: its top-level keys,
    then the sections of `cls`'s base classes and its own (fit before train), so a later file wins whole."""
    import yaml
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    mine = [section_name(k.__name__) for k in reversed(cls.__mro__) if dataclasses.is_dataclass(k)]
    known = dict(recipe_sections())
    for k in cls.__mro__:  # a config outside src/ (a bench) still reads its own section
        if dataclasses.is_dataclass(k):
            known.setdefault(section_name(k.__name__),
                             (k.__module__, k.__name__, frozenset(f.name for f in dataclasses.fields(k))))
    out = {}
    for path in recipe_files(spec):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise SystemExit(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise SystemExit(f"{path}: a recipe is a mapping of sections (pretrain: {{lr: 1e-4}}) or options")
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        sections = {k: v for k, v in data.items() if isinstance(v, dict)}
        for key in top:
            if key not in names:
                owners = [s for s, (_, _, opts) in known.items() if key in opts]
                raise _recipe_error(path, f"{cls.__name__} has no option", key, names,
                                    f"; put it under the section of its stage ({', '.join(owners)})" if owners else "")
        for sec, body in sections.items():
            if sec not in known:
                raise _recipe_error(path, "unknown section", sec, known, "; sections are stages: preprocess, "
                                    "pretrain, train, fit (pretrain and train), roi_train, infer, ...")
            for key in body:
                if key not in known[sec][2]:
                    raise _recipe_error(path, f"section {sec} ({known[sec][0]}) has no option", key, known[sec][2])
        layers = [top] + [sections[s] for s in mine if s in sections]
        for layer in layers:
            for key, v in layer.items():
                try:
                    out[key] = _typed(v, hints[key], key)
                except SystemExit as e:
                    raise SystemExit(f"{path}: {e}") from None
    return out


def recipe_defaults(cls, spec: str) -> dict:
    """Every option of `cls` that has a value without the command line: its defaults, then the recipe's."""
    return {**field_defaults(cls), **recipe_values(cls, spec)}


def _pop_recipe(argv: list[str]) -> tuple[list[str], str]:
    """(argv without --recipe, the recipe spec or '')."""
    rest, spec, i = [], "", 0
    while i < len(argv):
        a = argv[i]
        if a == "--recipe" and i + 1 < len(argv):
            spec, i = argv[i + 1], i + 2
            continue
        if a.startswith("--recipe="):
            spec = a.partition("=")[2]
        else:
            rest.append(a)
        i += 1
    return rest, spec


def parse_args(cls, argv: list[str] | None = None, positional: tuple[str, ...] = ()):
    """Build `cls` from `--key=value` / `--key value` / `--flag` (bool true) arguments.

    `positional` names fields that may also be given bare, in order (e.g. `roi train`). Dashes and underscores in keys
    are interchangeable. Unknown keys raise SystemExit with the closest valid names. `--recipe=` (see the module
    docstring) sets defaults that the other keys override.
    """
    argv, recipe = _pop_recipe(list(sys.argv[1:] if argv is None else argv))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    from_recipe = recipe_values(cls, recipe) if recipe else {}
    given: dict[str, object] = {}
    pos = list(positional)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(format_help(cls, defaults=from_recipe))
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
    given = {**from_recipe, **given}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SystemExit(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    return cls(**given)


def _plain(v):
    """YAML-safe: Paths as strings, tuples as lists, inside dicts and lists too."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def config_dict(cfg) -> dict:
    """A plain, YAML-safe dict (Paths as strings, tuples as lists)."""
    return _plain(dataclasses.asdict(cfg))


def config_from_dict(cls, d: dict):
    """Rebuild a config saved by `config_dict` (unknown keys are errors, as on the command line)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(d) - names
    if extra:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(extra)} in saved config")
    return cls(**{k: _typed(v, hints[k], k) for k, v in d.items()})


# ----------------------------------------------------------------------------------------------------------------
# python -m src.config RECIPES SECTION[.KEY]: what a recipe gives a stage
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ShowConfig:
    """Print the options a recipe gives a stage (its defaults, then the recipe's values): all of them as YAML, or one
    as the command line writes it (run_all.sh reads preprocess.strategy this way).
        python -m src.config cpu,debug pretrain
        python -m src.config paper preprocess.size"""
    recipes: str  # recipe names (recipes/<name>.yaml) or paths, a comma list applied in order
    key: str  # SECTION (a stage: preprocess, pretrain, train, roi_train, infer, ...) or SECTION.KEY


def main(argv: list[str] | None = None) -> str:
    import importlib
    import yaml
    cfg = parse_args(ShowConfig, argv, positional=("recipes", "key"))
    section, _, key = cfg.key.partition(".")
    sections = recipe_sections()
    if section not in sections:
        raise _recipe_error(Path(cfg.recipes), "no stage reads section", section, sections)
    module, name, _ = sections[section]
    cls = getattr(importlib.import_module(module), name)
    values = recipe_defaults(cls, cfg.recipes)
    if key and key not in values:
        raise _recipe_error(Path(cfg.recipes), f"{section} has no option with a value", key, values)
    text = _as_text(values[key]) if key else yaml.safe_dump(_plain(values), sort_keys=False).rstrip("\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
