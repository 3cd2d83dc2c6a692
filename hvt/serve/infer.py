"""Batch inference over a video archive -> Parquet, one row per input video (``hvt infer``, flow ``infer-haltingvt``).

    from hvt.serve.infer import InferConfig, run_infer
    summary = run_infer(InferConfig(source="videos/", model="champion", out="preds/"))

Output: ``OUT`` is a folder of parts ``part-00000.parquet`` ... (each holds ``part_size`` consecutive inputs of
the source's fixed order, written whole or not at all) plus ``_job.json`` (what the job is) and ``_summary.json``
(written last). ``OUT`` ending in ``.parquet`` is one file, combined from the parts kept in ``OUT.parts/``.

Resumable and idempotent: a re-run with the same job skips the parts already written and computes only the
missing ones, so a killed run re-run ends with the same rows as an unbroken run; ``overwrite`` starts over. A
re-run with a different job (model version, views, top-k, mode, source, part size) into the same ``OUT`` is
refused. Every input gets a row: unreadable, corrupt or unsupported files get their status and reason.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from hvt import storage
from hvt.errors import InputError
from hvt.serve.scoring import (
    OK,
    ROW_SCHEMA,
    BatchScorer,
    ServingModel,
    decode_input,
    load_serving_model,
    score_decoded,
)
from hvt.serve.sources import InferInput, open_source

log = logging.getLogger(__name__)

JOB_FILE, SUMMARY_FILE = "_job.json", "_summary.json"


class InferConfig(BaseModel):
    """One inference job, from the CLI or the flow's parameters to the executor."""

    source: str = Field(description="folder, s3:// prefix, list file, or dataset:NAME[@VERSION]/SPLIT")
    out: str = Field(description="output folder of Parquet parts, or a .parquet file")
    model: str = Field("champion", description="NAME[@REF], REF (champion, latest, vN) or a model.pt path")
    store: str | None = None
    views: str | None = Field(None, pattern=r"^[1-9]\d*x[13]$", description="CLIPSxCROPS; None = the model's")
    top_k: int = Field(5, ge=1)
    halted_token_mode: Literal["official", "mask", "remove"] | None = None
    batch_size: int = Field(8, ge=1, description="videos per forward pass")
    part_size: int = Field(256, ge=1, description="videos per Parquet part")
    gpu: bool = False
    executor: Literal["ray", "local"] = "ray"
    decode_cpus: float = Field(1.0, gt=0, description="CPUs per Ray decode task")
    overwrite: bool = False


def _parts_dir(out: str) -> str:
    return f"{out.rstrip('/')}.parts" if out.endswith(".parquet") else out.rstrip("/")


def part_url(out: str, index: int) -> str:
    return storage.join(_parts_dir(out), f"part-{index:05d}.parquet")


def _job_identity(config: InferConfig, serving: ServingModel) -> dict[str, Any]:
    loaded = serving.loaded
    return {
        "source": config.source,
        "model": loaded.name,
        "version": loaded.version,
        "model_source": loaded.source,
        "weights_sha256": serving.weights_sha256,
        "views": f"{serving.data_config.num_clips}x{serving.data_config.test_crops}",
        "top_k": config.top_k,
        "halted_token_mode": serving.mode,
        "part_size": config.part_size,
    }


def _prepare_output(config: InferConfig, job: dict[str, Any]) -> None:
    """Start over (``overwrite``), resume the same job, or refuse a different job's leftovers."""
    parts = _parts_dir(config.out)
    if config.overwrite:
        for url in (parts, config.out):
            if storage.exists(url):
                storage.remove(url, recursive=True)
    job_url = storage.join(parts, JOB_FILE)
    if storage.exists(job_url):
        previous = storage.read_json(job_url)
        if previous != job:
            changed = sorted(k for k in job if previous.get(k) != job[k])
            raise InputError(
                f"--out {config.out}: holds the parts of another job (differs in {', '.join(changed)}); pass "
                "--overwrite to start over, or another --out"
            )
        return
    if storage.exists(parts) and storage.listdir(parts):
        raise InputError(f"--out {config.out}: exists and is not an hvt infer output; pass --overwrite or another --out")
    storage.makedirs(parts)
    storage.write_json(job_url, job)


