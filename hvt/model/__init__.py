"""HaltingVT (Wu et al., arXiv 2401.04975) and its Joint VT baseline, in plain torch.

    from hvt.model import create_model
    model = create_model("haltingvt-s-g05-b20", num_classes=200)
    out = model(video)            # video: [B, 3, T, H, W] in [-1, 1]
    loss = F.cross_entropy(out.logits, y) + out.ponder_loss + F.cross_entropy(out.motion_logits, motion_y)

See ``zoo.py`` for the variants, ``halting.py`` for the halted-token modes, ``flops.py`` for the FLOP
convention and ``weights.py`` for loading DeiT and released checkpoints, ``pretrained.py`` for fine-tuning init.
"""

from .config import HALTED_TOKEN_MODES, ModelConfig, ModelOutput
from .flops import flops_summary, model_macs
from .halting import calibrate_halting_offset
from .haltingvt import HaltingVT, num_params
from .pretrained import load_pretrained
from .weights import LoadReport, WeightsError, load_deit, load_released, load_weights, to_released_state_dict
from .zoo import PAPER_VARIANTS, create_model, create_model_from_config, get_config, list_models

__all__ = [
    "HALTED_TOKEN_MODES",
    "PAPER_VARIANTS",
    "HaltingVT",
    "LoadReport",
    "ModelConfig",
    "ModelOutput",
    "WeightsError",
    "calibrate_halting_offset",
    "create_model",
    "create_model_from_config",
    "flops_summary",
    "get_config",
    "list_models",
    "load_deit",
    "load_pretrained",
    "load_released",
    "load_weights",
    "model_macs",
    "num_params",
    "to_released_state_dict",
]
