"""`remove` mode built for accelerators: host syncs per forward, attention cost sum_b n_b^2, every parameter in
the graph, equal to `mask` (outputs and gradients) when clips halt differently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hvt.model import create_model, varlen
from hvt.model.halting import calibrate_halting_offset
from hvt.model.varlen import Packing, packed_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HALTING_BLOCKS = 10  # as the paper's models: 12 blocks, 2 Glimpser
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::equal")  # item/bool/int/float end in the first


def _model(mode: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("haltingvt-nano-g05-b10", depth=2 + HALTING_BLOCKS, halted_token_mode=mode,
                        drop_path_rate=0.0, **kw).eval()


def _clips(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 32, 32, generator=g) * 2 - 1


class SyncCounter:
    """Device-to-host reads during ``run``: the profiler's scalar reads (``.item()``, ``bool``/``int``/``float``
    of a tensor all end in ``aten::_local_scalar_dense``), ``nonzero`` (boolean indexing, ``bincount``-free
    compaction), ``equal``; plus what the CPU profiler cannot see: ``tolist``, ``cpu``, ``numpy`` (patched)."""

    PATCHED = ("tolist", "cpu", "numpy")

    def __init__(self, monkeypatch) -> None:
        self.python_calls = {name: 0 for name in self.PATCHED}
        for name in self.PATCHED:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=original, _name=name, **k):
                self.python_calls[_name] += 1
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)

    def run(self, fn) -> tuple[dict[str, int], int]:
        from torch.profiler import ProfilerActivity, profile

        self.python_calls = dict.fromkeys(self.PATCHED, 0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ops = {e.key: e.count for e in prof.key_averages() if e.key in SYNC_OPS}
        counts = {**ops, **{k: v for k, v in self.python_calls.items() if v}}
        return counts, sum(counts.values())


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_remove_makes_at_most_one_host_sync_per_halting_block(monkeypatch, training):
    model = _model("remove")
    x = _clips(4, seed=1)
    calibrate_halting_offset(model, x, 0.5)  # clips halt at different blocks: the variable-length case
    model.train(training)
    counter = SyncCounter(monkeypatch)

    def forward():
        if training:
            out = model(x)
            (out.logits.square().mean() + out.ponder_loss).backward()
        else:
            with torch.no_grad():
                out = model(x)
        forward.out = out

    counts, total = counter.run(forward)
    tpl = forward.out.tokens_per_layer[:, 2:]
    assert len({tuple(row) for row in tpl.tolist()}) > 1, "clips should halt differently"
    print(f"remove, {HALTING_BLOCKS} halting blocks, {'training' if training else 'inference'}: "
          f"{total} host syncs per forward {counts}")
    assert total <= HALTING_BLOCKS, counts


def test_packed_attention_is_per_clip_attention_with_cost_sum_of_squares():
    torch.manual_seed(0)
    heads, head_dim, counts = 2, 8, [5, 0, 3, 7]
    dim = heads * head_dim
    qkv = torch.randn(sum(counts), 3 * dim)
    row_sample = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        out = packed_attention(qkv, Packing(counts, row_sample, len(counts)), heads)
    # two matmuls (q k^T, attn v) of n_b x n_b x dim multiply-adds per clip, 2 FLOPs each: no padding
    assert fc.get_total_flops() == sum(2 * 2 * n * n * dim for n in counts)
    start = 0
    for n in counts:
        if n:
            q, k, v = qkv[start:start + n].view(n, 3, heads, head_dim).permute(1, 2, 0, 3)
            ref = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, dim)
            torch.testing.assert_close(out[start:start + n], ref)
        start += n


def test_every_parameter_gets_a_gradient_even_when_all_tokens_halt_at_once():
    model = _model("remove").train()
    model.set_halting_offset(1e4)  # every token halts at the first halting block
    out = model(_clips(2))
    assert int(out.tokens_per_layer[:, 3].sum()) == 0
    (out.logits.square().mean() + out.ponder_loss + out.motion_logits.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters left out of the graph (DDP would need find_unused_parameters): {missing}"
    assert model.all_parameters_in_graph


def test_remove_equals_mask_in_training_with_stochastic_depth():
    x = _clips(4, seed=2)
    results = {}
    for mode in ("mask", "remove"):
        model = _model(mode, seed=3, num_classes=5)
        for blk in model.blocks:
            blk.drop_path.prob = 0.2
        calibrate_halting_offset(model, x, 0.5)
        model.train()
        torch.manual_seed(7)  # the same stochastic-depth draws in both modes
        out = model(x)
        (F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])) + out.ponder_loss).backward()
        results[mode] = (out, {n: p.grad if p.grad is not None else torch.zeros_like(p)
                               for n, p in model.named_parameters()})
    (m, mg), (r, rg) = results["mask"], results["remove"]
    assert torch.equal(m.tokens_per_layer, r.tokens_per_layer)
    assert len({tuple(row) for row in r.tokens_per_layer[:, 2:].tolist()}) > 1
    assert (m.logits - r.logits).abs().max().item() < 1e-4
    for name, g in mg.items():
        assert torch.allclose(g, rg[name], atol=1e-5, rtol=1e-3), name


def test_the_per_sample_path_runs_on_cpu():
    model = _model("remove")
    x = _clips(3, seed=4)
    calibrate_halting_offset(model, x, 0.5)
    varlen.PATH_CALLS.clear()
    with torch.no_grad():
        model(x)
    assert varlen.PATH_CALLS["per_sample"] > 0 and varlen.PATH_CALLS["uniform"] >= 1
