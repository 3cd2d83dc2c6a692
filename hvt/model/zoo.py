"""Named variants: ``create_model(name, **overrides)``.

Names: ``jointvt-<size>`` (dense Joint VT: every block joint space-time, no Glimpser, no halting) and
``haltingvt-<size>-g<keep>-b<beta>`` (2 Glimpser blocks keeping ``0.<keep>`` of each frame's patches after the
second one, halting with ``halt_center = beta``, ``halt_scale = 10``, ``eps = 0.01``), for keep in 03/05/07 and
beta in 5/10/20. Sizes:

======  =====  =====  =====  ========  =====  ============================================
size    width  heads  depth  img_size  patch  use
======  =====  =====  =====  ========  =====  ============================================
nano    32     2      4      32        8      unit tests (2 Glimpser + 2 halting blocks)
micro   96     3      6      112       16     CPU demo / training (2 Glimpser + 4 halting)
ti      192    3      12     224       16     DeiT-Ti backbone
s       384    6      12     224       16     DeiT-S backbone (the paper)
b       768    12     12     224       16     DeiT-B backbone
======  =====  =====  =====  ========  =====  ============================================

All use MLP ratio 4, qkv bias, LayerNorm eps 1e-6, drop-path 0.1, 8 frames, 400 classes, the motion head, and
``halted_token_mode="remove"``. The paper's variants are ``haltingvt-s-g03-b5``, ``haltingvt-s-g03-b10``,
``haltingvt-s-g05-b20``, ``haltingvt-s-g07-b20`` and the baseline ``jointvt-s``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from . import flops
from .config import ModelConfig
from .haltingvt import HaltingVT

log = logging.getLogger(__name__)

SIZES: dict[str, dict[str, int]] = {
    "nano": dict(embed_dim=32, num_heads=2, depth=4, img_size=32, patch_size=8),
    "micro": dict(embed_dim=96, num_heads=3, depth=6, img_size=112, patch_size=16),
    "ti": dict(embed_dim=192, num_heads=3, depth=12, img_size=224, patch_size=16),
    "s": dict(embed_dim=384, num_heads=6, depth=12, img_size=224, patch_size=16),
    "b": dict(embed_dim=768, num_heads=12, depth=12, img_size=224, patch_size=16),
}
KEEP_RATES = {"g03": 0.3, "g05": 0.5, "g07": 0.7}
BETAS = {"b5": 5.0, "b10": 10.0, "b20": 20.0}
# one line on how a variant's name reads (`hvt models` prints it)
NAMING = (
    "FAMILY-SIZE[-gKK-bB]: family jointvt (dense) or haltingvt; size nano/micro/ti/s/b (width, depth); gKK = the "
    "Glimpser keeps 0.KK of each frame's patches; bB = halting centre beta B (5, 10, 20)"
)
PAPER_VARIANTS = ("jointvt-s", "haltingvt-s-g03-b5", "haltingvt-s-g03-b10", "haltingvt-s-g05-b20", "haltingvt-s-g07-b20")

# names used by the released configs (mmaction2) -> ours
ALIASES = {"use_motion_head": "motion_head", "divid_depth": "glimpser_depth", "use_halting": "halting"}


def _registry() -> dict[str, ModelConfig]:
    reg: dict[str, ModelConfig] = {}
    for size, arch in SIZES.items():
        name = f"jointvt-{size}"
        reg[name] = ModelConfig(name=name, glimpser_depth=0, keep_rate=(), halting=False, **arch)
        for g, r in KEEP_RATES.items():
            for bname, beta in BETAS.items():
                name = f"haltingvt-{size}-{g}-{bname}"
                reg[name] = ModelConfig(
                    name=name, glimpser_depth=2, keep_rate=(1.0, r), halting=True, halt_scale=10.0,
                    halt_center=beta, eps=0.01, **arch,
                )
    return reg


_REGISTRY = _registry()


def list_models() -> list[str]:
    """All variant names, sorted."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` of a named variant with ``overrides`` applied (validated)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    cfg = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if key not in fields:
            raise TypeError(
                f"unknown override {key!r} for create_model({name!r}); valid overrides: {', '.join(sorted(fields))}"
            )
        changes[key] = value
    gdepth = changes.get("glimpser_depth", cfg.glimpser_depth)
    if "keep_rate" in changes:
        kr = changes["keep_rate"]
        if isinstance(kr, str) or not isinstance(kr, (int, float, list, tuple)):
            raise ValueError(f"keep_rate values must be numbers in (0, 1], got {kr!r}")
        if isinstance(kr, (int, float)):
            if gdepth == 0:
                raise ValueError(f"{name!r} has no Glimpser blocks: keep_rate needs glimpser_depth > 0")
            kr = (1.0,) * (gdepth - 1) + (float(kr),)
        changes["keep_rate"] = tuple(kr)
    elif gdepth != cfg.glimpser_depth:
        changes["keep_rate"] = (1.0,) * gdepth
    return dataclasses.replace(cfg, **changes)