def _chunks(items: Iterable[InferInput], size: int) -> Iterator[list[InferInput]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_part(url: str, rows: list[dict[str, Any]]) -> None:
    """Write one part whole (temporary name + rename locally; one PUT on object stores)."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), buffer)
    storage.write_bytes(url, buffer.getvalue())


def _part_counts(url: str) -> tuple[list[str], float]:
    """(status of each row, GFLOPs of the ok rows) of a written part, read back from its columns."""
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=["status", "gflops"])
    statuses = table.column("status").to_pylist()
    gflops = sum(g for g, s in zip(table.column("gflops").to_pylist(), statuses, strict=True) if s == OK)
    return statuses, float(gflops)


# Scores a window of parts: gets [(part index, inputs)], yields (part index, rows in input order) as each part
# completes (in any order), so a part is written as soon as its last video is scored.
PartsScorer = Callable[[list[tuple[int, list[InferInput]]]], Iterator[tuple[int, list[dict[str, Any]]]]]


def local_parts_scorer(config: InferConfig, serving: ServingModel) -> PartsScorer:
    """Score parts in this process: decode one video after another, the model on batches (no Ray)."""
    from hvt.evaluation.evaluator import select_device

    scorer = BatchScorer(serving, select_device(config.gpu), config.top_k, config.batch_size)

    def score_parts(parts: list[tuple[int, list[InferInput]]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        for index, items in parts:
            yield index, score_decoded(scorer, [decode_input(item, serving.data_config) for item in items])

    return score_parts


def _windows(config: InferConfig) -> int:
    """Parts per window: one Ray Dataset (and one start of the model actors) serves ~4096 videos."""
    return max(1, min(16, 4096 // config.part_size))


def _eta(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_infer(
    config: InferConfig,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    parts_scorer: Callable[[InferConfig, ServingModel], PartsScorer] | None = None,
) -> dict[str, Any]:
    """Run the job ``config``; returns the summary (also written to ``_summary.json``): ``videos``, ``ok``,
    ``failures`` (and ``failures_by_status``), ``videos_per_s`` (videos computed by this run / its wall time),
    ``mean_gflops_per_video`` (over classified videos), ``wall_s``, ``parts``, ``parts_skipped``, ``out``.

    ``progress`` gets ``{done, total, videos_per_s, eta_s}`` after each part (progress is also logged).
    ``parts_scorer``: how parts are scored (default: Ray Data for ``executor="ray"``, else in-process); it gets
    windows of missing parts (up to ~4096 videos), so the model actors start once per window, not per part.
    Raises ``InputError`` (and subclasses) for a bad source, model, output or option, before any work."""
    start = time.monotonic()
    serving = load_serving_model(config.model, store=config.store, views=config.views,
                                 halted_token_mode=config.halted_token_mode)
    source = open_source(config.source, config.store)
    job = _job_identity(config, serving)
    _prepare_output(config, job)
    if parts_scorer is None:
        if config.executor == "ray":
            from hvt.serve.ray_infer import ray_parts_scorer

            parts_scorer = ray_parts_scorer
        else:
            parts_scorer = local_parts_scorer
    total = source.count()
    log.info("infer: %d videos from %s with %s (%s mode, views %s) -> %s", total, source.description,
             serving.loaded.describe(), serving.mode, job["views"], config.out)
    scorer: PartsScorer | None = None
    counts = {"videos": 0, "ok": 0, "computed": 0, "skipped": 0, "gflops": 0.0}
    failures: dict[str, int] = {}

    def account(index: int) -> None:
        statuses, gflops = _part_counts(part_url(config.out, index))
        counts["videos"] += len(statuses)
        counts["gflops"] += gflops
        for status in statuses:
            if status == OK:
                counts["ok"] += 1
            else:
                failures[status] = failures.get(status, 0) + 1
        elapsed = time.monotonic() - start
        rate = counts["computed"] / elapsed if elapsed > 0 else 0.0
        eta = (total - counts["videos"]) / rate if rate > 0 else 0.0
        log.info("infer: %d/%d videos, %.2f videos/s, ETA %s", counts["videos"], total, rate, _eta(eta))
        if progress is not None:
            progress({"done": counts["videos"], "total": total, "videos_per_s": rate, "eta_s": eta})

    def score(window: list[tuple[int, list[InferInput]]]) -> None:
        nonlocal scorer
        scorer = scorer or parts_scorer(config, serving)
        inputs = dict(window)
        for index, rows in scorer(window):
            if [r["id"] for r in rows] != [i.id for i in inputs[index]]:  # the contract: inputs = rows, in order
                raise RuntimeError(f"part {index}: {len(rows)} rows for {len(inputs[index])} inputs")
            write_part(part_url(config.out, index), rows)
            counts["computed"] += len(rows)
            account(index)

    parts = 0
    window: list[tuple[int, list[InferInput]]] = []
    for index, items in enumerate(_chunks(source, config.part_size)):
        parts += 1
        if storage.exists(part_url(config.out, index)):
            counts["skipped"] += 1
            account(index)
            continue
        window.append((index, items))
        if len(window) == _windows(config):
            score(window)
            window = []
    if window:
        score(window)
    if config.out.endswith(".parquet"):
        _combine_parts(config.out, parts)
    wall = time.monotonic() - start
    summary = {
        "out": config.out,
        "source": config.source,
        "model": serving.loaded.name,
        "version": serving.loaded.version,
        "halted_token_mode": serving.mode,
        "views": job["views"],
        "videos": counts["videos"],
        "ok": counts["ok"],
        "failures": counts["videos"] - counts["ok"],
        "failures_by_status": dict(sorted(failures.items())),
        "videos_computed": counts["computed"],
        "videos_per_s": counts["computed"] / wall if wall > 0 else 0.0,
        "mean_gflops_per_video": counts["gflops"] / counts["ok"] if counts["ok"] else 0.0,
        "wall_s": wall,
        "parts": parts,
        "parts_skipped": counts["skipped"],
    }
    storage.write_json(storage.join(_parts_dir(config.out), SUMMARY_FILE), summary)
    return summary


def _combine_parts(out: str, parts: int) -> None:
    """Write ``out`` as one Parquet file from the parts, one part in memory at a time, whole or not at all."""
    with storage.atomic_open(out, "wb") as handle, pq.ParquetWriter(handle, ROW_SCHEMA) as writer:
        for index in range(parts):
            fs, path = storage.get_fs(part_url(out, index))
            with fs.open(path, "rb") as part:
                writer.write_table(pq.read_table(part, schema=ROW_SCHEMA))


def read_rows(out: str) -> pa.Table:
    """The rows of a finished job's output (a folder of parts or one file), in input order."""
    if out.endswith(".parquet"):
        fs, path = storage.get_fs(out)
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle)
    names = [n for n in storage.listdir(out) if n.startswith("part-") and n.endswith(".parquet")]
    urls = [storage.join(out, name) for name in sorted(names)]
    tables = []
    for url in urls:
        fs, path = storage.get_fs(url)
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, schema=ROW_SCHEMA))
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
