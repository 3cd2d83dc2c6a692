"""`hvt registry import`: a released-layout checkpoint becomes a registry version (official mode by default)."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import torch
from deit_layout import deit_state_dict
from shared_data import shared_path

from hvt import registry
from hvt.cli import main
from hvt.imports import overrides_from_released_config
from hvt.model import create_model, to_released_state_dict
from hvt.predict import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NANO = "haltingvt-nano-g05-b10"


def _fixture() -> dict:
    return torch.load(shared_path("fidelity", "g05_b20_shifted_center.pt"), map_location="cpu", weights_only=True)


def _override_flags(overrides: dict) -> list[str]:
    flags = []
    for key, value in overrides.items():
        flags += ["--model-override", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    return flags


def test_import_released_checkpoint_reproduces_its_outputs(tmp_path, capsys):
    case = _fixture()
    weights = tmp_path / "released.pth"
    torch.save(case["state_dict"], weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"action {i}" for i in range(200)) + "\n")
    store = str(tmp_path / "store")
    overrides = overrides_from_released_config(case["config"])
    code = main(["registry", "import", "released-g05", "--weights", str(weights), "--variant", "haltingvt-s-g05-b20",
                 "--classes", str(classes), "--store", store, "--json", *_override_flags(overrides)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["version"] == "v1"
    lineage = record["lineage"]
    assert lineage["imported"] is True and lineage["halted_token_mode"] == "official"
    assert lineage["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert registry.get_alias(store, "released-g05") == "v1"
    loaded = load_model("champion", store=store, registry_name="released-g05")
    assert loaded.classes[7] == "action 7" and loaded.network.config.halted_token_mode == "official"
    with torch.no_grad():
        out = loaded.network(case["input"].float())
    assert (out.logits - case["logits"]).abs().max().item() <= 1e-4


def test_import_in_remove_mode_warns_and_bad_weights_are_clear_errors(tmp_path, caplog, capsys):
    store = str(tmp_path / "store")
    source = create_model(NANO, num_classes=6, halted_token_mode="official")
    weights = tmp_path / "nano-released.pth"
    torch.save(to_released_state_dict(source), weights)
    with caplog.at_level(logging.WARNING):
        code = main(["registry", "import", "nano", "--weights", str(weights), "--variant", NANO, "--store", store,
                     "--model-override", "halted_token_mode=remove", "--sampling", "8x4x2"])
    assert code == 0
    data = registry.load_checkpoint(registry.get_version(store, "nano", "v1"))["data_config"]
    # the released test transform scaled to the 32-pixel input: short side 256/224 of the crop, centre crop
    assert (data["num_frames"], data["frame_interval"], data["num_clips"]) == (8, 4, 2)
    assert (data["crop_size"], data["test_short_side"], data["test_crops"]) == (32, 37, 1)
    assert "outputs change" in caplog.text and "'remove'" in caplog.text
    version = registry.get_version(store, "nano", "v1")
    assert version.lineage["halted_token_mode"] == "remove" and version.metrics["num_classes"] == 6
    with caplog.at_level(logging.WARNING):  # loading it again says so too
        caplog.clear()
        load_model("v1", store=store, registry_name="nano")
    assert "outputs change" in caplog.text
    # does not fit the variant: every key at fault named, exit 2, nothing registered
    capsys.readouterr()
    code = main(["registry", "import", "nano", "--weights", str(weights), "--variant", "haltingvt-micro-g05-b10",
                 "--store", store])
    err = capsys.readouterr().err
    assert code == 2 and "nano-released.pth" in err and "shape mismatches" in err
    assert [v.version for v in registry.list_versions(store, "nano")] == ["v1"]
    # an image ViT is for fine-tuning, not for importing
    deit = tmp_path / "deit.pth"
    torch.save(deit_state_dict(32, 4, img_size=32, patch_size=8), deit)
    code = main(["registry", "import", "nano", "--weights", str(deit), "--variant", NANO, "--store", store])
    assert code == 2 and "--pretrained" in capsys.readouterr().err
    code = main(["registry", "import", "nano", "--weights", str(tmp_path / "missing.pth"), "--variant", NANO,
                 "--store", store])
    assert code == 2 and "missing.pth" in capsys.readouterr().err


CALLED: list[str] = []


def _record_call(tag: str) -> None:
    CALLED.append(tag)


class _PickledHook:
    """An object whose unpickling would call code (as mmengine's HistoryBuffer or any class in 'meta' could)."""

    def __reduce__(self):
        return (_record_call, ("unpickled",))


def test_released_checkpoint_with_pickled_meta_loads_tensors_only(tmp_path, caplog):
    """mmaction2 checkpoints pickle more than tensors ('meta', 'message_hub', numpy values): their tensors are
    read without importing or calling anything else."""
    import numpy as np

    store = str(tmp_path / "store")
    source = create_model(NANO, num_classes=6, halted_token_mode="official")
    weights = tmp_path / "epoch_20.pth"
    torch.save({"meta": {"hook": _PickledHook(), "seed": np.int64(3), "dataset_meta": {"classes": ("a",)}},
                "state_dict": to_released_state_dict(source), "message_hub": [_PickledHook()]}, weights)
    with pytest.raises(Exception):  # noqa: B017 - what torch raises for non-allow-listed globals varies
        torch.load(weights, weights_only=True)
    with caplog.at_level(logging.INFO):
        assert main(["registry", "import", "nano", "--weights", str(weights), "--variant", NANO, "--store", store]) == 0
    assert CALLED == []  # nothing from the pickle ran
    assert "ignored pickled objects" in caplog.text and "_record_call" in caplog.text  # named, never called
    payload = registry.load_checkpoint(registry.get_version(store, "nano", "v1"))
    for key, value in source.state_dict().items():
        assert torch.equal(payload["model"][key], value), key
