"""The CUDA-only settings of training and evaluation, held on the CPU: the fused Adam/AdamW kernel (the CPU
build has one too), the precision rule (bf16 autocast on CUDA, fp32 elsewhere), TF32, the evaluator in bf16.

Model: ``haltingvt-nano-g05-b10`` (width 32, 2 Glimpser + 2 halting blocks), clips ``[2, 3, 8, 32, 32]``."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from hvt.config import OptimConfig, TrainConfig
from hvt.evaluation import evaluator as evaluator_mod
from hvt.evaluation.evaluator import Evaluator, autocast
from hvt.model import create_model
from hvt.train.loop import make_optimizer
from hvt.train.step import configure_backends

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _nano() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("haltingvt-nano-g05-b10", num_classes=5, drop_path_rate=0.0).train()


def _clips(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 8, 32, 32, generator=g) * 2 - 1  # [B, 3, T, H, W]


# fused Adam / AdamW ----------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_optimizer_on_cpu_matches_the_unfused_one(optimizer):
    cfg = TrainConfig(optim=OptimConfig(optimizer=optimizer, lr=1e-3, weight_decay=0.05))
    plain_model = _nano()
    fused_model = copy.deepcopy(plain_model)
    start = {n: p.detach().clone() for n, p in plain_model.named_parameters()}
    plain = make_optimizer(plain_model, cfg, fused=False)
    fused = make_optimizer(fused_model, cfg, fused=True)
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in plain.param_groups)
    kernel = "aten::_fused_adamw_" if optimizer == "adamw" else "aten::_fused_adam_"
    fused_params = dict(fused_model.named_parameters())
    for step in range(3):
        # both optimisers get the same gradients (the plain model's): letting each model compute its own
        # would compare training dynamics, not kernels. Adam divides by sqrt(v), so a gradient that is pure
        # rounding noise (the attention key bias, which softmax ignores) turns a 1e-9 difference in the
        # weights into an O(lr) step difference (measured 8e-6 after 3 steps that way)
        plain.zero_grad()
        out = plain_model(_clips(step))
        y = torch.tensor([step % 5, (step + 1) % 5])
        (F.cross_entropy(out.logits, y) + out.ponder_loss + out.motion_logits.square().mean()).backward()
        for name, param in plain_model.named_parameters():
            fused_params[name].grad = param.grad.clone()
        for opt in (plain, fused):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                opt.step()
            ran = {e.key for e in prof.key_averages()}
            assert (kernel in ran) == (opt is fused), sorted(k for k in ran if "adam" in k)
    moved = max(float((p.detach() - start[n]).abs().max()) for n, p in plain_model.named_parameters())
    diffs = {n: float((p.detach() - fused_params[n].detach()).abs().max())
             for n, p in plain_model.named_parameters()}
    worst = max(diffs, key=diffs.get)
    print(f"{optimizer}: parameters moved up to {moved:.3g}; fused vs unfused differ up to "
          f"{diffs[worst]:.3g} ({worst})")
    # Adam moves each weight by about lr per step (3e-3 over 3 steps); the two kernels do the same arithmetic
    # in another order (fp32, a few 1e-9 measured), so 1e-6 is a thousandth of the update and fails a real
    # slip (a wrong bias correction, weight decay or epsilon)
    assert moved > 1e-3
    assert diffs[worst] <= 1e-6, (worst, diffs[worst])


def _stub_model(on_cuda: list[bool]):
    """A stand-in for a model whose parameters report ``is_cuda`` as given (no CUDA device is needed)."""
    params = [SimpleNamespace(requires_grad=True, ndim=2, is_cuda=c) for c in on_cuda]
    return SimpleNamespace(named_parameters=lambda: [(f"w{i}", p) for i, p in enumerate(params)])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_default_is_fused_only_when_every_parameter_is_on_cuda(monkeypatch, optimizer):
    chosen = {}

    def record(groups, lr, **kwargs):  # what make_optimizer would hand torch.optim
        chosen.clear()
        chosen.update(kwargs)
        return kwargs

    monkeypatch.setattr(torch.optim, "Adam", record)
    monkeypatch.setattr(torch.optim, "AdamW", record)
    cfg = TrainConfig(optim=OptimConfig(optimizer=optimizer))
    make_optimizer(_stub_model([True, True]), cfg)
    assert chosen.get("fused") is True
    make_optimizer(_stub_model([True, False]), cfg)  # a CPU parameter among CUDA ones: not fused
    assert not chosen.get("fused")
    make_optimizer(_stub_model([True, True]), cfg, fused=False)  # an explicit choice wins
    assert not chosen.get("fused")


def test_default_on_a_cpu_model_is_the_unfused_optimizer():
    opt = make_optimizer(_nano(), TrainConfig())
    assert not any(g["fused"] for g in opt.param_groups)


# precision, TF32 -------------------------------------------------------------------------------------
def test_precision_rule_is_bf16_autocast_on_cuda_and_fp32_on_cpu():
    with autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast" on this machine
        rule = autocast(torch.device("cuda"))
    assert isinstance(rule, torch.autocast) and rule.device == "cuda" and rule.fast_dtype == torch.bfloat16


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_configure_backends_turns_tf32_on_for_cuda_only(tf32_flags):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    configure_backends(torch.device("cpu"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    configure_backends(torch.device("cuda"))  # sets flags only: needs no device
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)


def test_evaluator_under_bf16_autocast_returns_fp32_scores(monkeypatch):
    """What the evaluator does on CUDA (bf16 autocast), replayed with the CPU's bf16 autocast."""
    model = _nano().eval()
    gen = torch.Generator().manual_seed(3)
    frames = (torch.rand(2, 2, 8, 32, 32, 3, generator=gen) * 255).to(torch.uint8)  # [B, views, T, H, W, 3]
    fp32 = Evaluator(model).score(frames)
    seen = []
    model.head.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    monkeypatch.setattr(evaluator_mod, "autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    bf16 = Evaluator(model).score(frames)
    assert seen and set(seen) == {torch.bfloat16}, "the model should have run under bf16 autocast"
    assert bf16.probs.dtype == bf16.gflops.dtype == torch.float32
    torch.testing.assert_close(bf16.probs.sum(-1), torch.ones(2), rtol=0, atol=1e-6)  # softmax taken in fp32
    # bf16 keeps 8 significant bits: probabilities of 5 classes (~0.2) agree to a few 1e-3
    torch.testing.assert_close(bf16.probs, fp32.probs, rtol=0, atol=1e-2)
