"""``official`` mode against the released HaltingVT code (dun-research/HaltingVT @ 4830e2a).

The golden cases in ``../shared/fidelity`` (see its README) hold random weights in the released checkpoint layout,
an input and the outputs the released code computed from them. The model is rebuilt from the case's released
config, loaded with the project's strict checkpoint loader and run in eval mode, fp32, without gradients.
"""

from __future__ import annotations

import pytest
import torch
from shared_data import shared_path

from hvt.imports import overrides_from_released_config
from hvt.model import create_model, load_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = ("g05_b20_shifted_center.pt", "g03_b5_real_video.pt")
def load_case(name: str) -> dict:
    return torch.load(shared_path("fidelity", name), map_location="cpu", weights_only=True)


def released_model(case: dict, mode: str = "official") -> torch.nn.Module:
    overrides = overrides_from_released_config(case["config"])
    model = create_model("haltingvt-s-g05-b20", halted_token_mode=mode, **overrides)
    report = load_weights(model, case["state_dict"], kind="released", strict=True)
    assert len(report.loaded) == len(case["state_dict"]) and not report.kept_init  # every tensor used
    return model.eval()


@pytest.mark.parametrize("name", CASES)
def test_official_mode_reproduces_released_code(name):
    case = load_case(name)
    model = released_model(case)
    with torch.no_grad():
        out = model(case["input"].float())
    g = model.config.glimpser_depth
    logit_diff = (out.logits - case["logits"]).abs().max().item()
    motion_diff = (out.motion_logits - case["motion_logits"]).abs().max().item()
    print(f"{name}: max |logit diff| {logit_diff:.2e}, max |motion logit diff| {motion_diff:.2e}, "
          f"|ponder diff| {abs(out.ponder_loss.item() - case['ponder_loss'].item()):.2e}")
    assert logit_diff <= 1e-4
    assert motion_diff <= 1e-4
    assert torch.equal(out.tokens_per_layer[:, g:], case["tokens_per_halting_block"])
    assert torch.equal(out.halting_depth.long(), case["token_halting_block"])
    assert torch.equal(out.cls_halting_depth.long(), case["cls_halting_block"])
    assert abs(out.ponder_loss.item() - case["ponder_loss"].item()) <= 1e-6
