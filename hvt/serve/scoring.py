"""The pieces of an inference job that run per video or per batch, wherever they run (in-process or in Ray):
loading the model for serving, decoding one input exactly as ``hvt predict`` does, and scoring a batch of clips
into output rows.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from hvt import storage
from hvt.data import DataConfig, VideoDecodeError, load_clip_from_bytes
from hvt.errors import InputError
from hvt.evaluation.evaluator import Evaluator, with_views
from hvt.model.config import HALTED_TOKEN_MODES
from hvt.predict import LoadedModel, load_model
from hvt.serve.sources import InferInput

log = logging.getLogger(__name__)

# Row status values: every input gets exactly one row with one of these.
OK, MISSING, UNREADABLE, UNDECODABLE, UNSUPPORTED = "ok", "missing", "unreadable", "undecodable", "unsupported"
STATUSES = (OK, MISSING, UNREADABLE, UNDECODABLE, UNSUPPORTED)
# The columns of an output row (hvt infer's Parquet), in order.
ROW_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("path", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("labels", pa.list_(pa.string())),  # top-k class names, best first
    ("probs", pa.list_(pa.float64())),  # their probabilities (mean over views of the softmax)
    ("top1", pa.string()),
    ("top1_prob", pa.float64()),
    ("gflops", pa.float64()),  # GFLOPs spent on the whole video (all views)
    ("gflops_per_view", pa.list_(pa.float64())),
    ("views", pa.int32()),
    ("mean_halting_depth", pa.float64()),  # blocks a surviving patch token went through, mean over views
    ("model", pa.string()),
    ("version", pa.string()),
    ("halted_token_mode", pa.string()),
])
_VIDEO_EXTENSIONS = {"mp4", "mkv", "webm", "avi", "mov", "m4v", "gif", "mpg", "mpeg", "wmv", "flv", "3gp", "ts"}


@dataclass(frozen=True)
class ServingModel:
    """A loaded model ready for serving: the network (in ``mode``), classes, the test data config with the
    requested views, and where it came from (``loaded.name``, ``version``, ``source``, the file's sha256)."""

    loaded: LoadedModel
    data_config: DataConfig
    mode: str
    weights_sha256: str = ""

    @property
    def clip_shape(self) -> tuple[int, ...]:
        """uint8 ``[V, T, H, W, 3]`` of one video's views."""
        shape = self.data_config.clip_shape(False)
        return tuple(shape) if len(shape) == 5 else (1, *shape)


def _file_facts(source: str) -> tuple[str | None, str]:
    """(``trained_halted_token_mode`` of the model file at ``source``, set on imported released weights; the
    file's sha256, which names the exact weights a job ran with)."""
    data = storage.read_bytes(source)
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    mode = payload.get("trained_halted_token_mode") if isinstance(payload, dict) else None
    return mode, hashlib.sha256(data).hexdigest()


def load_serving_model(
    model: str, *, store: str | None = None, views: str | None = None, halted_token_mode: str | None = None
) -> ServingModel:
    """Resolve ``--model`` (``NAME[@REF]``, ``REF`` or a path; :func:`hvt.registry.refs.parse_model_ref`), load it
    as ``hvt predict`` does (sha256-verified for registry versions) and set its halted-token mode.

    ``halted_token_mode`` None: ``remove`` for this project's models (same outputs as ``mask``, less compute);
    an imported released checkpoint keeps the mode it was trained in (``official``). Naming another mode for
    released weights works and logs the warning ``model_from_state`` gives. ``views``: ``CLIPSxCROPS`` or None
    (the model's data config). Raises ``InputError`` / ``RegistryError`` with a one-line message."""
    from hvt.registry.refs import parse_model_ref

    if halted_token_mode is not None and halted_token_mode not in HALTED_TOKEN_MODES:
        raise InputError(f"--halted-token-mode {halted_token_mode}: expected one of {', '.join(HALTED_TOKEN_MODES)}")
    ref = parse_model_ref(model, store)
    loaded = load_model(ref.path) if ref.path else load_model(ref.ref, store=store, registry_name=ref.name)
    trained, sha256 = _file_facts(loaded.source)
    mode = halted_token_mode or (trained or "remove")
    if trained and mode != trained:
        log.warning("%s: released weights trained in %r mode run in %r mode: outputs change (docs/FIDELITY.md)",
                    loaded.describe(), trained, mode)
    if loaded.network.config.halted_token_mode != mode:
        loaded.network.set_halted_token_mode(mode)
    try:
        data_config = with_views(loaded.data_config, views)
    except ValueError as err:
        raise InputError(f"--views: {err}") from None
    return ServingModel(loaded, data_config, mode, sha256)


@dataclass
class Decoded:
    """One input after decoding: ``clip`` uint8 ``[V, T, H, W, 3]`` when ``status`` is ``ok``, else None."""

    item: InferInput
    clip: np.ndarray | None
    status: str
    reason: str = ""


def _failed_status(path: str) -> str:
    ext = posixpath.basename(path.split("#", 1)[0]).rsplit(".", 1)[-1].lower() if "." in path else ""
    return UNDECODABLE if ext in _VIDEO_EXTENSIONS else UNSUPPORTED


def _quiet_ffmpeg() -> None:
    """FFmpeg prints every complaint about a damaged file to stderr; the row's reason carries the error instead."""
    from hvt.data.video_reader import quiet_decord

    quiet_decord().logging.set_level(quiet_decord().logging.QUIET)


def decode_input(item: InferInput, config: DataConfig) -> Decoded:
    """Decode one input with the test transform of ``config`` (frame-exact: a raw file the decoder would misread
    is re-encoded in memory first, as ``hvt predict`` does). Never raises for a bad video: the status and reason
    say what went wrong (``missing``, ``unreadable``, ``undecodable``, ``unsupported`` = not a video type)."""
    from hvt.ingest.transcode import frame_exact_bytes

    _quiet_ffmpeg()
    if item.read_error:
        return Decoded(item, None, UNREADABLE, item.read_error)
    data = item.data
    if data is None:
        try:
            data = storage.read_bytes(item.path)
        except FileNotFoundError:
            return Decoded(item, None, MISSING, "no such file")
        except (OSError, ValueError) as err:
            return Decoded(item, None, UNREADABLE, f"{type(err).__name__}: {str(err)[:200]}")
        try:
            data = frame_exact_bytes(data)
        except Exception as err:  # noqa: BLE001 - a probe failure means the decoder below reports the real reason
            log.debug("%s: frame check failed (%s); decoding as is", item.path, err)
    if not data:
        return Decoded(item, None, UNREADABLE, "empty file")
    try:
        clip = load_clip_from_bytes(data, config, training=False)
    except VideoDecodeError as err:
        return Decoded(item, None, _failed_status(item.path), f"cannot decode: {str(err)[:300]}")
    except Exception as err:  # noqa: BLE001 - any decoder failure on one file is that file's row, not a crash
        return Decoded(item, None, _failed_status(item.path), f"cannot decode ({type(err).__name__}: {str(err)[:200]})")
    return Decoded(item, clip if clip.ndim == 5 else clip[None], OK)


def failure_row(decoded: Decoded, serving: ServingModel) -> dict[str, Any]:
    """The output row of an input that was not classified."""
    return _row(decoded.item, serving, status=decoded.status, reason=decoded.reason)


def _row(item: InferInput, serving: ServingModel, **values: Any) -> dict[str, Any]:
    row = {
        "id": item.id,
        "path": item.path,
        "status": OK,
        "reason": "",
        "labels": [],
        "probs": [],
        "top1": None,
        "top1_prob": None,
        "gflops": None,
        "gflops_per_view": [],
        "views": serving.clip_shape[0],
        "mean_halting_depth": None,
        "model": serving.loaded.name,
        "version": serving.loaded.version,
        "halted_token_mode": serving.mode,
    }
    row.update(values)
    return row


class BatchScorer:
    """Scores batches of decoded clips with the one evaluator (bf16 autocast on CUDA, fp32 on CPU).

    ``batch_size``: videos per forward pass (each with all its views)."""

    def __init__(self, serving: ServingModel, device: torch.device | str = "cpu", top_k: int = 5,
                 batch_size: int = 8) -> None:
        self.serving = serving
        self.evaluator = Evaluator(serving.loaded.network, device)
        self.top_k = min(top_k, len(serving.loaded.classes))
        self.batch_size = max(1, batch_size)

    def score(self, items: list[InferInput], clips: list[np.ndarray]) -> list[dict[str, Any]]:
        """Rows for ``items`` whose clips (uint8 ``[V, T, H, W, 3]`` each) decoded fine, in order."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(clips), self.batch_size):
            chunk = np.stack(clips[start:start + self.batch_size])  # [B, V, T, H, W, 3]
            rows.extend(self._score_chunk(items[start:start + self.batch_size], chunk))
        return rows

    def _score_chunk(self, items: list[InferInput], clips: np.ndarray) -> list[dict[str, Any]]:
        scores = self.evaluator.score(torch.from_numpy(np.ascontiguousarray(clips)))
        b, v = clips.shape[0], clips.shape[1]
        values, indices = scores.probs.topk(self.top_k, dim=-1)  # [B, k]
        view_gflops = scores.view_gflops.view(b, v)
        depth = scores.halting_depth.float().view(b, v, -1)  # [B, V, T*Hp*Wp]; 0 = dropped by the Glimpser
        reached = (depth > 0).float()
        mean_depth = (depth * reached).sum((1, 2)) / reached.sum((1, 2)).clamp_min(1.0)  # [B]
        classes = self.serving.loaded.classes
        rows = []
        for i, item in enumerate(items):
            labels = [classes[int(j)] for j in indices[i]]
            probs = [float(p) for p in values[i]]
            rows.append(_row(
                item, self.serving, labels=labels, probs=probs, top1=labels[0], top1_prob=probs[0],
                gflops=float(scores.gflops[i]), gflops_per_view=[float(g) for g in view_gflops[i]],
                views=v, mean_halting_depth=float(mean_depth[i]),
            ))
        return rows


def score_decoded(scorer: BatchScorer, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """Rows for ``decoded`` in input order: the ``ok`` ones scored in batches, the rest as failure rows."""
    good = [d for d in decoded if d.status == OK]
    scored = iter(scorer.score([d.item for d in good], [d.clip for d in good]))
    return [next(scored) if d.status == OK else failure_row(d, scorer.serving) for d in decoded]
