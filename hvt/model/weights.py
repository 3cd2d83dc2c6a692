"""Loading weights: DeiT / timm ViT image checkpoints (the paper's init), released HaltingVT checkpoints
(mmaction2 state dicts) and our own state dicts, from a local path, an http(s) URL or an in-memory mapping.

Everything goes through ``torch.load(..., weights_only=True)`` (or, for checkpoints that also pickle other
objects, a loader that replaces every non-tensor class by an inert placeholder): no pickled code is ever run. Key mismatches raise
:class:`WeightsError` listing the missing and unexpected keys (and shape mismatches).

Image init (``kind="deit"``), as the paper / released code: every block takes the ViT block of the same index;
Glimpser blocks also get ``temporal_attn`` and ``temporal_norm1`` copied from the spatial ``attn`` / ``norm1``;
``time_embed`` starts at zero and so does every ``temporal_fc`` (the released code leaves the first block's
``temporal_fc`` random; zeroing all of them makes a freshly initialised model compute exactly the image model on
single frames). The image classifier ``head`` is used only if its shape matches ``num_classes``; the motion
head keeps its random init. A position table of another grid size is resized (bicubic, class token kept).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("auto", "deit", "released", "native")

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A state dict does not fit the model; the message lists what is missing / unexpected / mis-shaped."""


@dataclass
class LoadReport:
    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the file, deliberately not used (with the reason)
    kept_init: list[str] = field(default_factory=list)  # model tensors left at their current values

    def summary(self) -> str:
        return (
            f"{self.kind} weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.skipped)} skipped, {len(self.kept_init)} kept at init"
        )


# ---------------------------------------------------------------------------------------------- reading
def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Find the tensor mapping inside a checkpoint object (``state_dict`` / ``model`` / ``model_state`` /
    ``module``) and strip a DataParallel ``module.`` prefix."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "model_state", "module"):
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    if not out:
        raise WeightsError(f"no tensors found in checkpoint (top-level keys: {sorted(obj)[:20]})")
    return out


class _Inert:
    """Stands for any object of a class outside the tensor allow-list: built from nothing, its state dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def load_tensors_only(data: bytes) -> tuple[Any, list[str]]:
    """``torch.load`` a checkpoint that also pickles other objects (an mmaction2 / mmengine checkpoint's ``meta``,
    ``message_hub``, optimizer, numpy values) without running any of their code.

    Globals on torch's ``weights_only`` allow-list (tensors, storages, dtypes, ``OrderedDict``...) load as
    usual; every other global the pickle names becomes an inert placeholder (:class:`_Inert`) whose constructor
    and state are ignored, so nothing outside the allow-list is imported or called. Returns the loaded object and
    the sorted names that were replaced."""
    import types

    from torch import _weights_only_unpickler

    allowed = _weights_only_unpickler._get_allowed_globals()
    replaced: set[str] = set()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            replaced.add(key)
            return _Inert

    module = types.ModuleType("hvt_tensors_only_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: Unpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.__dict__.update({k: getattr(pickle, k) for k in ("HIGHEST_PROTOCOL", "UnpicklingError")})
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=module)
    return obj, sorted(replaced)


def load_checkpoint_bytes(data: bytes, name: str) -> Any:
    """``torch.load(weights_only=True)`` of ``data``; a checkpoint that pickles more than tensors (e.g. the
    released mmaction2 ones, with ``meta``) falls back to :func:`load_tensors_only` with a log line naming what
    was ignored. Raises ``WeightsError`` naming ``name`` when the bytes are not a torch checkpoint at all."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as exc:  # not a zip / pickle at all
        raise WeightsError(f"{name} is not a torch checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    try:
        obj, replaced = load_tensors_only(data)
    except Exception as exc:
        raise WeightsError(f"{name} cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    log.info("%s: read its tensors only; ignored pickled objects of %d other types (%s)", name, len(replaced),
             ", ".join(replaced[:8]) + (", ..." if len(replaced) > 8 else ""))
    return obj


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, Tensor]:
    """Read a state dict from a path, an fsspec or http(s) URL (cached by ``torch.hub``), or a mapping.

    Never runs pickled code: see :func:`load_checkpoint_bytes`."""
    if isinstance(source, Mapping):
        return unwrap_state_dict(source)
    src = str(source)
    if src.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        cache = Path(torch.hub.get_dir()) / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / (os.path.basename(urlparse(src).path) or "download.pth")
        if not path.is_file():
            try:
                torch.hub.download_url_to_file(src, str(path), progress=False)
            except Exception as exc:  # URLError, HTTPError, OSError
                raise WeightsError(f"cannot download {src} ({type(exc).__name__}: {exc})") from exc
        data = path.read_bytes()
    elif "://" in src:
        from hvt import storage

        try:
            data = storage.read_bytes(src)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot read weights {src} ({type(exc).__name__}: {exc})") from exc
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        data = path.read_bytes()
    return unwrap_state_dict(load_checkpoint_bytes(data, src))


