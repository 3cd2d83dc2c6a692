"""A DeiT / timm ViT state dict in the published layout (random weights, any width), for fine-tuning tests."""

from __future__ import annotations

import torch


def deit_state_dict(
    embed_dim: int, depth: int, num_heads: int = 3, img_size: int = 224, patch_size: int = 16,
    num_classes: int = 1000, mlp_ratio: float = 4.0, seed: int = 0, distilled: bool = False,
) -> dict[str, torch.Tensor]:
    """Keys and shapes of ``timm.models.vision_transformer.VisionTransformer`` (DeiT): ``cls_token``,
    ``pos_embed [1, 1 + (img/patch)^2, d]``, ``patch_embed.proj``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,
    mlp.fc1,mlp.fc2}``, ``norm``, ``head``; DeiT's distilled variant adds ``dist_token`` and ``head_dist``."""
    del num_heads  # heads do not change any shape
    g = torch.Generator().manual_seed(seed)
    d, hidden, cells = embed_dim, int(embed_dim * mlp_ratio), (img_size // patch_size) ** 2
    prefix = 2 if distilled else 1

    def w(*shape: int) -> torch.Tensor:
        return 0.02 * torch.randn(*shape, generator=g)

    sd = {
        "cls_token": w(1, 1, d),
        "pos_embed": w(1, prefix + cells, d),
        "patch_embed.proj.weight": w(d, 3, patch_size, patch_size),
        "patch_embed.proj.bias": w(d),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + w(d), p + "norm1.bias": w(d),
            p + "attn.qkv.weight": w(3 * d, d), p + "attn.qkv.bias": w(3 * d),
            p + "attn.proj.weight": w(d, d), p + "attn.proj.bias": w(d),
            p + "norm2.weight": 1 + w(d), p + "norm2.bias": w(d),
            p + "mlp.fc1.weight": w(hidden, d), p + "mlp.fc1.bias": w(hidden),
            p + "mlp.fc2.weight": w(d, hidden), p + "mlp.fc2.bias": w(d),
        })
    sd.update({"norm.weight": 1 + w(d), "norm.bias": w(d), "head.weight": w(num_classes, d), "head.bias": w(num_classes)})
    if distilled:
        sd.update({"dist_token": w(1, 1, d), "head_dist.weight": w(num_classes, d), "head_dist.bias": w(num_classes)})
    return sd
