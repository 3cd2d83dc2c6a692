"""Classify one video with a registered (or saved) model: top-5 classes and the GFLOPs spent on that clip.

    from hvt.predict import predict_video
    prediction = predict_video("clip.mp4", model="champion", store="./hvt-store")
    prediction.top5[0].label, prediction.gflops

The clip goes through the same test transform as evaluation (``hvt.data.load_clip_from_path`` with the data
config stored next to the weights). A registry model is sha256-verified before ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hvt import registry, storage
from hvt.data import DataConfig, VideoDecodeError, load_clip_from_path
from hvt.errors import InputError
from hvt.evaluation.evaluator import Evaluator
from hvt.model import ModelConfig
from hvt.model.zoo import model_from_state

log = logging.getLogger(__name__)

_REGISTRY_REF = re.compile(r"^(v\d+|latest|[A-Za-z][\w-]*)$")


class ModelLoadError(InputError):
    """The model to predict with cannot be found or read; the message says which and what to pass instead."""


@dataclass(frozen=True)
class LabelProb:
    label: str
    prob: float


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference plus what it needs: class names and the data config of its test transform."""

    network: torch.nn.Module
    classes: list[str]
    data_config: DataConfig
    name: str
    version: str | None
    source: str

    def describe(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True)
class Prediction:
    video: str
    top5: list[LabelProb]
    gflops: float
    model: str
    version: str | None
    views: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "top5": [{"label": p.label, "prob": p.prob} for p in self.top5],
            "gflops": self.gflops,
            "model": self.model,
            "version": self.version,
            "views": self.views,
        }


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.endswith((".pt", ".pth")) or os.path.exists(ref)


def _from_payload(payload: Any, source: str) -> tuple[dict[str, Any], list[str], DataConfig]:
    """(state with ``model`` + ``model_config``, class names, data config) from a registry ``model.pt`` payload
    or a training checkpoint (``train_state.pt``, whose classes are only known by index)."""
    if not isinstance(payload, dict) or "model" not in payload or "model_config" not in payload:
        raise ModelLoadError(
            f"{source} is not a HaltingVT model file (no 'model' and 'model_config' entries); pass a registry "
            "model.pt or a training checkpoint's train_state.pt"
        )
    if "data_config" in payload:
        data_config = DataConfig.model_validate(payload["data_config"])
    elif "train_config" in payload:
        data_config = DataConfig.model_validate(payload["train_config"].get("data", {}))
    else:
        raise ModelLoadError(f"{source} stores no data config, so its test transform is unknown")
    num_classes = ModelConfig.from_dict(payload["model_config"]).num_classes
    classes = [str(c) for c in payload.get("classes") or [f"class {i}" for i in range(num_classes)]]
    if len(classes) != num_classes:
        raise ModelLoadError(f"{source} names {len(classes)} classes but its model has {num_classes} outputs")
    return payload, classes, data_config


def _pick_registry_name(store: str, registry_name: str | None) -> str:
    if registry_name:
        return registry_name
    models = registry.list_models(store)
    if len(models) == 1:
        return models[0]
    if not models:
        raise ModelLoadError(
            f"no registered models in {registry.registry_root(store)}; train one (`hvt train`) or pass "
            "--model PATH/TO/model.pt"
        )
    raise ModelLoadError(
        f"{registry.registry_root(store)} holds several models ({', '.join(models)}); pass --registry-name NAME"
    )


def load_model(ref: str = registry.CHAMPION, *, store: str | None = None, registry_name: str | None = None) -> LoadedModel:
    """Resolve ``ref``: a registry version (``champion`` or another alias, ``latest``, ``vN``) of
    ``registry_name`` (default: the store's only model), or a path / URL of a ``model.pt`` file."""
    if _looks_like_path(ref) or not _REGISTRY_REF.match(ref):
        if not storage.exists(ref):
            raise ModelLoadError(
                f"--model {ref}: no such file; pass a model.pt path, or a registry ref (champion, latest, vN)"
            )
        data = storage.read_bytes(ref)
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError / zipfile errors
            raise ModelLoadError(f"--model {ref}: cannot read it as a torch model file ({type(err).__name__})") from err
        state, classes, data_config = _from_payload(payload, ref)
        name, version, source = os.path.basename(ref), None, ref
    else:
        store = storage.resolve_store(store)
        name = _pick_registry_name(store, registry_name)
        entry = registry.get_version(store, name, ref)
        payload = registry.load_checkpoint(entry)  # refuses a file whose sha256 does not match
        state, classes, data_config = _from_payload(payload, f"{name} {entry.version}")
        version, source = entry.version, storage.join(entry.path, "model.pt")
    network = model_from_state(state)
    return LoadedModel(network, classes, data_config, name, version, source)


def predict_clip(loaded: LoadedModel, clip: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Class probabilities ``[num_classes]`` (mean over views) and the GFLOPs spent on all views of one clip,
    with the one evaluator (``hvt.evaluation.evaluator``).

    ``clip``: uint8 ``[T, H, W, 3]`` or ``[V, T, H, W, 3]`` (several temporal clips / crops)."""
    views = clip if clip.ndim == 5 else clip[None]  # [V, T, H, W, 3]
    scores = Evaluator(loaded.network, device).score(torch.from_numpy(np.ascontiguousarray(views))[None])
    return scores.probs[0].cpu(), float(scores.gflops[0])


def _quiet_ffmpeg() -> None:
    """FFmpeg prints every complaint about a damaged file straight to stderr; a one-clip command reports the
    decoder's reason in its own error instead. (hvt.data sets decord's level once on first use, so do that
    first, then lower it.)"""
    from hvt.data.video_reader import quiet_decord

    decord = quiet_decord()
    decord.logging.set_level(decord.logging.QUIET)


def predict_video(
    video: str,
    *,
    model: str | LoadedModel = registry.CHAMPION,
    store: str | None = None,
    registry_name: str | None = None,
    top_k: int = 5,
) -> Prediction:
    """Top-``top_k`` classes of one video file (local path or fsspec URL) and the GFLOPs spent on it.

    Raises ``VideoDecodeError`` for a missing, unreadable or corrupt video, ``ModelLoadError`` /
    ``RegistryError`` for a model that cannot be found, read or verified."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model, store=store, registry_name=registry_name)
    if not storage.exists(video):
        raise VideoDecodeError(f"{video}: no such video file")
    _quiet_ffmpeg()
    try:
        clip = load_clip_from_path(video, loaded.data_config)
    except VideoDecodeError as err:
        raise VideoDecodeError(f"{video}: cannot decode this video ({err}); is it a complete, valid video?") from err
    probs, gflops = predict_clip(loaded, clip)
    k = min(top_k, probs.numel())
    values, indices = probs.topk(k)
    top = [LabelProb(loaded.classes[int(i)], float(v)) for v, i in zip(values, indices, strict=False)]
    views = clip.shape[0] if clip.ndim == 5 else 1
    log.debug("%s: %s with %s, %.4f GFLOPs", video, top[0].label, loaded.describe(), gflops)
    return Prediction(video, top, gflops, loaded.name, loaded.version, views)
