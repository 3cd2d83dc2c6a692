"""Registering a released (or otherwise trained elsewhere) HaltingVT checkpoint as a registry version.

    hvt registry import haltingvt-minik-g05 --weights https://.../best.pth --variant haltingvt-s-g05-b20 \\
        --classes minik_classes.txt

A released mmaction2 checkpoint as published (``state_dict`` plus pickled ``meta`` / ``message_hub``) is read
tensors-only: nothing else it pickles is imported or run (``hvt.model.weights.load_checkpoint_bytes``).
The weights are loaded strictly into ``create_model(variant, **overrides)`` (released mmaction2 layout or this
project's own), in ``official`` halted-token mode unless an override says otherwise: the released weights were
trained with halted tokens zeroed but still attended, and another mode changes their outputs (measured in
``docs/FIDELITY.md``). The version's lineage records that it was imported, from where, and the sha256 of the
source bytes; its test transform defaults to the released one (short side 256/224 of the input size, centre crop,
``8x32x1`` sampling, ``(x - 127.5) / 127.5``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import urllib.request
from typing import Any

import torch

from hvt import registry, storage
from hvt.data import DataConfig
from hvt.errors import InputError

log = logging.getLogger(__name__)

TRAINED_MODE_KEY = "trained_halted_token_mode"
# the released mmaction2 pipelines (configs/minik/data_pipeline_ml_8x32.py) for a 224 crop: test Resize short side
# 256 + CenterCrop 224; train RandomRescale (256, 320) + RandomCrop 224; SampleFrames 8 x 32 x 1
RELEASED_CROP, RELEASED_TEST_SHORT, RELEASED_TRAIN_SHORT = 224, 256, (256, 320)
RELEASED_FRAME_INTERVAL = 32
REMOVE_WARNING = (
    "{name}: released weights were trained with halted tokens still attended ('official' mode); in {mode!r} "
    "mode their outputs change (see docs/FIDELITY.md for how much)"
)


def fetch_bytes(source: str) -> bytes:
    """The bytes of a local path, fsspec URL or http(s) URL; ``InputError`` naming it when unreadable."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=600) as response:  # noqa: S310 - the user's own URL
                return response.read()
        return storage.read_bytes(source)
    except (OSError, ValueError) as err:
        raise InputError(f"--weights {source}: cannot read it ({type(err).__name__}: {err})") from err


