"""Backbone creation, local-only pretrained weights, and checkpoint loading between stages (tiny timm models)."""
from __future__ import annotations

import pytest
import torch

from src.config import LABELS
from src.model import (WeightsMismatchError, create_model, head_keys, init_from_checkpoint, load_checkpoint)


def _ckpt(model, arch, labels):
    return {"model": model.state_dict(), "arch": arch, "labels": list(labels), "config": {}, "epoch": 1}


def test_create_model_multilabel_head_with_dropout():
    m = create_model("convnext_atto", num_classes=5, drop_rate=0.2).eval()
    assert m(torch.rand(2, 3, 32, 64)).shape == (2, 5)
    assert m.head.drop.p == 0.2
    assert head_keys(m) == {"head.fc.weight", "head.fc.bias"}
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_model("convnext_nonexistent", 5)


def test_pretrained_from_local_file_only(tmp_path):
    src = create_model("convnext_atto", num_classes=1000, drop_rate=0.0)
    f = tmp_path / "convnext_atto_in1k.pth"
    torch.save(src.state_dict(), f)
    m = create_model("convnext_atto", num_classes=5, pretrained=f)
    assert torch.equal(m.stem[0].weight, src.stem[0].weight)
    assert torch.equal(m.stages[3].blocks[0].mlp.fc1.weight, src.stages[3].blocks[0].mlp.fc1.weight)
    assert m.head.fc.weight.shape == (5, 320)

    with pytest.raises(FileNotFoundError, match="missing.pth not found.*--pretrained=hub"):
        create_model("convnext_atto", 5, pretrained=tmp_path / "missing.pth")


def test_pretrained_hub_loads_timm_weights_with_the_download_mocked(tmp_path, monkeypatch):
    """--pretrained=hub: timm's pretrained weights for the arch (backbone exact, head new); the fetch is mocked."""
    import huggingface_hub.constants
    import timm.models._builder as builder
    from src.model import hub_name
    src = create_model("convnext_atto", num_classes=1000, drop_rate=0.0)
    f = tmp_path / "convnext_atto_d2_in1k.pth"
    torch.save(src.state_dict(), f)
    fetched = []

    def fake_fetch(model_id, *args, **kwargs):
        fetched.append(model_id)
        return torch.load(f, map_location="cpu")

    def no_url(*args, **kwargs):
        raise AssertionError("timm tried a URL instead of the hub")
    monkeypatch.setattr(builder, "load_state_dict_from_hf", fake_fetch)
    monkeypatch.setattr(builder, "load_state_dict_from_url", no_url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # what HF_HUB_OFFLINE=0 gives at import
    torch.manual_seed(3)
    m = create_model("convnext_atto", num_classes=5, pretrained="hub")
    assert fetched == ["timm/convnext_atto.d2_in1k"]  # timm's default tag where HUB_TAGS names none
    own, ref = m.state_dict(), src.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in own if not k.startswith("head.fc."))
    assert m.head.fc.weight.shape == (5, 320)
    assert hub_name("convnext_base") == "convnext_base.fb_in22k_ft_in1k"  # the paper's ImageNet-22k weights
    with pytest.raises(ValueError, match="no pretrained weights for 'ecgka_tracenet'"):
        create_model("ecgka_tracenet", 5, pretrained="hub")