def create_model(name: str, **overrides: Any) -> HaltingVT:
    """Build a named variant. ``overrides`` are ``ModelConfig`` fields (``num_frames``, ``img_size``,
    ``keep_rate`` (a float = the rate of the last Glimpser block, or one value per Glimpser block),
    ``halt_scale``, ``halt_center``, ``eps``, ``num_classes``, ``patch_size``, ``halted_token_mode``,
    ``drop_path_rate``, ``motion_head``, ...); unknown names raise."""
    return HaltingVT(get_config(name, **overrides))


def create_model_from_config(config: ModelConfig | dict[str, Any]) -> HaltingVT:
    """Rebuild the exact model a checkpoint describes (``config`` or ``config.to_dict()``)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return HaltingVT(config)


def flops_summary(
    name: str, num_frames: int | None = 8, img_size: int | None = 224, **overrides: Any
) -> dict[str, Any]:
    """GFLOPs of a named variant at ``num_frames x img_size^2`` (None = the variant's own default): ``dense_gflops`` (the Joint VT of the same backbone) and
    ``no_halting_gflops`` (this model with every token that survives the Glimpser going through every block,
    i.e. the upper bound of what halting can spend), plus a per-block breakdown of the latter."""
    if num_frames is not None:
        overrides["num_frames"] = num_frames
    if img_size is not None:
        overrides["img_size"] = img_size
    cfg = get_config(name, **overrides)
    t, n = flops.frames_and_patches(cfg, None, None)
    kept = cfg.kept_per_frame(n)
    blocks = flops.block_macs(cfg)
    return {
        "name": name,
        "num_frames": t,
        "img_size": cfg.img_size,
        "patches_per_frame": n,
        "kept_per_frame": kept[-1] if kept else n,
        "tokens_in": 1 + t * n,
        "tokens_after_glimpser": 1 + t * (kept[-1] if kept else n),
        "dense_gflops": flops.model_macs(flops.dense_config(cfg)) / flops.GIGA,
        "no_halting_gflops": flops.model_macs(cfg) / flops.GIGA,
        "patch_embed_gflops": flops.patch_embed_macs(t, n, cfg.embed_dim, cfg.patch_size, cfg.in_chans) / flops.GIGA,
        "block_gflops": [m / flops.GIGA for m in blocks],
        "head_gflops": flops.head_macs(cfg) / flops.GIGA,
    }


def model_from_state(state: dict[str, Any]) -> HaltingVT:
    """Rebuild the exact network saved in a training or registry checkpoint and load its weights (strict), in
    eval mode. ``state`` holds ``model_config`` (``ModelConfig.to_dict()``) and ``model`` (the state dict); a
    ``trained_halted_token_mode`` that differs from the config's mode (released weights run in another mode)
    is logged as a warning, since outputs change. Raises ``RuntimeError`` (torch) on mismatched weights."""

    model = create_model_from_config(state["model_config"])
    model.load_state_dict(state["model"])
    trained_mode = state.get("trained_halted_token_mode")  # set by `hvt registry import` (released weights)
    if trained_mode and trained_mode != model.config.halted_token_mode:
        log.warning(
            "weights trained in %r halted-token mode run in %r mode: outputs change (see docs/FIDELITY.md)",
            trained_mode, model.config.halted_token_mode,
        )
    return model.eval()