def detect_kind(sd: Mapping[str, Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return "released"
    if "time_embed" in sd or any(".temporal_attn." in k for k in keys):
        return "native"
    if "pos_embed" in sd and any(k.startswith("blocks.") for k in keys):
        return "deit"
    raise WeightsError(f"cannot tell what kind of checkpoint this is (first keys: {keys[:10]})")


# ---------------------------------------------------------------------------------------------- conversions
def resize_pos_embed(pos: Tensor, grid: int, prefix: int = 1) -> Tensor:
    """``[1, prefix + g*g, d]`` -> ``[1, 1 + grid*grid, d]`` (bicubic over the grid; only the first prefix
    token, the class token, is kept)."""
    cls, cells = pos[:, :1], pos[:, prefix:]
    g = int(round(cells.shape[1] ** 0.5))
    if g * g != cells.shape[1]:
        raise WeightsError(f"pos_embed with {cells.shape[1]} cells is not a square grid")
    if g != grid:
        d = cells.shape[-1]
        cells = cells.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
        cells = F.interpolate(cells, size=(grid, grid), mode="bicubic", align_corners=False)
        cells = cells.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)
    return torch.cat([cls, cells], dim=1)


def convert_deit_state_dict(sd: Mapping[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """timm/DeiT ViT keys -> ours (see the module docstring). Returns (state dict, skipped keys with reasons)."""
    cfg = model.config
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    skipped: list[str] = []
    prefix = 2 if "dist_token" in sd else 1
    for k, v in sd.items():
        if k in ("dist_token",) or k.startswith("head_dist."):
            skipped.append(f"{k} (distillation token/head: not used)")
        elif k == "pos_embed":
            out[k] = resize_pos_embed(v, cfg.grid(), prefix)
        elif k == "patch_embed.proj.weight" and v.dim() == 2:
            out[k] = v.reshape(v.shape[0], cfg.in_chans, cfg.patch_size, cfg.patch_size)
        elif k.startswith("head."):
            if k in own and own[k].shape == v.shape:
                out[k] = v
            else:
                skipped.append(f"{k} (classifier of {tuple(v.shape)} does not fit {cfg.num_classes} classes)")
        elif k.startswith(("fc_norm.", "pre_logits.")):
            skipped.append(f"{k} (not part of this architecture)")
        else:
            out[k] = v
    for i in range(cfg.glimpser_depth):
        for part in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):
            src = f"blocks.{i}.attn.{part}"
            if src in out:
                out[f"blocks.{i}.temporal_attn.{part}"] = out[src].clone()
        for part in ("weight", "bias"):
            src = f"blocks.{i}.norm1.{part}"
            if src in out:
                out[f"blocks.{i}.temporal_norm1.{part}"] = out[src].clone()
            tgt = f"blocks.{i}.temporal_fc.{part}"
            out[tgt] = torch.zeros_like(own[tgt])
    out["time_embed"] = torch.zeros_like(own["time_embed"])
    return out, skipped


def convert_released_state_dict(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """mmaction2 HaltingVT keys -> ours: ``backbone.model.X`` -> ``X``, ``cls_head.fc_cls`` -> ``head``,
    ``cls_head.fc_motion`` -> ``motion_head``."""
    out: dict[str, Tensor] = {}
    skipped: list[str] = []
    for k, v in sd.items():
        if k.startswith("backbone.model."):
            out[k[len("backbone.model.") :]] = v
        elif k.startswith("cls_head.fc_cls."):
            out["head." + k[len("cls_head.fc_cls.") :]] = v
        elif k.startswith("cls_head.fc_motion."):
            out["motion_head." + k[len("cls_head.fc_motion.") :]] = v
        elif k.startswith("data_preprocessor."):
            skipped.append(f"{k} (input normalisation buffer)")
        else:
            out[k] = v  # reported as unexpected
    return out, skipped


def to_released_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our state dict in the released (mmaction2) layout, e.g. to hand a model to the released eval code."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("head."):
            out["cls_head.fc_cls." + k[5:]] = v
        elif k.startswith("motion_head."):
            out["cls_head.fc_motion." + k[12:]] = v
        else:
            out["backbone.model." + k] = v
    return out


# ---------------------------------------------------------------------------------------------- loading
def _check_and_load(
    model: nn.Module, sd: dict[str, Tensor], allowed_missing: set[str], strict: bool
) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and k not in allowed_missing)
    unexpected = sorted(k for k in sd if k not in own)
    mis_shaped = sorted(
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    )
    if strict and (missing or unexpected or mis_shaped):
        lines = [f"state dict does not fit {getattr(model.config, 'name', type(model).__name__)}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {unexpected}")
        if mis_shaped:
            lines.append(f"  shape mismatches ({len(mis_shaped)}): {mis_shaped}")
        raise WeightsError("\n".join(lines))
    usable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    kept = sorted(k for k in own if k not in usable)
    return sorted(usable), kept


def load_weights(
    model: nn.Module, source: str | os.PathLike | Mapping, kind: str = "auto", strict: bool = True
) -> LoadReport:
    """Load ``source`` into ``model``. ``kind``: ``deit`` (timm/DeiT image ViT, the paper's init), ``released``
    (mmaction2 HaltingVT checkpoint), ``native`` (``model.state_dict()``), or ``auto`` (guess from the keys).
    With ``strict`` (default) any missing / unexpected / mis-shaped key raises :class:`WeightsError`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sd = read_state_dict(source)
    if kind == "auto":
        kind = detect_kind(sd)
    name = source if not isinstance(source, Mapping) else "<state dict>"
    allowed: set[str] = set()
    skipped: list[str] = []
    if kind == "deit":
        sd, skipped = convert_deit_state_dict(sd, model)
        allowed = {k for k in model.state_dict() if k.startswith(("motion_head.", "head."))}
    elif kind == "released":
        sd, skipped = convert_released_state_dict(sd)
    loaded, kept = _check_and_load(model, sd, allowed, strict)
    return LoadReport(str(name), kind, loaded, skipped, kept)


def load_deit(model: nn.Module, source: str | os.PathLike | Mapping, strict: bool = True) -> LoadReport:
    return load_weights(model, source, "deit", strict)


def load_released(model: nn.Module, source: str | os.PathLike | Mapping, strict: bool = True) -> LoadReport:
    return load_weights(model, source, "released", strict)
