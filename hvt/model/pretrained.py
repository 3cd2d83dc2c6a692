"""Initialising a model for fine-tuning: ``load_pretrained(model, PATH_OR_URL)``.

Accepted sources (the kind is told from the keys):

* a DeiT / timm image ViT (the paper's init): blocks by index, temporal attention and its norm copied from the
  spatial ones in every Glimpser block, ``time_embed`` and every ``temporal_fc`` zero (see ``weights.py``);
* a released HaltingVT checkpoint (mmaction2 layout, ``backbone.model.*`` / ``cls_head.*``);
* a checkpoint of this project (``model.state_dict()``, bare or inside a ``{"model": ...}`` training state).

The classifier ``head`` is the one part allowed not to fit: a head for another class count (or none, as in a
DeiT file whose 1000-way head does not fit) is left at the model's random init and a log line says so. A DeiT file
has no motion head, so the motion head keeps its init too. Anything else that is missing, unexpected or
mis-shaped raises :class:`~hvt.model.weights.WeightsError` listing the keys, before any weight is changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from torch import nn

from .weights import (
    LoadReport,
    WeightsError,
    _check_and_load,
    convert_deit_state_dict,
    convert_released_state_dict,
    detect_kind,
    read_state_dict,
)

log = logging.getLogger(__name__)

HEAD_KEYS = ("head.weight", "head.bias")


def load_pretrained(model: nn.Module, source: str | os.PathLike | Mapping) -> LoadReport:
    """Load fine-tuning init weights from ``source`` (a path, an http(s) URL or a state dict) into ``model``.

    Returns a :class:`LoadReport`; ``report.kept_init`` lists the tensors left at their init (the head when its
    class count differs, the motion head for a DeiT file). Raises ``WeightsError`` (one message naming the
    source and every key at fault) for anything else that does not fit; the model is unchanged then.
    """
    name = "<state dict>" if isinstance(source, Mapping) else str(source)
    try:
        sd = read_state_dict(source)
        kind = detect_kind(sd)
    except WeightsError as err:
        raise WeightsError(f"pretrained weights {name}: {err}") from err
    own = model.state_dict()
    allowed: set[str] = set()
    if kind == "deit":
        sd, skipped = convert_deit_state_dict(sd, model)
        allowed = {k for k in own if k.startswith("motion_head.")}
    elif kind == "released":
        sd, skipped = convert_released_state_dict(sd)
    else:
        skipped = []
    for key in HEAD_KEYS:
        if key in sd and key in own and sd[key].shape != own[key].shape:
            skipped.append(f"{key} (shape {tuple(sd[key].shape)} does not fit {tuple(own[key].shape)})")
            del sd[key]
    head_reinit = [k for k in HEAD_KEYS if k in own and k not in sd]
    allowed |= set(head_reinit)
    try:
        loaded, kept = _check_and_load(model, sd, allowed, strict=True)
    except WeightsError as err:
        raise WeightsError(f"pretrained {kind} weights {name} do not fit this model: {err}") from err
    if head_reinit:
        classes = model.config.num_classes if hasattr(model, "config") else own["head.weight"].shape[0]
        log.info("pretrained %s weights %s: classification head re-initialised for %d classes (%s)",
                 kind, name, classes, "; ".join(s for s in skipped if s.startswith("head.")) or "not in the file")
    report = LoadReport(name, kind, loaded, skipped, kept)
    log.info(report.summary())
    return report


__all__ = ["HEAD_KEYS", "load_pretrained"]
