"""The embedded synthetic competition: format, separation of train/test, determinism, resume."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from src import make_data
from src.config import LABELS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_data.main([f"--root={root}", "--preset=tiny", "--seed=3", "--workers=2"])
    return root


def test_layout_matches_the_competition_format(tiny):
    comp = tiny / "ecg-synth-comp"
    train = pd.read_csv(comp / "train.csv", dtype={"id": str})
    sub = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    assert list(train.columns) == ["id", *LABELS, "patient_id"]
    assert list(sub.columns) == ["id", *LABELS]
    assert len(train) == 40 and len(sub) == 20
    assert all((comp / "train" / f"{i}.png").exists() for i in train.id)
    assert all((comp / "test" / f"{i}.png").exists() for i in sub.id)
    assert not list(comp.rglob("*.json")), "sidecars must stay outside the competition folder"
    sol = pd.read_csv(tiny / "ecg-synth-comp-solution" / "solution.csv", dtype={"id": str})
    assert list(sol.id) == list(sub.id) and set(sol.Usage) <= {"Public", "Private"}
    assert set(train.id).isdisjoint(sol.id)
    assert set(train.patient_id).isdisjoint(pd.read_csv(
        tiny / "ecg-synth-comp-solution" / "test_subtypes.csv").id)  # patients are per split
    assert train.patient_id.str.startswith("train-").all()


def test_scans_and_roi_sets(tiny):
    scans = pd.read_csv(tiny / "ecg-synth-scans" / "labels.csv", dtype={"id": str})
    assert len(scans) == 40 and all((tiny / "ecg-synth-scans" / "images" / f"{i}.png").exists() for i in scans.id)
    roi = tiny / "ecg-synth-roi"
    assert "names" in (roi / "dataset.yaml").read_text()
    imgs = sorted((roi / "images").rglob("*.jpg"))
    assert len(imgs) == 24 and len(list((roi / "images" / "val").glob("*.jpg"))) == 5
    for im in imgs:
        lab = (roi / "labels" / im.parent.name / f"{im.stem}.txt").read_text().split()
        c, cx, cy, w, h = lab[0], *map(float, lab[1:])
        assert c == "0" and 0 < w <= 1 and 0 < h <= 1 and 0 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-6


def test_label_prevalences_follow_the_sampler(tmp_path):
    """Labels in train.csv come from the synthesiser's prevalences (checked on the sampler draws make_data uses)."""
    cfg = make_data.MakeDataConfig(preset="tiny", root=str(tmp_path), prevalence="MI=0.5,AF=0.1,HYP=0.2,CD=0.3,STTC=0.3")
    jobs = make_data._jobs("train", 2000, tmp_path, tmp_path, "photo", (64, 64), cfg)
    from src import synth
    draws = np.array([synth.sample_labels(np.random.default_rng([j.seed, 1, j.patient, 0]), j.prevalence)[0]
                      for j in jobs])
    assert np.allclose(draws.mean(0), [0.5, 0.1, 0.2, 0.3, 0.3], atol=0.04)


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".yaml"}


def test_same_seed_same_bytes_and_resume(tiny, tmp_path):
    args = ["--preset=tiny", "--seed=3", "--n_train=6", "--n_test=3", "--n_scans=4", "--n_roi=3", "--workers=1"]
    make_data.main([f"--root={tmp_path / 'a'}", *args])
    a = _digest(tmp_path / "a")
    # the first 6 training images are the same whatever n_train is (streams keyed by index)
    ref = tiny / "ecg-synth-comp" / "train"
    for name, h in a.items():
        if name.startswith("ecg-synth-comp/train/"):
            assert hashlib.sha1((ref / name.split("/")[-1]).read_bytes()).hexdigest() == h
    victim = next((tmp_path / "a" / "ecg-synth-comp" / "test").glob("*.png"))
    victim.unlink()
    make_data.main([f"--root={tmp_path / 'a'}", *args])
    assert _digest(tmp_path / "a") == a


def test_resume_with_other_image_settings_is_refused(tiny):
    with pytest.raises(SystemExit, match="other settings"):
        make_data.main([f"--root={tiny}", "--preset=tiny", "--seed=3", "--photo_hw=176,320", "--n_train=1"])


def test_manifest_written_before_sizes_were_hw_still_resumes(tmp_path):
    """A folder built when the manifest kept photo_size / scan_size as (W, H) resumes with the same sizes as (H, W)."""
    import json
    f = tmp_path / "ecg-synth-comp-solution" / "make_data.json"
    f.parent.mkdir()
    old = {"seed": 3, "photo_size": [640, 352], "scan_size": [550, 425], "prevalence": "", "images_per_patient": 1}
    f.write_text(json.dumps(old))
    cfg = make_data.MakeDataConfig(preset="tiny", seed=3)
    make_data.check_manifest(cfg, tmp_path, cfg.resolved())
    assert json.loads(f.read_text())["photo_hw"] == [352, 640]
    f.write_text(json.dumps({**old, "photo_size": [352, 640]}))  # (H, W) under the old key is another size
    with pytest.raises(SystemExit, match="other settings"):
        make_data.check_manifest(cfg, tmp_path, cfg.resolved())
