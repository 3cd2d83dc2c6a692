"""Core behaviour of hvt.model on the nano sizes: outputs, Glimpser, halting, modes, gradients, configs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hvt.model import ModelConfig, ModelOutput, create_model, create_model_from_config, list_models
from hvt.model.glimpser import DividedBlock
from hvt.model.halting import calibrate_halting_offset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NANO = "haltingvt-nano-g05-b10"


def clip(b: int = 2, t: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, size, size, generator=g) * 2 - 1


def halting_model(mode: str = "remove", depth: int = 7, seed: int = 0, **kw) -> torch.nn.Module:
    """Nano with 5 halting blocks; ``calibrate_halting_offset`` then shifts the halting sigmoid so that about half
    of the (token, block) slots stay active: the per-token spread of t[0] on random weights spreads the halting
    depths over several blocks."""
    torch.manual_seed(seed)
    return create_model(NANO, depth=depth, halted_token_mode=mode, drop_path_rate=0.0, **kw).eval()


def test_output_fields_and_shapes():
    model = create_model(NANO, num_classes=7).eval()
    x = clip(3)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 7)
    assert out.motion_logits.shape == (3, 2)
    assert out.ponder_loss.dim() == 0 and out.ponder_loss.item() > 0
    assert out.gflops.shape == (3,) and bool((out.gflops > 0).all())
    assert out.tokens_per_layer.shape == (3, 4)
    assert out.halting_depth.shape == (3, 8, 4, 4)  # T, 32/8, 32/8
    assert out.cls_halting_depth.shape == (3,)
    assert torch.isfinite(out.logits).all()
    no_motion = create_model(NANO, motion_head=False).eval()
    assert no_motion(x).motion_logits is None


def test_dense_model_fields():
    model = create_model("jointvt-nano").eval()
    with torch.no_grad():
        out = model(clip(2))
    assert out.ponder_loss.item() == 0.0
    assert out.tokens_per_layer.tolist() == [[1 + 8 * 16] * 4] * 2
    assert bool((out.halting_depth == 4).all())
    assert out.gflops[0].item() == pytest.approx(out.gflops[1].item())


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_glimpser_keeps_ceil_r_n_per_frame(rate):
    model = create_model(NANO, keep_rate=rate, halt_center=1e4).eval()  # h ~ 0: nothing halts early
    with torch.no_grad():
        out = model(clip(2))
    k = math.ceil(rate * 16)
    assert out.tokens_per_layer[:, :2].tolist() == [[129, 129]] * 2
    assert out.tokens_per_layer[:, 2:].tolist() == [[1 + 8 * k] * 2] * 2
    kept = (out.halting_depth > 0).flatten(2).sum(-1)  # [B, T]
    assert bool((kept == k).all())


def test_glimpser_selects_top_class_attention():
    torch.manual_seed(1)
    blk = DividedBlock(32, 2).eval()
    torch.nn.init.normal_(blk.temporal_fc.weight, std=0.1)
    cls, patches = torch.randn(2, 32), torch.randn(2, 3, 9, 32)
    with torch.no_grad():
        _, out, kept = blk(cls, patches, keep=4)
        # reference: temporal step, then the class-token row of spatial attention averaged over heads
        seq = patches.transpose(1, 2).reshape(18, 3, 32)
        t_res = blk.temporal_attn(blk.temporal_norm1(seq)).view(2, 9, 3, 32).transpose(1, 2)
        xt = patches + blk.temporal_fc(t_res)
        frames = torch.cat([cls[:, None, None].expand(2, 3, 1, 32), xt], 2).reshape(6, 10, 32)
        q, k, _ = blk.attn.qkv(blk.norm1(frames)).reshape(6, 10, 3, 2, 16).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)  # [6, heads, 10, 10]
        score = attn[:, :, 0, 1:].mean(1).reshape(2, 3, 9)
    expect = score.topk(4, dim=-1).indices  # most attended first: slot n of every frame = its n-th best patch
    assert torch.equal(kept, expect)
    assert out.shape == (2, 3, 4, 32)
    # a selecting block hands on the class token's attention update alone (no residual), as the released code
    with torch.no_grad():
        cls_sel, _, _ = blk(cls, patches, keep=9)
        cls_keep, _, _ = blk(cls, patches, keep=None)
        cls_sel_shifted, _, _ = blk(cls + torch.randn(2, 32), patches, keep=9)
    assert not torch.allclose(cls_sel, cls_keep, atol=1e-3)
    assert not torch.allclose(cls_sel, cls_sel_shifted, atol=1e-6)  # the input still reaches it via attention


def test_halting_depth_range_and_variation():
    model = halting_model()
    x = clip(4)
    calibrate_halting_offset(model, x, 0.5)
    with torch.no_grad():
        out = model(x)
    hd = out.halting_depth
    kept = hd[hd > 0]
    assert kept.numel() == 4 * 8 * 8  # 8 of 16 patches per frame survive the Glimpser
    assert bool((kept > 2).all()) and bool((kept <= 7).all())  # halts in a halting block (3..7)
    assert len(kept.unique()) >= 3  # halting really spreads over blocks
    assert bool((out.cls_halting_depth > 2).all()) and bool((out.cls_halting_depth <= 7).all())
    # tokens_per_layer is the number of active tokens = those whose halting block is >= the block
    for layer in range(2, 7):
        active = (hd.flatten(1) > layer).sum(1) + (out.cls_halting_depth > layer).long()
        assert torch.equal(out.tokens_per_layer[:, layer], active)


def _reference_halting(model, x):
    """Independent A-ViT recurrence over captured block outputs (mask mode), one token at a time."""
    cfg = model.config
    outs = []
    hooks = [blk.register_forward_hook(lambda m, i, o: outs.append(o.detach())) for blk in model.joint_blocks]
    with torch.no_grad():
        res = model(x)
    for h in hooks:
        h.remove()
    b, n = outs[0].shape[:2]
    nblocks = len(outs)
    feats, rhos = [], []
    for s in range(b):
        cls_feat = torch.zeros(outs[0].shape[-1])
        for tok in range(n):
            cum, rem = 0.0, 1.0
            for layer in range(nblocks):
                y = outs[layer][s, tok]
                h = torch.sigmoid(y[0] * cfg.halt_scale - cfg.halt_center + model.halt_offset[layer]).item()
                if layer == nblocks - 1:
                    h = 1.0
                cum += h
                if cum >= 1 - cfg.eps:
                    if tok == 0:
                        cls_feat = cls_feat + rem * y
                    rhos.append(layer + 1 + rem)
                    break
                if tok == 0:
                    cls_feat = cls_feat + h * y
                rem -= h
        feats.append(cls_feat)
    logits = model.head(model.norm(torch.stack(feats)))
    ponder = cfg.ponder_weight * sum(rhos) / len(rhos)
    return res, logits, ponder


def test_ponder_loss_and_class_token_match_reference():
    model = halting_model("mask")
    x = clip(2)
    calibrate_halting_offset(model, x, 0.5)
    res, logits, ponder = _reference_halting(model, x)
    assert res.ponder_loss.item() == pytest.approx(ponder, rel=1e-5)
    assert torch.allclose(res.logits, logits, atol=1e-5)


def test_ponder_loss_extremes():
    model = halting_model("remove", depth=6)  # 4 halting blocks
    x = clip(2)
    with torch.no_grad():
        model.set_halting_offset(-1e4)  # never halts before the last block: N = 4, R = 1
        assert model(x).ponder_loss.item() == pytest.approx(5e-4 * 5, rel=1e-5)
        model.set_halting_offset(1e4)  # halts at the first halting block: N = 1, R = 1
        assert model(x).ponder_loss.item() == pytest.approx(5e-4 * 2, rel=1e-5)


def _run_modes(x, offset=None, fraction=None):
    outs = {}
    for mode in ("official", "mask", "remove"):
        model = halting_model(mode)
        if fraction is not None:
            calibrate_halting_offset(model, x, fraction)
        else:
            model.set_halting_offset(offset)
        with torch.no_grad():
            outs[mode] = model(x)
    return outs


def test_mask_equals_remove_with_varied_halting():
    x = clip(4, seed=3)
    outs = _run_modes(x, fraction=0.45)
    m, r = outs["mask"], outs["remove"]
    tpl = r.tokens_per_layer[:, 3:]
    assert len({tuple(row) for row in tpl.tolist()}) > 1  # samples halt differently: padding path used
    assert len(r.halting_depth[r.halting_depth > 0].unique()) >= 3
    assert torch.equal(m.tokens_per_layer, r.tokens_per_layer)
    assert torch.equal(m.halting_depth, r.halting_depth)
    assert (m.logits - r.logits).abs().max().item() < 1e-4
    assert (m.motion_logits - r.motion_logits).abs().max().item() < 1e-4
    assert m.ponder_loss.item() == pytest.approx(r.ponder_loss.item(), rel=1e-5)
    assert torch.allclose(m.gflops, r.gflops)
    # the released behaviour (halted tokens zeroed but attended) is a different function
    assert (outs["official"].logits - m.logits).abs().max().item() > 1e-4


def test_all_modes_equal_when_nothing_halts_early():
    x = clip(2, seed=4)
    outs = _run_modes(x, offset=-1e4)
    assert bool((outs["remove"].halting_depth[outs["remove"].halting_depth > 0] == 7).all())
    for mode in ("official", "mask"):
        assert (outs[mode].logits - outs["remove"].logits).abs().max().item() < 1e-5


@pytest.mark.parametrize("mode", ["remove", "mask", "official"])
def test_training_gradients_flow(mode):
    torch.manual_seed(0)
    model = create_model(NANO, depth=6, halted_token_mode=mode, num_classes=5).train()
    x = clip(4)
    calibrate_halting_offset(model, x, 0.5)
    model.train()
    out = model(x)
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])) + out.ponder_loss
    loss = loss + F.cross_entropy(out.motion_logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    for name in ("patch_embed.proj.weight", "blocks.0.temporal_attn.qkv.weight", "blocks.1.attn.qkv.weight",
                 "blocks.2.attn.proj.weight", "blocks.3.mlp.fc2.weight", "head.weight", "motion_head.weight",
                 "pos_embed", "cls_token"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # the ponder loss alone reaches the blocks through the halting scores
    model.zero_grad()
    model(x).ponder_loss.backward()
    assert model.blocks[2].mlp.fc2.weight.grad.abs().sum() > 0


def test_remove_gradients_match_mask():
    x = clip(3, seed=5)
    grads = {}
    for mode in ("mask", "remove"):
        model = halting_model(mode, seed=2)
        calibrate_halting_offset(model, x, 0.5)
        model.train()  # drop_path_rate=0: deterministic
        out = model(x)
        (out.logits.square().mean() + out.ponder_loss).backward()
        # a block after the class token halted gets no gradient in remove mode (None) and zeros in mask mode
        grads[mode] = {
            n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()
        }
    for name, g in grads["mask"].items():
        assert torch.allclose(g, grads["remove"][name], atol=1e-5, rtol=1e-3), name


def test_create_model_errors():
    with pytest.raises(ValueError, match="jointvt-s"):
        create_model("haltingvt-xl")
    with pytest.raises(TypeError, match="keep_rate"):
        create_model(NANO, keeprate=0.5)
    with pytest.raises(ValueError, match="halted_token_mode"):
        create_model(NANO, halted_token_mode="drop")
    with pytest.raises(ValueError, match="Glimpser"):
        create_model("jointvt-nano", keep_rate=0.5)
    with pytest.raises(ValueError, match="keep_rate"):
        create_model(NANO, keep_rate=1.5)


def test_variant_list_and_overrides():
    names = list_models()
    for n in ("jointvt-s", "haltingvt-s-g03-b5", "haltingvt-s-g03-b10", "haltingvt-s-g05-b20",
              "haltingvt-s-g07-b20", "haltingvt-ti-g05-b20", "jointvt-ti", "haltingvt-b-g05-b20",
              "haltingvt-micro-g05-b10", "jointvt-micro", "jointvt-nano"):
        assert n in names
    cfg = create_model("haltingvt-s-g07-b20", num_classes=200, use_motion_head=False).config
    assert (cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.keep_rate, cfg.halt_center, cfg.halt_scale) == (
        384, 6, 12, (1.0, 0.7), 20.0, 10.0)
    assert cfg.num_classes == 200 and cfg.motion_head is False
    m = create_model("haltingvt-micro-g05-b10", num_frames=4, img_size=64, keep_rate=[1.0, 0.3]).eval()
    with torch.no_grad():
        out = m(clip(1, t=4, size=64))
    assert out.tokens_per_layer[0].tolist()[:3] == [65, 65, 1 + 4 * 5]  # 4 frames x 16 patches, ceil(.3*16)=5


def test_config_round_trip_rebuilds_same_model():
    model = create_model(NANO, num_classes=3, keep_rate=0.3, halt_center=5.0, halted_token_mode="mask").eval()
    data = json.loads(json.dumps(model.config.to_dict()))
    cfg = ModelConfig.from_dict(data)
    assert cfg == model.config
    twin = create_model_from_config(data).eval()
    twin.load_state_dict(model.state_dict())
    x = clip(2)
    with torch.no_grad():
        assert torch.equal(model(x).logits, twin(x).logits)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**data, "bogus": 1})


def test_input_size_and_length_changes_are_handled():
    model = create_model(NANO).eval()  # trained for 8 x 32^2
    with torch.no_grad():
        out = model(clip(1, t=4, size=48))
    assert out.halting_depth.shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(clip(1, size=36))


def test_distribution_prior_is_optional_and_trainable():
    x = clip(2)
    base = halting_model("remove", depth=6)
    calibrate_halting_offset(base, x, 0.5)
    with torch.no_grad():
        off = base(x)
    assert off.prior_loss.item() == 0.0
    torch.manual_seed(0)
    model = create_model(NANO, depth=6, drop_path_rate=0.0, distr_prior_weight=0.1, distr_target_depth=2.0)
    model.load_state_dict(base.state_dict())
    model.set_halting_offset(base.halt_offset)
    out = model(x)
    assert out.prior_loss.item() > 0
    assert out.ponder_loss.item() == pytest.approx(off.ponder_loss.item() + out.prior_loss.item(), rel=1e-5)
    out.prior_loss.backward()
    assert model.blocks[2].mlp.fc2.weight.grad.abs().sum() > 0


def test_glimpser_stochastic_depth_granularity():
    """As the released code: temporal residual dropped per (sample, patch slot), spatial per (sample, frame)."""
    torch.manual_seed(3)
    blk = DividedBlock(16, 2, drop_path=0.5).train()
    with torch.no_grad():  # leave one residual branch at a time
        blk.mlp.fc2.weight.zero_()
        blk.mlp.fc2.bias.zero_()
        blk.attn.proj.weight.zero_()
        blk.attn.proj.bias.zero_()
        blk.temporal_fc.weight.copy_(torch.eye(16))
        blk.temporal_fc.bias.zero_()
        cls, patches = torch.randn(2, 16), torch.randn(2, 6, 12, 16)
        _, out, _ = blk(cls, patches)
    kept = (out - patches).abs().amax(-1) > 0  # [B, T, N]: temporal residual kept
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # one draw per (sample, slot), shared by the frames
    assert 0 < kept[:, 0].sum() < kept[:, 0].numel()  # slots of one sample are drawn independently
    with torch.no_grad():
        blk.temporal_fc.weight.zero_()
        torch.nn.init.normal_(blk.attn.proj.weight)
        _, out, _ = blk(cls, patches)
    kept = (out - patches).abs().amax(-1) > 0
    assert torch.equal(kept, kept[:, :, :1].expand_as(kept))  # one draw per (sample, frame)
    assert 0 < kept[:, :, 0].sum() < kept[:, :, 0].numel()
