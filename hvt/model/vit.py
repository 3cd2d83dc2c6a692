"""Plain ViT building blocks: per-frame patch embedding, multi-head attention, MLP, stochastic depth, block.

Parameter names follow the timm / TimeSformer layout (``patch_embed.proj``, ``attn.qkv``, ``attn.proj``,
``mlp.fc1``, ``mlp.fc2``, ``norm1``, ``norm2``) so that DeiT and released HaltingVT state dicts load by name.
Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .varlen import Packing, packed_attention


class PatchEmbed(nn.Module):
    """Split every frame into ``patch x patch`` squares and project each to ``dim`` channels (a strided conv)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, video: Tensor) -> tuple[Tensor, int, int]:
        """``[B, C, T, H, W]`` -> ``([B, T, Hp*Wp, dim], Hp, Wp)``."""
        b, c, t, h, w = video.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {p}")
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        feat = self.proj(frames)  # [B*T, dim, Hp, Wp]
        hp, wp = feat.shape[-2:]
        feat = feat.flatten(2).transpose(1, 2).reshape(b, t, hp * wp, -1)
        return feat, hp, wp


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[B, L, 3*dim]`` -> q, k, v each ``[B, heads, L, head_dim]``."""
        b, n, _ = qkv.shape
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def attend(self, qkv: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attention on an already projected ``[B, L, 3*dim]`` tensor; returns ``[B, L, dim]`` before ``proj``.

        ``attn_mask`` is boolean, broadcastable to ``[B, heads, L, L]``, True where a query may look at a key.
        """
        q, k, v = self.split_heads(qkv)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.merge_heads(out)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return self.proj(self.attend(self.qkv(x), attn_mask))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def sample_keep_mask(batch: int, prob: float, ref: Tensor) -> Tensor:
    """Stochastic-depth mask: ``batch`` draws, each 0 or ``1 / (1 - prob)``.

    Drawn as the released code (timm) does, ``floor(keep + U[0, 1))``, so that with the same seed and the same
    order of draws both produce the same masks.
    """
    keep = 1.0 - prob
    return (keep + torch.rand(batch, dtype=ref.dtype, device=ref.device)).floor_() / keep


class DropPath(nn.Module):
    """Stochastic depth, one draw per sample.

    ``forward(x)`` treats dim 0 as the sample axis; for packed token rows of several samples pass
    ``row_sample`` (the sample index of each row) and ``batch`` so that all rows of a sample share the draw.
    """

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = float(prob)

    def forward(self, x: Tensor, row_sample: Tensor | None = None, batch: int | None = None) -> Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        if row_sample is None:
            scale = sample_keep_mask(x.shape[0], self.prob, x)
            return x * scale.view(-1, *([1] * (x.dim() - 1)))
        scale = sample_keep_mask(int(batch), self.prob, x)[row_sample]
        return x * scale.view(-1, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"prob={self.prob}"


class Block(nn.Module):
    """Pre-norm transformer block (joint space-time attention when fed all tokens of a clip)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _pre(self, rows: Tensor) -> Tensor:
        """``norm1`` + ``qkv`` (a separate method so that ``HaltingVT.compile_blocks`` can compile it)."""
        return self.attn.qkv(self.norm1(rows))

    def _mlp_branch(self, rows: Tensor) -> Tensor:
        return self.mlp(self.norm2(rows))

    def forward_packed(self, rows: Tensor, packing: Packing) -> Tensor:
        """Run the block on the still-active tokens of a batch stored as packed rows ``[sum_i n_i, dim]``.

        Everything per token (norms, qkv, projections, MLP) runs on the packed rows only; attention runs within
        each sample on its rows (``varlen.packed_attention``: cost ``sum_i n_i^2``). Zero rows are fine (the
        weights still enter the autograd graph).
        """
        att = packed_attention(self._pre(rows), packing, self.attn.num_heads)
        rows = rows + self.drop_path(self.attn.proj(att), packing.row_sample, packing.batch)
        return rows + self.drop_path(self._mlp_branch(rows), packing.row_sample, packing.batch)