def read_classes(path: str | None, num_classes: int) -> list[str]:
    """Class names, one per line (blank lines ignored), or ``class 0 .. class N-1`` without a file."""
    if path is None:
        return [f"class {i}" for i in range(num_classes)]
    try:
        names = [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--classes {path}: cannot read it ({err})") from err
    if len(names) != num_classes:
        raise InputError(
            f"--classes {path} names {len(names)} classes but the checkpoint's head has {num_classes} outputs"
        )
    return names


RELEASED_CONFIG_KEYS = (
    "num_frames", "img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
    "norm_eps", "divid_depth", "keep_rate", "use_halting", "halt_scale", "halt_center", "eps", "num_classes",
    "use_motion_head",
)


def overrides_from_released_config(config: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` overrides from a released config's values (``divid_depth``, ``use_halting`` and
    ``use_motion_head`` are aliases; ``ponder_token_scale`` is ``ponder_weight``). Raises ``InputError`` for the
    released options this model does not implement (``use_distr_prior``, ``use_motion_token``)."""
    for unsupported in ("use_distr_prior", "use_motion_token"):
        if config.get(unsupported):
            raise InputError(f"released config sets {unsupported}={config[unsupported]!r}, which is not supported")
    out = {k: config[k] for k in RELEASED_CONFIG_KEYS if k in config}
    if "keep_rate" in out:
        out["keep_rate"] = tuple(out["keep_rate"])
    if "ponder_token_scale" in config:
        out["ponder_weight"] = config["ponder_token_scale"]
    return out


def released_data_config(num_frames: int, crop_size: int, sampling: str | None = None) -> DataConfig:
    """The released test/train transforms scaled to ``crop_size``; ``sampling`` (``FRAMESxINTERVALxCLIPS``)
    overrides ``num_frames x 32 x 1``."""
    def scale(side: int) -> int:
        return round(crop_size * side / RELEASED_CROP)

    sizes = dict(crop_size=crop_size, test_short_side=scale(RELEASED_TEST_SHORT),
                 train_short_side=tuple(scale(s) for s in RELEASED_TRAIN_SHORT))
    if sampling:
        return DataConfig.for_sampling(sampling, **sizes)
    return DataConfig(num_frames=num_frames, frame_interval=RELEASED_FRAME_INTERVAL, **sizes)


def _head_classes(sd: dict[str, torch.Tensor]) -> int | None:
    for key in ("cls_head.fc_cls.weight", "head.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    return None


def warn_if_not_official(name: str, mode: str) -> None:
    if mode != "official":
        log.warning(REMOVE_WARNING.format(name=name, mode=mode))


def import_checkpoint(
    store: str,
    name: str,
    weights: str,
    variant: str,
    *,
    classes_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    data_config: DataConfig | None = None,
) -> registry.RegistryVersion:
    """Register ``weights`` as a new version of ``name``; ``champion`` moves to it when there is none yet.

    Raises ``InputError`` for an unreadable source or class file, ``WeightsError`` when the state dict does not fit
    the variant (every missing / unexpected / mis-shaped key listed), ``ValueError`` for an unknown variant.
    """
    from hvt.model import WeightsError, create_model, load_weights
    from hvt.model.weights import detect_kind, load_checkpoint_bytes, read_state_dict
    from hvt.stages import code_version

    overrides = dict(overrides or {})
    mode = overrides.setdefault("halted_token_mode", "official")
    data = fetch_bytes(weights)
    sha = hashlib.sha256(data).hexdigest()
    try:
        sd = read_state_dict(load_checkpoint_bytes(data, weights))
        kind = detect_kind(sd)
    except WeightsError as err:
        raise WeightsError(f"--weights {weights}: {err}") from err
    if kind == "deit":
        raise WeightsError(f"--weights {weights} is an image ViT (DeiT/timm); fine-tune it with `hvt train "
                           "--pretrained` instead of importing it")
    head = _head_classes(sd)
    if "num_classes" not in overrides and head is not None:
        overrides["num_classes"] = head
    try:
        model = create_model(variant, **overrides)
    except (ValueError, TypeError) as err:
        raise InputError(f"--variant {variant} with overrides {overrides}: {err}") from err
    try:
        report = load_weights(model, sd, kind=kind, strict=True)
    except WeightsError as err:
        raise WeightsError(f"--weights {weights} does not fit {variant} {overrides}: {err}") from err
    released = report.kind == "released"  # trained in official mode; a native file's mode is its own config's
    if released:
        warn_if_not_official(name, mode)
    cfg = model.config
    classes = read_classes(classes_file, cfg.num_classes)
    data_config = data_config or released_data_config(cfg.num_frames, cfg.img_size)
    payload = {
        "model": model.state_dict(),
        "model_config": cfg.to_dict(),
        "classes": classes,
        "data_config": data_config.model_dump(mode="json"),
        **({TRAINED_MODE_KEY: "official"} if released else {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    lineage = {
        "imported": True,
        "source": weights,
        "source_sha256": sha,
        "source_kind": report.kind,
        "model_variant": variant,
        "overrides": overrides,
        "halted_token_mode": mode,
        "code_version": code_version(),
    }
    version = registry.register_version(
        store, name, files={"model.pt": buffer.getvalue()}, metrics={"num_classes": cfg.num_classes},
        lineage=lineage, created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if registry.get_alias(store, name) is None:
        registry.set_alias(store, name, version.version, reason="first version: imported, no champion yet")
    log.info("imported %s (%s, sha256 %s) as %s %s", weights, report.summary(), sha[:12], name, version.version)
    return version
