"""Analytic FLOPs (one multiply-add = one FLOP) against torch's FlopCounterMode, and the paper's numbers."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hvt.commands import flops as flops_cmd
from hvt.model import create_model, flops_summary, model_macs
from hvt.model.halting import calibrate_halting_offset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def counted_gmacs(model, x):
    # FlopCounterMode counts 2 FLOPs per multiply-add and sees attention only through the math kernel
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        out = model(x)
    return counter.get_total_flops() / 2 / 1e9, out


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("jointvt-nano", {}),
        ("haltingvt-nano-g05-b10", {"halting": False}),
        ("haltingvt-nano-g03-b10", {"halting": False, "num_frames": 4, "img_size": 48}),
        ("haltingvt-micro-g07-b20", {"halting": False, "num_frames": 2}),
    ],
)
def test_analytic_matches_flop_counter(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    cfg = model.config
    x = torch.rand(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size) * 2 - 1
    counted, out = counted_gmacs(model, x)
    analytic = model_macs(cfg) / 1e9
    assert analytic == pytest.approx(counted, rel=0.02)
    assert out.gflops.item() == pytest.approx(counted, rel=0.02)


def test_spent_flops_follow_halting_in_remove_mode():
    # batch 1: remove mode computes exactly the active tokens, so the per-sample count is what really ran
    torch.manual_seed(0)
    model = create_model("haltingvt-nano-g05-b10", depth=7, halted_token_mode="remove").eval()
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    calibrate_halting_offset(model, x, 0.5)
    counted, out = counted_gmacs(model, x)
    assert out.gflops.item() == pytest.approx(counted, rel=0.02)
    bound = model_macs(model.config) / 1e9
    assert out.gflops.item() < 0.85 * bound  # halting saved compute
    # active tokens only ever shrink from block to block
    assert out.tokens_per_layer[0, 2:].tolist() == sorted(out.tokens_per_layer[0, 2:].tolist(), reverse=True)


def test_paper_numbers():
    s = flops_summary("jointvt-s")
    assert s["dense_gflops"] == pytest.approx(56.5, rel=0.01)
    assert s["no_halting_gflops"] == pytest.approx(s["dense_gflops"])
    assert s["tokens_in"] == 1 + 8 * 196
    for name, bound in [("haltingvt-s-g03-b5", 17.6), ("haltingvt-s-g03-b10", 17.6),
                        ("haltingvt-s-g05-b20", 26.5), ("haltingvt-s-g07-b20", 37.2)]:
        s = flops_summary(name, num_frames=8, img_size=224)
        assert s["no_halting_gflops"] == pytest.approx(bound, rel=0.005), name
        assert s["dense_gflops"] == pytest.approx(56.5, rel=0.01)
    assert flops_summary("haltingvt-s-g05-b20")["tokens_after_glimpser"] == 1 + 8 * 98


def test_flops_command(capsys):
    parser = argparse.ArgumentParser(prog="hvt")
    flops_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["flops", "jointvt-s", "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dense_gflops"] == pytest.approx(56.5, rel=0.01)
    args = parser.parse_args(["flops", "haltingvt-s-g05-b20", "--frames", "16", "--size", "224"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "no-halting bound" in text and "3137 tokens" in text
    args = parser.parse_args(["flops", "nope"])
    assert args.func(args) == 2
    assert "valid names" in capsys.readouterr().err
