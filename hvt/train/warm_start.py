"""Warm start: begin a run from a registered model's weights (``ModelSpec.init_from = "MODEL[@REF]"``).

The nightly retraining fine-tunes the current champion on the new dataset version instead of training from
scratch. ``REF`` is a version (``v3``), ``latest`` or an alias (``champion``, the default); the driver resolves it
to a version once, before the run is named (:func:`resolve_init_from`), so the run name and the lineage say
which weights a run started from even after the alias has moved on. Workers load that version's ``model.pt``
from the store, sha256-verified (``hvt.registry.load_checkpoint``), through the same loader as ``pretrained``
(only the classification head may differ: a new class count re-initialises it). A run that resumes from its
own checkpoint never loads them again.
"""

from __future__ import annotations

import re
from typing import Any

from hvt import registry
from hvt.config import TrainConfig

_INIT_FROM = re.compile(r"^(?P<model>[^@/\s]+)(?:@(?P<ref>[^@/\s]+))?$")


class WarmStartError(ValueError):
    """``init_from`` names no usable registered version; the message says which and what to do."""


def parse_init_from(text: str) -> tuple[str, str]:
    """``"MODEL[@REF]"`` -> ``(model, ref)``, ``ref`` defaulting to ``champion``."""
    match = _INIT_FROM.match(text)
    if not match:
        raise WarmStartError(f"init_from {text!r}: expected MODEL[@REF], e.g. haltingvt-micro-g07-b10@champion")
    return match["model"], match["ref"] or registry.CHAMPION


def resolve_init_from(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``model.init_from`` pinned to a version (``MODEL@vN``); unchanged without ``init_from``.
    Raises :class:`WarmStartError` when the model, the alias or the version does not exist or its files do not
    verify."""
    if not cfg.model.init_from:
        return cfg
    model, ref = parse_init_from(cfg.model.init_from)
    try:
        version = registry.get_version(cfg.store, model, ref)
    except registry.RegistryError as err:
        raise WarmStartError(f"--init-from {cfg.model.init_from}: {err}") from err
    problems = registry.verify_version(version)
    if problems:
        raise WarmStartError(f"--init-from {cfg.model.init_from}: {model} {version.version} is damaged "
                             f"({'; '.join(problems)}); pick another version")
    pinned = f"{model}@{version.version}"
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"init_from": pinned})})


def init_weights(cfg: TrainConfig) -> dict[str, Any]:
    """The state dict of the (pinned) ``init_from`` version, read and sha256-verified from the store."""
    model, ref = parse_init_from(cfg.model.init_from or "")
    return registry.load_checkpoint(registry.get_version(cfg.store, model, ref))["model"]


def init_lineage(cfg: TrainConfig) -> dict[str, Any] | None:
    """What a run started from, for the registry's lineage: model, version, the weights' sha256."""
    if not cfg.model.init_from:
        return None
    model, ref = parse_init_from(cfg.model.init_from)
    version = registry.get_version(cfg.store, model, ref)
    return {"model": model, "version": version.version, "model_sha256": version.files.get("model.pt")}
