"""Grad-CAM maps, per-image figures and the OOF contact sheet on a briefly trained tiny model."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src import explain
from src.config import LABELS
from src.engine import to_input
from src.model import norm_tensors
from src.model import create_model
from src.utils import imread, torch_save
from tests.fake_cache import make_cache

SIZE = (64, 128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """convnext_atto trained for a few dozen steps on images where each positive label draws a dark bar in its own
    column band; saved as a 2-fold run folder (same weights in both folds) with oof.csv and preprocess.yaml."""
    tmp = tmp_path_factory.mktemp("explain")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is as fast, and far faster when a neighbour process is busy
    cache, labels_csv = make_cache(tmp / "cache", 24, size=SIZE)
    table = pd.read_csv(labels_csv, dtype={"id": str})
    torch.manual_seed(0)
    model = create_model("convnext_atto", len(LABELS), drop_rate=0.0)
    mean, std = norm_tensors(model, "cpu")
    x = to_input(torch.from_numpy(np.stack([imread(cache / "images" / f"{i}.png").transpose(2, 0, 1)
                                            for i in table["id"]])), "cpu", mean, std, channels_last=False)
    y = torch.tensor(table[list(LABELS)].to_numpy(np.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(25):
        idx = torch.randperm(len(x))[:8]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(x)).numpy()
    run = tmp / "run"
    for k in (0, 1):
        torch_save({"model": model.state_dict(), "arch": "convnext_atto", "labels": list(LABELS), "config": {},
                    "epoch": 1, "input": {"size": list(SIZE), "mean": mean.flatten().tolist(),
                                          "std": std.flatten().tolist(), "cache": str(cache)}},
                   run / f"fold{k}" / "best.pt")
    (run / "preprocess.yaml").write_text((cache / "preprocess.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({"cache": str(cache), "arch": "convnext_atto"}))
    oof = table[["id", *LABELS]].assign(fold=np.arange(len(table)) % 2)
    for j, lb in enumerate(LABELS):
        oof[f"pred_{lb}"] = probs[:, j]
    oof.to_csv(run / "oof.csv", index=False)
    yield {"model": model, "x": x, "y": y, "cache": cache, "run": run, "tmp": tmp}
    torch.set_num_threads(threads)


def test_grad_cam_has_input_size_and_is_not_constant(trained):
    maps, probs = explain.grad_cam(trained["model"], trained["x"][:4], [0, 3])
    assert maps.shape == (4, 2, *SIZE) and probs.shape == (4, len(LABELS))
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    for b in range(4):
        for j in range(2):
            assert maps[b, j].std() > 1e-3, (b, j)
    # different classes look at different places
    assert not np.allclose(maps[:, 0], maps[:, 1])
    img = imread(next((trained["cache"] / "images").glob("*.png")))
    ov = explain.overlay(img, maps[0, 0])
    assert ov.shape == img.shape and ov.dtype == np.uint8 and not np.array_equal(ov, img)


def test_cli_figures_per_image(trained, tmp_path):
    ckpt = trained["run"] / "fold0" / "best.pt"
    table = explain.main([f"--ckpt={ckpt}", f"--images={trained['cache'] / 'images'}", "--limit=3",
                          f"--out={tmp_path}"])
    assert len(table) == 3 and list(table.columns) == ["id", *LABELS]
    for iid in table["id"]:
        fig = imread(tmp_path / f"{iid}_gradcam.png")
        assert fig.shape[0] > SIZE[0] and fig.shape[1] > SIZE[1]  # 2x3 panels with titles
    assert (tmp_path / "gradcam.csv").is_file()


def test_contact_sheet_picks_most_confident_true_and_false_positives(trained, tmp_path):
    sel = explain.main([f"--run={trained['run']}", "--contact_sheet", "--per_cell=2", f"--out={tmp_path}"])
    assert (tmp_path / "contact_sheet.png").is_file() and (tmp_path / "contact_sheet.csv").is_file()
    oof = pd.read_csv(trained["run"] / "oof.csv", dtype={"id": str})
    for lb in LABELS:
        tp = sel[(sel["class"] == lb) & (sel["kind"] == "TP")]
        want = oof[oof[lb] == 1].sort_values(f"pred_{lb}", ascending=False)["id"].head(2).tolist()
        assert tp["id"].tolist() == want
        fp = sel[(sel["class"] == lb) & (sel["kind"] == "FP")]
        assert (oof.set_index("id").loc[fp["id"], lb] == 0).all()
    sheet = imread(tmp_path / "contact_sheet.png")
    assert sheet.shape[0] > 5 * SIZE[0] // 2


def test_clear_errors(trained, tmp_path):
    with pytest.raises(SystemExit, match="needs --run"):
        explain.main(["--contact_sheet"])
    with pytest.raises(SystemExit, match="--classes: unknown"):
        explain.main([f"--ckpt={trained['run'] / 'fold0' / 'best.pt'}", f"--images={trained['cache'] / 'images'}",
                      "--classes=NORM", f"--out={tmp_path}"])
