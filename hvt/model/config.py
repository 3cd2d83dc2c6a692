"""``ModelConfig`` (everything needed to rebuild a model exactly) and ``ModelOutput`` (what forward returns)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

HALTED_TOKEN_MODES = ("official", "mask", "remove")


@dataclass
class ModelConfig:
    """Architecture and halting settings of one HaltingVT / Joint VT model.

    A checkpoint stores ``config.to_dict()``; ``ModelConfig.from_dict`` + ``create_model_from_config`` rebuild
    the identical module. Names follow the released HaltingVT configs where they exist (``keep_rate``,
    ``halt_scale``, ``halt_center``, ``eps``, ``num_frames``, ``img_size``, ``num_classes``).
    """

    name: str = "custom"
    # backbone
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.1
    patch_size: int = 16
    img_size: int = 224
    num_frames: int = 8
    in_chans: int = 3
    num_classes: int = 400
    motion_head: bool = True
    # Glimpser: the first ``glimpser_depth`` blocks are divided space-time blocks; after block i the patches of
    # every frame are cut to ceil(keep_rate[i] * patches_per_frame). 0 blocks = a plain Joint VT.
    glimpser_depth: int = 2
    keep_rate: tuple[float, ...] = (1.0, 0.5)
    # Halting (A-ViT style) on the remaining joint blocks: h = sigmoid(halt_scale * t[0] - halt_center)
    halting: bool = True
    halt_scale: float = 10.0
    halt_center: float = 20.0
    eps: float = 0.01
    ponder_weight: float = 5e-4
    # A-ViT distribution prior (KL to a Gaussian over the halting layers); weight 0 = off (as in HaltingVT)
    distr_prior_weight: float = 0.0
    distr_target_depth: float | None = None  # in halting layers (1-based); None = middle of the halting stack
    # how halted tokens are treated: "official" (zeroed, still attended), "mask" (excluded from attention),
    # "remove" (physically dropped; compute shrinks)
    halted_token_mode: str = "remove"

    def __post_init__(self) -> None:
        self.keep_rate = tuple(float(r) for r in self.keep_rate)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid model config {self.name!r}: {msg}")

        if self.embed_dim % self.num_heads:
            bad(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if not 0 <= self.glimpser_depth <= self.depth:
            bad(f"glimpser_depth {self.glimpser_depth} must be within [0, depth={self.depth}]")
        if len(self.keep_rate) != self.glimpser_depth:
            bad(f"keep_rate needs one value per glimpser block ({self.glimpser_depth}), got {self.keep_rate}")
        for r in self.keep_rate:
            if not isinstance(r, (int, float)) or not 0.0 < r <= 1.0:
                bad(f"keep_rate values must be numbers in (0, 1], got {r!r}")
        if any(r < 1.0 for r in self.keep_rate[:-1]):
            # patches kept by an earlier block sit in rank order, so the next block's temporal attention would
            # mix patches of different positions across frames (the released configs select in the last only)
            bad(f"keep_rate {tuple(self.keep_rate)}: only the last Glimpser block may keep fewer than all patches")
        if self.halting and self.glimpser_depth >= self.depth:
            bad("halting needs at least one joint block after the glimpser")
        if self.halted_token_mode not in HALTED_TOKEN_MODES:
            bad(f"halted_token_mode must be one of {HALTED_TOKEN_MODES}, got {self.halted_token_mode!r}")
        if self.img_size % self.patch_size:
            bad(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if not 0.0 <= self.eps < 1.0:
            bad(f"eps must be in [0, 1), got {self.eps}")
        if self.num_frames < 1 or self.num_classes < 1:
            bad("num_frames and num_classes must be >= 1")

    # ------------------------------------------------------------------ derived
    @property
    def num_halting_blocks(self) -> int:
        """Number of joint blocks that carry a halting score (0 when halting is off)."""
        return self.depth - self.glimpser_depth if self.halting else 0

    def grid(self, img_size: int | None = None) -> int:
        return (img_size or self.img_size) // self.patch_size

    def kept_per_frame(self, patches_per_frame: int) -> list[int]:
        """Patches per frame left after each glimpser block: ceil(r * N) (never below 1)."""
        out, n = [], patches_per_frame
        for r in self.keep_rate:
            if r < 1.0:
                n = max(1, math.ceil(r * n))
            out.append(n)
        return out

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keep_rate"] = list(self.keep_rate)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class ModelOutput:
    """Result of ``model(video)``.

    * ``logits`` ``[B, num_classes]``; ``motion_logits`` ``[B, 2]`` (None when the motion head is off).
    * ``ponder_loss``: scalar, ``ponder_weight * mean(N + R)`` over all tokens entering the halting blocks, plus
      the distribution prior when enabled (``prior_loss`` holds that part alone); 0 for models without halting.
    * ``gflops`` ``[B]``: GFLOPs (multiply-adds, fvcore convention) each sample spent, from ``tokens_per_layer``.
    * ``tokens_per_layer`` ``[B, depth]``: tokens (class token included) each sample had active on entering
      each block. Glimpser blocks report their input count (the MLP of the last one runs on the kept tokens).
      In ``official``/``mask`` modes this is the paper's count (halted tokens excluded) even though those
      modes still push halted tokens through the matmuls; only ``remove`` spends exactly this.
    * ``halting_depth`` ``[B, T, Hp, Wp]`` float: number of blocks a patch position went through before it
      halted, i.e. the 1-based index of the block where it halted (``glimpser_depth < d <= depth``; ``depth``
      everywhere for models without halting). Positions dropped by the Glimpser are ``0``.
    * ``cls_halting_depth`` ``[B]``: the same for the class token.
    """

    logits: Tensor
    motion_logits: Tensor | None
    ponder_loss: Tensor
    gflops: Tensor
    tokens_per_layer: Tensor
    halting_depth: Tensor
    cls_halting_depth: Tensor
    prior_loss: Tensor
