"""The HaltingVT / Joint VT network (Wu et al., arXiv 2401.04975).

Token layout: a clip ``[B, 3, T, H, W]`` becomes one class token plus ``T * Hp * Wp`` patch tokens. Patches get
the spatial position embedding of their grid cell (shared by all frames) plus the time embedding of their
frame; the class token gets position 0. Blocks ``1..glimpser_depth`` are divided space-time Glimpser blocks
(see ``glimpser.py``: a selecting block keeps each frame's patches in decreasing order of class-token attention);
the rest are joint space-time blocks over the class token and all surviving patches (frame-major order; joint
attention does not depend on the order), with A-ViT halting when ``config.halting`` (see ``halting.py``). The class-token feature
goes through the final LayerNorm into the classification head and the 2-way motion head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import flops as flops_mod
from .config import ModelConfig, ModelOutput
from .glimpser import DividedBlock
from .halting import distribution_prior, run_halting
from .vit import Block, PatchEmbed


class HaltingVT(nn.Module):
    """HaltingVT (Glimpser + halting joint blocks) or, with ``glimpser_depth=0`` and ``halting=False``, the dense
    Joint VT baseline. Build it with :func:`hvt.model.create_model` (by variant name) or from a ``ModelConfig``.

    Args:
        config: the architecture (width, depth, heads, Glimpser depth and keep rates, halting gate ``halt_scale``
            / ``halt_center`` / ``eps``, ``halted_token_mode`` ``official`` | ``mask`` | ``remove``, frames, image
            and patch size, class count, motion head). Validated here: raises ``ValueError`` on an inconsistent one.

    ``forward(video)`` takes ``[B, 3, T, H, W]`` float clips scaled to ``[-1, 1]`` (``T = config.num_frames``,
    ``H = W = config.img_size``) and returns a :class:`ModelOutput`: ``logits [B, num_classes]``,
    ``motion_logits [B, 2]`` (or None), the ponder loss (scalar, already weighted by ``ponder_weight``), the
    tokens active at every block ``[B, depth]``, each patch's halting block, and ``gflops [B]``: the GFLOPs
    that clip really spent (one multiply-add = one FLOP, as the paper counts). Source: paper Sec. 3 and the
    released model code (dun-research/HaltingVT @ 4830e2a), reproduced within 1e-5 in ``official`` mode
    (``tests/test_model_fidelity.py``, ``docs/FIDELITY.md``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.embed_dim
        grid = config.grid()
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.time_embed = nn.Parameter(torch.zeros(1, config.num_frames, d))
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        common = dict(
            num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, norm_eps=config.norm_eps
        )
        blocks: list[nn.Module] = []
        for i in range(config.depth):
            cls = DividedBlock if i < config.glimpser_depth else Block
            blocks.append(cls(d, drop_path=rates[i], **common))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.head = nn.Linear(d, config.num_classes)
        self.motion_head = nn.Linear(d, 2) if config.motion_head else None
        # calibration hook added inside the halting sigmoid, one value per halting block; not saved
        self.register_buffer("halt_offset", torch.zeros(max(config.num_halting_blocks, 1)), persistent=False)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """Random init as the released code: truncated normal (std .02) for linears and embeddings, zero
        biases, unit LayerNorms, zero time embedding, ``temporal_fc`` zero in every Glimpser block but the
        first."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.zeros_(self.time_embed)
        for i, blk in enumerate(self.glimpser_blocks):
            if i > 0:
                nn.init.zeros_(blk.temporal_fc.weight)
                nn.init.zeros_(blk.temporal_fc.bias)

    @property
    def glimpser_blocks(self) -> list[DividedBlock]:
        return list(self.blocks[: self.config.glimpser_depth])

    @property
    def joint_blocks(self) -> list[Block]:
        return list(self.blocks[self.config.glimpser_depth :])

    def set_halting_offset(self, offset: float | list[float] | Tensor) -> None:
        """Add ``offset`` (one value, or one per halting block) inside the halting sigmoid. For benchmarks and
        tests on untrained weights, to make tokens halt at a chosen rate; trained models use 0."""
        off = torch.as_tensor(offset, dtype=self.halt_offset.dtype, device=self.halt_offset.device)
        self.halt_offset = off.expand_as(self.halt_offset).clone()  # re-assign: works inside inference_mode too

    # every parameter enters the autograd graph in every training step, in every mode (``remove`` runs every
    # joint block, on zero rows when no token is left), so DDP needs no ``find_unused_parameters``
    all_parameters_in_graph = True

    def compile_blocks(self, backend: str = "inductor") -> None:
        """``torch.compile`` what has fixed shapes, in place (the state dict keeps its names): every block's
        ``forward`` (the dense, ``mask`` and ``official`` paths and the Glimpser) and, for ``remove``, each joint
        block's per-token parts (norm + qkv, norm + MLP) with dynamic row counts. The halting bookkeeping and
        the variable-length attention stay eager."""
        for blk in self.blocks:
            blk.compile(backend=backend)
            if isinstance(blk, Block):
                blk._pre = torch.compile(blk._pre, backend=backend, dynamic=True)
                blk._mlp_branch = torch.compile(blk._mlp_branch, backend=backend, dynamic=True)

    def set_halted_token_mode(self, mode: str) -> None:
        """Switch how halted tokens are treated (``official`` / ``mask`` / ``remove``); weights are unchanged."""
        self.config = self.config.replace(halted_token_mode=mode)

    # ------------------------------------------------------------------ embeddings
    def _pos_embed(self, hp: int, wp: int) -> Tensor:
        pos = self.pos_embed[0]
        grid = self.config.grid()
        if hp == grid and wp == grid:
            return pos
        # other input sizes: resize the spatial table (nearest, as the released code)
        cells = pos[1:].T.reshape(1, -1, grid, grid)
        cells = F.interpolate(cells, size=(hp, wp), mode="nearest").reshape(-1, hp * wp).T
        return torch.cat([pos[:1], cells], dim=0)

    def _time_embed(self, t: int) -> Tensor:
        te = self.time_embed[0]
        if t == te.shape[0]:
            return te
        return F.interpolate(te.T[None], size=t, mode="nearest")[0].T

    # ------------------------------------------------------------------ forward
    def forward(self, video: Tensor) -> ModelOutput:
        """``video``: normalised float ``[B, 3, T, H, W]`` (values in [-1, 1])."""
        if video.dim() != 5:
            raise ValueError(f"expected a [B, C, T, H, W] clip, got shape {tuple(video.shape)}")
        cfg = self.config
        b = video.shape[0]
        patches, hp, wp = self.patch_embed(video)  # [B, T, N, d]
        t, n = patches.shape[1], patches.shape[2]
        pos = self._pos_embed(hp, wp)
        patches = patches + pos[1:] + self._time_embed(t)[:, None, :]
        cls = (self.cls_token[0, 0] + pos[0]).expand(b, -1)
        dev = video.device
        tokens_per_layer = torch.zeros(b, cfg.depth, dtype=torch.long, device=dev)

        # Glimpser (divided space-time blocks)
        kept = torch.arange(n, device=dev).expand(b, t, n)
        keep_counts = cfg.kept_per_frame(n)
        for i, blk in enumerate(self.glimpser_blocks):
            tokens_per_layer[:, i] = 1 + t * patches.shape[2]
            selecting = cfg.keep_rate[i] < 1.0
            cls, patches, idx = blk(cls, patches, keep_counts[i] if selecting else None)
            if idx is not None:
                kept = kept.gather(2, idx)
        k = patches.shape[2]
        seq = torch.cat([cls[:, None], patches.reshape(b, t * k, -1)], dim=1)

        # joint space-time blocks, with or without halting
        g = cfg.glimpser_depth
        zero = video.new_zeros(())
        ponder, prior = zero, zero
        if cfg.halting:
            res = run_halting(
                self.joint_blocks,
                seq,
                scale=cfg.halt_scale,
                center=cfg.halt_center,
                eps=cfg.eps,
                offsets=self.halt_offset,
                mode=cfg.halted_token_mode,
            )
            feat = res.cls
            tokens_per_layer[:, g:] = res.tokens_per_layer
            token_depth = res.token_depth + g
            ponder = cfg.ponder_weight * res.ponder
            if cfg.distr_prior_weight > 0:
                target = cfg.distr_target_depth or (cfg.num_halting_blocks + 1) / 2
                prior = cfg.distr_prior_weight * distribution_prior(res.layer_mean_h, target)
                ponder = ponder + prior
        else:
            for blk in self.joint_blocks:
                seq = blk(seq)
            feat = seq[:, 0]
            tokens_per_layer[:, g:] = seq.shape[1]
            token_depth = torch.full((b, 1 + t * k), float(cfg.depth), device=dev, dtype=torch.float32)

        feat = self.norm(feat)
        logits = self.head(feat)
        motion = self.motion_head(feat) if self.motion_head is not None else None

        halting_map = torch.zeros(b, t, n, device=dev, dtype=token_depth.dtype)
        halting_map.scatter_(2, kept, token_depth[:, 1:].reshape(b, t, k))
        gflops = self._gflops(t, hp * wp, tokens_per_layer)
        return ModelOutput(
            logits=logits,
            motion_logits=motion,
            ponder_loss=ponder,
            gflops=gflops.to(torch.float32),
            tokens_per_layer=tokens_per_layer,
            halting_depth=halting_map.view(b, t, hp, wp),
            cls_halting_depth=token_depth[:, 0],
            prior_loss=prior,
        )

    def _gflops(self, t: int, n: int, tokens_per_layer: Tensor) -> Tensor:
        """Per-sample GFLOPs ``[B]`` from the tokens each sample had active at each block (``flops.model_macs``)."""
        macs = flops_mod.model_macs(self.config, t, tokens_per_layer=tokens_per_layer, patches_per_frame=n)
        return macs / flops_mod.GIGA

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name}, mode={c.halted_token_mode}, keep_rate={c.keep_rate}, halting={c.halting}"


__all__ = ["HaltingVT"]
