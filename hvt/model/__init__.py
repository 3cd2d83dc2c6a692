"""HaltingVT (Wu et al., arXiv 2401.04975) and its Joint VT baseline, in plain torch.

    from hvt.model import create_model
    model = create_model("haltingvt-s-g05-b20", num_classes=200)
    out = model(video)            # video: [B, 3, T, H, W] in [-1, 1]
    loss = F.cross_entropy(out.logits, y) + out.ponder_loss + F.cross_entropy(out.motion_logits, motion_y)

See ``zoo.py`` for the variants, ``halting.py`` for the halted-token modes, ``flops.py`` for the FLOP
convention and ``weights.py`` for loading DeiT and released checkpoints, ``pretrained.py`` for fine-tuning init.
"""

from hvt.lazy import lazy_exports

# public name -> submodule; imported on first use (hvt/lazy.py)
_LAZY_EXPORTS = {
    "HALTED_TOKEN_MODES": "config",
    "HaltingVT": "haltingvt",
    "LoadReport": "weights",
    "ModelConfig": "config",
    "ModelOutput": "config",
    "PAPER_VARIANTS": "zoo",
    "WeightsError": "weights",
    "calibrate_halting_offset": "halting",
    "create_model": "zoo",
    "create_model_from_config": "zoo",
    "flops_summary": "zoo",
    "get_config": "zoo",
    "list_models": "zoo",
    "load_deit": "weights",
    "load_pretrained": "pretrained",
    "load_released": "weights",
    "load_weights": "weights",
    "model_from_state": "zoo",
    "model_macs": "flops",
    "to_released_state_dict": "weights",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
