"""Fine-tuning init: ``load_pretrained`` from DeiT / timm, released and own checkpoints; head re-init; clear errors."""

from __future__ import annotations

import logging

import pytest
import torch
from deit_layout import deit_state_dict

from hvt.model import WeightsError, create_model, load_pretrained, to_released_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NANO = "haltingvt-nano-g05-b10"  # width 32, 4 blocks (2 Glimpser), 32x32 frames, patch 8


def nano(**kw) -> torch.nn.Module:
    return create_model(NANO, num_classes=kw.pop("num_classes", 5), **kw)


def test_deit_init_is_the_papers(tmp_path, caplog):
    sd = deit_state_dict(32, 4, img_size=64, patch_size=8)  # 8x8 grid: resized to the model's 4x4
    path = tmp_path / "deit.pth"
    torch.save({"model": sd}, path)  # timm / DeiT release layout
    model = nano()
    motion_before = model.motion_head.weight.clone()
    head_before = model.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="hvt.model.pretrained"):
        report = load_pretrained(model, str(path))
    assert report.kind == "deit"
    state = model.state_dict()
    for i in range(4):
        assert torch.equal(state[f"blocks.{i}.attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(state[f"blocks.{i}.mlp.fc2.bias"], sd[f"blocks.{i}.mlp.fc2.bias"])
    for i in range(2):  # Glimpser blocks: temporal attention and its norm copied from spatial, temporal_fc zero
        assert torch.equal(state[f"blocks.{i}.temporal_attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(state[f"blocks.{i}.temporal_norm1.bias"], sd[f"blocks.{i}.norm1.bias"])
        assert not state[f"blocks.{i}.temporal_fc.weight"].any() and not state[f"blocks.{i}.temporal_fc.bias"].any()
    assert not state["time_embed"].any()
    assert torch.equal(state["patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    assert torch.equal(state["cls_token"], sd["cls_token"])
    assert state["pos_embed"].shape == (1, 17, 32)
    assert torch.equal(state["pos_embed"][:, 0], sd["pos_embed"][:, 0])
    # 1000-way ImageNet head does not fit 5 classes: re-initialised, said in the log; motion head keeps its init
    assert torch.equal(model.head.weight, head_before) and torch.equal(model.motion_head.weight, motion_before)
    assert "head re-initialised for 5 classes" in caplog.text
    assert set(report.kept_init) == {"head.weight", "head.bias", "motion_head.weight", "motion_head.bias"}


def test_deit_head_of_the_same_class_count_is_used():
    sd = deit_state_dict(32, 4, img_size=32, patch_size=8, num_classes=5)
    model = nano()
    load_pretrained(model, sd)
    assert torch.equal(model.head.weight, sd["head.weight"])


def test_released_checkpoint_with_another_class_count(caplog):
    source = create_model(NANO, num_classes=200, halted_token_mode="official")
    released = to_released_state_dict(source)
    assert any(k.startswith("backbone.model.") for k in released)
    model = nano(num_classes=4)
    with caplog.at_level(logging.INFO, logger="hvt.model.pretrained"):
        report = load_pretrained(model, released)
    assert report.kind == "released"
    assert "head re-initialised for 4 classes" in caplog.text and "(200, 32)" in caplog.text
    own = model.state_dict()
    for k, v in source.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(own[k], v), k


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda sd: sd.update({"blocks.1.mlp.fc1.weight": torch.zeros(64, 32)}), ["blocks.1.mlp.fc1.weight", "(64, 32)"]),
        (lambda sd: sd.pop("blocks.3.attn.proj.bias"), ["missing", "blocks.3.attn.proj.bias"]),
        (lambda sd: sd.update({"blocks.4.norm1.weight": torch.ones(32)}), ["unexpected", "blocks.4.norm1.weight"]),
    ],
    ids=["mis-shaped", "missing", "unexpected"],
)
def test_anything_but_the_head_that_does_not_fit_is_an_error(break_it, words):
    sd = deit_state_dict(32, 4, img_size=32, patch_size=8)
    break_it(sd)
    model = nano()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_pretrained(model, sd)
    for word in words:
        assert word in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_unreadable_source_names_the_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_pretrained(nano(), str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    torch.save({"weights": {"a": torch.zeros(2)}}, junk)
    with pytest.raises(WeightsError, match="junk.pth"):
        load_pretrained(nano(), str(junk))


def test_hvt_train_refuses_unfit_weights_before_ray_starts(tmp_path, capsys, monkeypatch):
    import json

    import ray

    from hvt.cli import main
    from hvt.train import trainer

    # the test process may already hold a Ray another module started (tests/conftest.py: shared_ray), so
    # "before Ray starts" is checked where training would start or join it
    reached: list[tuple] = []
    monkeypatch.setattr(trainer, "ensure_ray", lambda *args: reached.append(args))
    was_up = ray.is_initialized()

    store = tmp_path / "store"
    version = store / "datasets" / "toy" / "v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"classes": ["a", "b"], "splits": {}}))
    weights = tmp_path / "deit-wrong-width.pth"
    torch.save(deit_state_dict(48, 4, img_size=32, patch_size=8), weights)
    code = main(["train", "--store", str(store), "--dataset", "toy", "--dataset-version", "v1", "--model", NANO,
                 "--pretrained", str(weights), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "deit-wrong-width.pth" in err and "shape mismatches" in err and "patch_embed.proj.weight" in err
    assert not reached and ray.is_initialized() == was_up
