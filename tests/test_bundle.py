"""The offline Kaggle bundle: built for real from PyPI, installed with the network off into a fresh virtual environment
that stands in for the Kaggle image (the kit's venv supplies what Kaggle ships), and its closure and tag checks."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from src import bundle
from src.config import REPO

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
# the module each bundled distribution provides (a pin without an entry here fails test_offline_install)
MODULE = {"timm": "timm", "ultralytics": "ultralytics", "albumentations": "albumentations", "wfdb": "wfdb",
          "iterative-stratification": "iterstrat", "grad-cam": "pytorch_grad_cam", "albucore": "albucore",
          "stringzilla": "stringzilla", "simsimd": "simsimd", "ultralytics-thop": "thop",
          "ultralytics-platform": "ultralytics_platform", "nvidia-ml-py": "pynvml", "ttach": "ttach"}


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The real bundle, wheels for this interpreter (so it installs here)."""
    out = tmp_path_factory.mktemp("bundle") / "ecgka-bundle"
    r = subprocess.run([sys.executable, "-m", "src.bundle", f"--out={out}", f"--python_version={HERE}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_pins_come_from_requirements_and_extra_pins(monkeypatch):
    reqs = {line.split("==")[0]: line for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line}
    got = bundle.pins()
    assert got[:len(bundle.BUNDLED)] == [reqs[n] for n in bundle.BUNDLED]
    assert got[len(bundle.BUNDLED):] == [f"{n}=={v}" for n, (v, _) in bundle.EXTRA_PINS.items()]
    assert all(reason for _, reason in bundle.EXTRA_PINS.values())
    assert not (set(bundle.BUNDLED) | set(bundle.EXTRA_PINS)) & set(bundle.KAGGLE_SHIPS)
    monkeypatch.setitem(bundle.EXTRA_PINS, "timm", ("1.0.0", "a second pin"))
    with pytest.raises(SystemExit, match="timm.*keep one pin"):
        bundle.pins()


def test_bundle_contents(built):
    wheels = sorted(p.name for p in (built / "wheels").glob("*.whl"))
    names = {bundle.canonicalize_name(w.split("-")[0]) for w in wheels}
    assert names == {bundle.canonicalize_name(p.split("==")[0]) for p in bundle.pins()}
    assert "grad_cam-1.5.7-py3-none-any.whl" in wheels  # PyPI has only its source distribution: built here
    assert not names & {"torch", "torchvision", "numpy", "opencv-python", "opencv-python-headless"}
    assert (built / "requirements-kaggle.txt").read_text().split() == bundle.pins()
    assert (built / "ecgka/src/bundle.py").read_text() == (REPO / "src/bundle.py").read_text()
    assert not list(built.rglob("__pycache__"))


def test_wheel_tags_match_target(built, tmp_path):
    wheels = sorted(p.name for p in (built / "wheels").glob("*.whl"))
    assert bundle.incompatible(wheels, bundle.target_tags(HERE, "2.31")) == []
    compiled = [w for w in wheels if not w.endswith("-py3-none-any.whl")]
    assert {w.split("-")[0] for w in compiled} == {"simsimd", "stringzilla"}
    other = "3.12" if HERE != "3.12" else "3.13"  # a wheel compiled for this interpreter does not suit another one
    assert bundle.incompatible(wheels, bundle.target_tags(other, "2.31")) == compiled
    fake = ["a-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "b-1-cp312-abi3-manylinux1_x86_64.whl",
            "c-1-py3-none-any.whl", "d-1-cp312-cp312-manylinux_2_34_x86_64.whl",  # these four suit glibc 2.34
            "e-1-cp313-cp313-manylinux1_x86_64.whl", "f-1-cp312-cp312-musllinux_1_2_x86_64.whl",
            "g-1-cp312-cp312-manylinux_2_17_aarch64.whl", "h-1-cp311-cp311-manylinux1_x86_64.whl"]
    assert bundle.incompatible(fake, bundle.target_tags("3.12", "2.31")) == fake[3:]
    assert bundle.incompatible(fake, bundle.target_tags("3.12", "2.35")) == fake[4:]
    # the real compiled pins exist for Kaggle's 3.12 (the build's own tag check runs on what it fetched)
    dst = tmp_path / "w312"
    dst.mkdir()
    pins = [p for p in bundle.pins() if p.split("==")[0] in {w.split("-")[0] for w in compiled}]
    bundle.fetch_wheels(pins, dst, "3.12", "2.31")
    got = sorted(p.name for p in dst.glob("*.whl"))
    assert len(got) == len(pins) and all("-cp312-" in w for w in got), got


def test_closure_names_what_is_missing(built, monkeypatch, tmp_path):
    wheels = sorted((built / "wheels").glob("*.whl"))
    needs = bundle.shipped_needs(wheels)
    assert ("ecgka", ">=2.3") in needs["torch"] and any(who == "ultralytics" for who, _ in needs["torch"])
    assert any(who == "ultralytics-platform" and "<1" in s for who, s in needs["httpx"])
    with pytest.raises(SystemExit, match="grad-cam requires ttach, which is neither bundled"):
        bundle.shipped_needs([w for w in wheels if not w.name.startswith("ttach-")])
    albucore = next(w for w in wheels if w.name.startswith("albucore-"))
    other = shutil.copy(albucore, tmp_path / "albucore-9.0-py3-none-any.whl")
    with pytest.raises(SystemExit, match="albumentations requires albucore==0.0.24, but the bundle holds albucore 9"):
        bundle.shipped_needs([w for w in wheels if w != albucore] + [Path(other)])
    monkeypatch.delitem(bundle.KAGGLE_SHIPS, "httpx")
    with pytest.raises(SystemExit, match="ultralytics-platform requires httpx"):
        bundle.shipped_needs(wheels)


def test_install_refuses_an_image_that_lacks_what_the_kit_needs(built, monkeypatch):
    wheels = sorted((built / "wheels").glob("*.whl"))
    bundle.check_shipped(wheels)  # the kit's venv has it all
    monkeypatch.setitem(bundle.KAGGLE_SHIPS, "torch", ">=99")
    with pytest.raises(SystemExit, match=r"torch .* is installed, but ecgka needs >=99"):
        bundle.check_shipped(wheels)


def test_install_refuses_wheels_for_another_python(built, tmp_path):
    shutil.copytree(built / "ecgka", tmp_path / "b/ecgka")
    shutil.copy(built / "requirements-kaggle.txt", tmp_path / "b")
    (tmp_path / "b/wheels").mkdir()
    (tmp_path / "b/wheels/simsimd-6.5.16-cp399-cp399-manylinux1_x86_64.whl").touch()
    r = subprocess.run([sys.executable, "-m", "src.bundle", "install"], cwd=tmp_path / "b/ecgka", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and f"rebuild the bundle with --python_version={HERE}" in r.stderr, r.stderr[-2000:]


def test_import_check_names_the_missing_module(tmp_path):
    (tmp_path / "m.py").write_text("import os\nfrom . import x\n\ndef f():\n    import not_a_pkg_xyz.sub\n"
                                   "    from yaml import safe_load\n")
    where = bundle.third_party_imports(tmp_path)
    assert where == {"not_a_pkg_xyz": f"{tmp_path.name}/m.py", "yaml": f"{tmp_path.name}/m.py"}
    failed = bundle.import_all(["json", "not_a_pkg_xyz"], where)
    assert len(failed) == 1 and failed[0].startswith(f"not_a_pkg_xyz (imported by {tmp_path.name}/m.py): "
                                                     "ModuleNotFoundError")


@pytest.mark.skipif(not _unshare_ok(), reason="needs `unshare -n` (root or user namespaces) to cut the network")
def test_offline_install_into_fresh_venv(built, tmp_path):
    """Network off: `install` puts every bundled package into a fresh venv; Kaggle's stand-in (torch, numpy, ...) is
    the kit's venv, reachable through a .pth after the fresh site-packages, and stays untouched."""
    assert set(MODULE) == {bundle.canonicalize_name(p.split("==")[0]) for p in bundle.pins()}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin/python"
    fresh = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip())
    shared = Path(sysconfig.get_paths()["purelib"])  # the kit's venv: pip, torch, numpy, ... as on Kaggle
    (fresh / "zz-kaggle-image.pth").write_text(f"{shared}\n")
    kit = built / "ecgka"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "PYTHONPATH": str(kit),
           "YOLO_CONFIG_DIR": str(tmp_path / "yolo"),
           # no pip configuration (this machine's points at local mirrors); and the kit's venv already holds the
           # pinned versions, which pip would take as installed: install into the fresh venv regardless
           "PIP_CONFIG_FILE": os.devnull, "PIP_IGNORE_INSTALLED": "1"}

    def run(*args):
        r = subprocess.run(["unshare", "-n", str(py), *args], cwd=kit, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    out = run("-m", "src.bundle", "install")
    assert "Kaggle's packages OK" in out and "modules import" in out, out
    assert "usage: python -m src.roi" in run("-m", "src.roi", "--help")
    probe = ("import importlib, importlib.metadata as md, json, sys\n"
             "mods = json.loads(sys.argv[1])\n"
             "print(json.dumps({d: [md.version(d), str(md.distribution(d).locate_file('')),"
             " importlib.import_module(m).__file__] for d, m in mods.items()}))")
    got = json.loads(run("-c", probe, json.dumps({**MODULE, "torch": "torch"})))
    pins = dict(p.split("==") for p in bundle.pins())
    for dist, (version, location, file) in got.items():
        if dist == "torch":  # Kaggle's torch: neither installed nor shadowed by the bundle
            assert Path(location) == shared and Path(file).is_relative_to(shared), (location, file)
            assert not list(fresh.glob("torch*"))
        else:
            assert version == pins[dist] and Path(location) == fresh and Path(file).is_relative_to(fresh), \
                (dist, version, location, file)