def test_pretrained_hub_fails_fast_when_the_hub_is_offline(monkeypatch):
    import huggingface_hub.constants
    import timm.models._builder as builder
    from src.model import check_pretrained

    def no_fetch(*args, **kwargs):
        raise AssertionError("no download may be tried")
    monkeypatch.setattr(builder, "load_state_dict_from_hf", no_fetch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # src.config's default
    with pytest.raises(RuntimeError, match=r"convnext_base.fb_in22k_ft_in1k.*HF_HUB_OFFLINE=1.*HF_HUB_OFFLINE=0"):
        check_pretrained("convnext_base", "hub")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=0"):
        create_model("convnext_atto", 5, pretrained="hub")
    check_pretrained("convnext_base", "")  # random weights: nothing to check


def test_pretrained_file_of_another_architecture_names_both(tmp_path):
    f = tmp_path / "weights.pth"
    torch.save(create_model("resnet10t", num_classes=1000).state_dict(), f)
    with pytest.raises(WeightsMismatchError, match=r"does not fit 'convnext_atto'.*ResNet"):
        create_model("convnext_atto", 5, pretrained=f)
    torch.save(create_model("convnext_femto", num_classes=1000).state_dict(), f)
    with pytest.raises(WeightsMismatchError, match=r"convnext_atto.*convnext_femto"):
        create_model("convnext_atto", 5, pretrained=f)


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    m = create_model("convnext_atto", 5)
    with pytest.raises(WeightsMismatchError, match=r"'resnet10t'.*'convnext_atto'"):
        init_from_checkpoint(m, _ckpt(create_model("resnet10t", 5), "resnet10t", LABELS), "convnext_atto", LABELS)
    # a checkpoint whose recorded arch is right but whose tensors are not (e.g. hand-edited) is caught on shapes
    lying = _ckpt(create_model("convnext_femto", 5), "convnext_atto", LABELS)
    with pytest.raises(WeightsMismatchError, match=r"convnext_femto.*does not fit 'convnext_atto'"):
        init_from_checkpoint(m, lying, "convnext_atto", LABELS)


def test_stage1_to_stage2_replaces_head_and_carries_backbone():
    torch.manual_seed(0)
    stage1_labels = ["MI", "AF", "HYP", "CD", "STTC", "NORM"]
    s1 = create_model("convnext_atto", len(stage1_labels))
    torch.manual_seed(1)
    s2 = create_model("convnext_atto", len(LABELS))
    fresh_head = s2.head.fc.weight.detach().clone()
    what = init_from_checkpoint(s2, _ckpt(s1, "convnext_atto", stage1_labels), "convnext_atto", LABELS)
    assert "new head" in what
    sd1, sd2 = s1.state_dict(), s2.state_dict()
    for k in sd2:
        if k in head_keys(s2):
            continue
        assert torch.equal(sd1[k], sd2[k]), k
    assert s2.head.fc.weight.shape == (5, 320) and torch.equal(s2.head.fc.weight, fresh_head)


def test_same_label_set_in_other_order_carries_head_reordered():
    torch.manual_seed(0)
    order = ["STTC", "CD", "HYP", "AF", "MI"]
    s1 = create_model("convnext_atto", 5).eval()
    s2 = create_model("convnext_atto", 5).eval()
    init_from_checkpoint(s2, _ckpt(s1, "convnext_atto", order), "convnext_atto", LABELS)
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        assert torch.allclose(s2(x), s1(x)[:, [order.index(lb) for lb in LABELS]], atol=1e-6)


def test_load_checkpoint_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    f = tmp_path / "plain.pth"
    torch.save(create_model("convnext_atto", 5).state_dict(), f)
    with pytest.raises(ValueError, match="not an ecgka checkpoint.*--pretrained"):
        load_checkpoint(f)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable"):
        load_checkpoint(tmp_path / "junk.pt")


def test_tracenet_is_a_timm_model_to_every_stage(tmp_path):
    """ecgka_tracenet (the trace-map CNN) goes through the same create / checkpoint / Grad-CAM paths as timm's."""
    import timm
    from src.explain import target_layer
    from src.model import describe_weights
    m = create_model("ecgka_tracenet", num_classes=6, drop_rate=0.2).eval()
    assert timm.is_model("ecgka_tracenet")
    for size in ((96, 384), (48, 192)):  # any input size: global pooling
        assert m(torch.zeros(2, 3, *size)).shape == (2, 6)
    feats = m.forward_features(torch.zeros(1, 3, 96, 384))
    assert feats.shape == (1, m.num_features, 6, 24)  # 16x smaller: four stride-2 stages after a full-size stem
    assert timm.data.resolve_data_config({}, model=m)["mean"] == (0.5, 0.5, 0.5)
    assert head_keys(m) == {"fc.weight", "fc.bias"} and target_layer(m) is m.stages[-1]
    assert "ecgka_tracenet" in describe_weights(m.state_dict())
    torch.manual_seed(1)
    s2 = create_model("ecgka_tracenet", len(LABELS))
    what = init_from_checkpoint(s2, _ckpt(m, "ecgka_tracenet", [*LABELS, "NORM"]), "ecgka_tracenet", LABELS)
    assert "new head" in what and torch.equal(s2.stem[0].weight, m.stem[0].weight)
    with pytest.raises(WeightsMismatchError, match=r"ecgka_tracenet.*convnext_atto"):
        init_from_checkpoint(create_model("convnext_atto", 5), _ckpt(m, "ecgka_tracenet", LABELS), "convnext_atto",
                             LABELS)
    f = tmp_path / "tracenet.pth"
    torch.save(m.state_dict(), f)  # as a --pretrained file: loads, head resized to the label count
    p = create_model("ecgka_tracenet", 5, pretrained=f)
    assert torch.equal(p.stem[0].weight, m.stem[0].weight) and p.fc.weight.shape == (5, m.num_features)
