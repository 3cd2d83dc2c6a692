"""Weights: DeiT/timm image checkpoints (checked against an independent DeiT forward) and released
mmaction2 HaltingVT checkpoints (key mapping), with clear errors on mismatches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hvt.model import WeightsError, create_model, load_weights, to_released_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM, HEADS, DEPTH, PATCH, IMG, CLASSES = 32, 2, 4, 8, 32, 10


def fake_deit_state_dict(seed: int = 0, depth: int = DEPTH, grid: int = IMG // PATCH) -> dict[str, torch.Tensor]:
    """Random weights in the timm VisionTransformer layout (scaled up so that every part matters)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    sd = {
        "cls_token": r(1, 1, DIM, std=1.0),
        "pos_embed": r(1, 1 + grid * grid, DIM, std=1.0),
        "patch_embed.proj.weight": r(DIM, 3, PATCH, PATCH, std=0.1),
        "patch_embed.proj.bias": r(DIM),
        "norm.weight": 1 + r(DIM),
        "norm.bias": r(DIM),
        "head.weight": r(CLASSES, DIM),
        "head.bias": r(CLASSES),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(DIM), p + "norm1.bias": r(DIM),
            p + "attn.qkv.weight": r(3 * DIM, DIM), p + "attn.qkv.bias": r(3 * DIM),
            p + "attn.proj.weight": r(DIM, DIM), p + "attn.proj.bias": r(DIM),
            p + "norm2.weight": 1 + r(DIM), p + "norm2.bias": r(DIM),
            p + "mlp.fc1.weight": r(4 * DIM, DIM), p + "mlp.fc1.bias": r(4 * DIM),
            p + "mlp.fc2.weight": r(DIM, 4 * DIM), p + "mlp.fc2.bias": r(DIM),
        })
    return sd


def reference_deit(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """A DeiT forward written from the architecture description, with plain tensor ops."""
    b = images.shape[0]
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, 1, DIM), x], 1) + sd["pos_embed"]
    n = x.shape[1]
    hd = DIM // HEADS
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (DIM,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(b, n, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, DIM)
        x = x + y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = F.layer_norm(x, (DIM,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    x = F.layer_norm(x, (DIM,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return x[:, 0] @ sd["head.weight"].T + sd["head.bias"]


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("jointvt-nano", {}),
        # Glimpser blocks with nothing dropped and no halting: divided attention must reduce to DeiT at T=1
        ("haltingvt-nano-g05-b10", {"halting": False, "keep_rate": [1.0, 1.0]}),
    ],
)
def test_single_frame_backbone_reproduces_deit(name, overrides, tmp_path):
    sd = fake_deit_state_dict()
    path = tmp_path / "deit.pth"
    torch.save({"model": sd}, path)  # the DeiT release wraps the weights in {"model": ...}
    model = create_model(name, num_frames=1, num_classes=CLASSES, **overrides).eval()
    report = load_weights(model, path)  # kind detected from the keys
    assert report.kind == "deit"
    assert "head.weight" in report.loaded and "time_embed" in report.loaded
    assert all(k.startswith("motion_head.") for k in report.kept_init)
    images = torch.rand(3, 3, IMG, IMG) * 2 - 1
    with torch.no_grad():
        ours = model(images[:, :, None]).logits
        ref = reference_deit(sd, images)
    assert ref.abs().max() > 0.1
    assert (ours - ref).abs().max().item() < 1e-4


def test_deit_init_for_video():
    sd = fake_deit_state_dict(grid=2)  # a 2x2 position table, resized to the model's 4x4 grid
    sd["dist_token"] = torch.zeros(1, 1, DIM)  # distilled DeiT: extra token and head are skipped
    sd["pos_embed"] = torch.cat([sd["pos_embed"][:, :1], torch.zeros(1, 1, DIM), sd["pos_embed"][:, 1:]], 1)
    sd["head_dist.weight"] = torch.zeros(CLASSES, DIM)
    sd["head.weight"] = torch.zeros(1000, DIM)  # ImageNet head: does not fit, skipped
    sd["head.bias"] = torch.zeros(1000)
    model = create_model("haltingvt-nano-g05-b10", num_classes=CLASSES)
    report = load_weights(model, sd, kind="deit")
    assert any(s.startswith("head.weight") for s in report.skipped)
    assert any(s.startswith("dist_token") for s in report.skipped)
    msd = model.state_dict()
    assert msd["pos_embed"].shape == (1, 17, DIM)
    assert torch.equal(msd["pos_embed"][:, 0], sd["pos_embed"][:, 0])
    for i in range(2):  # temporal attention copied from spatial, temporal fc zero
        assert torch.equal(msd[f"blocks.{i}.temporal_attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(msd[f"blocks.{i}.temporal_norm1.bias"], sd[f"blocks.{i}.norm1.bias"])
        assert msd[f"blocks.{i}.temporal_fc.weight"].abs().sum() == 0
    assert msd["time_embed"].abs().sum() == 0
    assert torch.equal(msd["blocks.3.mlp.fc2.weight"], sd["blocks.3.mlp.fc2.weight"])


def test_deit_mismatch_errors_list_keys():
    model = create_model("jointvt-nano", num_classes=CLASSES)
    sd = fake_deit_state_dict(depth=DEPTH + 1)  # one block too many
    del sd["norm.bias"]
    with pytest.raises(WeightsError) as err:
        load_weights(model, sd, kind="deit")
    msg = str(err.value)
    assert "missing keys" in msg and "norm.bias" in msg
    assert "unexpected keys" in msg and "blocks.4.attn.qkv.weight" in msg


def test_released_checkpoint_mapping(tmp_path):
    torch.manual_seed(0)
    src = create_model("haltingvt-nano-g05-b10", num_classes=CLASSES, halted_token_mode="official").eval()
    # a released-style mmaction2 checkpoint built by hand from our own weights
    released = {}
    for k, v in src.state_dict().items():
        if k.startswith("head."):
            released["cls_head.fc_cls." + k[5:]] = v.clone()
        elif k.startswith("motion_head."):
            released["cls_head.fc_motion." + k[12:]] = v.clone()
        else:
            released["backbone.model." + k] = v.clone()
    assert released.keys() == to_released_state_dict(src).keys()
    assert "backbone.model.blocks.0.temporal_fc.weight" in released
    path = tmp_path / "haltingvt_minik.pth"
    torch.save({"meta": {"epoch": 20}, "state_dict": released}, path)

    dst = create_model("haltingvt-nano-g05-b10", num_classes=CLASSES, halted_token_mode="official").eval()
    report = load_weights(dst, str(path))
    assert report.kind == "released" and not report.kept_init
    x = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = src(x), dst(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.motion_logits, b.motion_logits)

    released["backbone.model.motion_token"] = torch.zeros(1, 1, DIM)
    del released["cls_head.fc_motion.bias"]
    with pytest.raises(WeightsError) as err:
        load_weights(dst, released, kind="released")
    assert "motion_token" in str(err.value) and "motion_head.bias" in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(dst, tmp_path / "missing.pth")


def test_native_state_dict_and_shape_mismatch():
    a = create_model("jointvt-nano", num_classes=4)
    b = create_model("jointvt-nano", num_classes=4)
    load_weights(b, a.state_dict())
    assert torch.equal(a.state_dict()["blocks.2.mlp.fc1.weight"], b.state_dict()["blocks.2.mlp.fc1.weight"])
    c = create_model("jointvt-nano", num_classes=5)
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_weights(c, a.state_dict(), kind="native")
