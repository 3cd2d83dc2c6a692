"""The Ray Data executor of ``hvt infer``: decoding in CPU tasks, the model in actors with batching.

Each window of missing parts (up to ~4096 inputs) is one Ray Dataset: ``from_items`` (paths only, or the bytes
of dataset samples) -> ``map`` (:func:`decode_row`, one CPU task per input, ``decode_cpus`` each) -> ``map_batches``
(:class:`ScoreActor`, ``batch_size`` videos per call; one actor per GPU in bf16 with ``gpu``, else one on the
CPU). Rows stream back; a part is written as soon as its last row is in. The driver holds one window's paths and
the rows of its unfinished parts, never the archive.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from hvt.data import DataConfig
from hvt.serve.scoring import OK, ROW_SCHEMA, BatchScorer, Decoded, ServingModel, decode_input, score_decoded
from hvt.serve.sources import InferInput

log = logging.getLogger(__name__)


def _item(row: dict[str, Any]) -> InferInput:
    return InferInput(id=row["id"], path=row["path"], data=row["data"] or None, read_error=row["read_error"])


def decode_row(row: dict[str, Any], data_config: DataConfig) -> dict[str, Any]:
    """One input row -> the same row with ``clip`` (uint8 ``[V, T, H, W, 3]``; zeros when it failed), ``status``
    and ``reason``; the video bytes are dropped."""
    decoded = decode_input(_item(row), data_config)
    shape = data_config.clip_shape(False)
    clip = decoded.clip if decoded.status == OK else np.zeros(shape if len(shape) == 5 else (1, *shape), np.uint8)
    return {"index": row["index"], "id": row["id"], "path": row["path"], "clip": clip,
            "status": decoded.status, "reason": decoded.reason, "part": row["part"]}


class ScoreActor:
    """A model replica: rebuilds the scorer once, then scores batches of decoded rows into output rows."""

    def __init__(self, serving: ServingModel | Any, gpu: bool, top_k: int, batch_size: int) -> None:
        import ray
        import torch

        from hvt.evaluation.evaluator import select_device

        if not gpu:
            torch.set_num_threads(1)  # the actor's CPU share; decode tasks run beside it
        if isinstance(serving, ray.ObjectRef):
            serving = ray.get(serving)
        self.scorer = BatchScorer(serving, select_device(gpu), top_k, batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        decoded = [
            Decoded(InferInput(id=str(i), path=str(p)), clip if status == OK else None, str(status), str(reason))
            for i, p, clip, status, reason in zip(
                batch["id"], batch["path"], batch["clip"], batch["status"], batch["reason"], strict=True
            )
        ]
        rows = score_decoded(self.scorer, decoded)
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)  # explicit types: None, empty lists and all
        table = table.append_column("index", pa.array([int(i) for i in batch["index"]], pa.int64()))
        return table.append_column("part", pa.array([int(p) for p in batch["part"]], pa.int64()))


def ray_parts_scorer(config: Any, serving: ServingModel):  # noqa: ANN201 - a PartsScorer
    """A ``PartsScorer`` (``hvt.serve.infer``): each window of parts is one Ray Dataset on the running (or a new
    local) Ray; rows stream back and a part is handed on as soon as all its rows are in. ``config``: the job's
    ``InferConfig``."""
    import ray

    from hvt.train.ray_env import ensure_ray

    ensure_ray()
    serving_ref = ray.put(serving)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if config.gpu else 0
    if config.gpu and gpus < 1:
        from hvt.evaluation.evaluator import DeviceError

        raise DeviceError("--gpu: the Ray cluster has no GPU; drop --gpu to run the model on CPUs")
    actors = max(1, gpus)

    def score_parts(parts: list[tuple[int, list[InferInput]]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        rows = [{"part": part, "index": i, "id": it.id, "path": it.path, "data": it.data or b"",
                 "read_error": it.read_error} for part, items in parts for i, it in enumerate(items)]
        sizes = {part: len(items) for part, items in parts}
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
        ds = ds.map(decode_row, fn_kwargs={"data_config": serving.data_config}, num_cpus=config.decode_cpus)
        ds = ds.map_batches(
            ScoreActor,
            fn_constructor_args=(serving_ref, config.gpu, config.top_k, config.batch_size),
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if config.gpu else 0,
            num_cpus=0 if config.gpu else 1,
        )
        arrived: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in ds.iter_rows():
            part = int(row["part"])
            arrived[part].append({k: _plain(v) for k, v in row.items() if k != "part"})
            if len(arrived[part]) == sizes[part]:
                done = sorted(arrived.pop(part), key=lambda r: r["index"])
                yield part, [{k: v for k, v in r.items() if k != "index"} for r in done]

    return score_parts


def _plain(value: Any) -> Any:
    """numpy values Ray hands back -> the Python values of a row (lists, floats, str, None)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
