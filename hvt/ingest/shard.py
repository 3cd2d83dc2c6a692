"""``shard_dataset``: annotations + raw videos -> a versioned, resumable set of WebDataset shards.

Order of writes, each atomic: every ``<split>-NNNNNN.tar`` then its ``.stats.json`` (the completion marker
that lets a re-run skip it), then ``quarantine.jsonl``, then ``manifest.json`` (the version now exists), then
``version.json`` (when). The version id is derived from the plan, so a re-run after a crash continues the
same version, skips finished shards, and writes a byte-identical manifest.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import heapq
import json
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

from hvt import storage
from hvt.ingest.config import ShardConfig
from hvt.ingest.plan import FORMAT_VERSION, Plan, ShardSpec, build_plan
from hvt.ingest.reuse import ReuseLookup, write_version_index
from hvt.ingest.versions import MANIFEST, QUARANTINE, commit_version, version_path
from hvt.ingest.writer import ShardTask, finished_stats, with_retries, write_shard

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class ShardingError(RuntimeError):
    """Some shards could not be written; finished ones are kept and a re-run resumes."""


@dataclass
class ShardResult:
    name: str
    version: str
    path: str
    manifest_url: str
    counts: dict  # input, sharded, quarantined, by_reason
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    splits: dict = field(default_factory=dict)
    # Entries whose video was read and settled in this version (probed, checked, maybe re-encoded, or quarantined)
    # vs. taken from an earlier version (hvt.ingest.reuse); plan-time rejects are in neither.
    processed: int = 0
    reused: int = 0
    reused_quarantined: int = 0
    reused_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def shard_dataset(config: ShardConfig, *, progress: Progress | None = None) -> ShardResult:
    """Plan, write (in parallel, skipping finished shards), account and commit one dataset version.

    Importable and callable from a Prefect task: no global state, everything comes from ``config``.
    """
    store = storage.resolve_store(config.store)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="hvt-shard-") as workdir:
        plan = build_plan(config, workdir)
        path = version_path(store, config.name, plan.version)
        lookup = ReuseLookup.for_dataset(store, config.name, plan.version, workdir,
                                         retry_quarantined=config.retry_quarantined) if config.reuse else None
        try:
            tasks = (_task(plan, spec, path, config, lookup) for spec in plan.shards)
            stats, written, skipped = _write_all(tasks, len(plan.shards), config, progress)
        finally:
            if lookup is not None:
                lookup.close()
        stats.sort(key=lambda s: (s["split"], s["index"]))
        counts = _reconcile(plan, stats)
        with_retries(lambda: write_version_index(path, [s["name"] for s in stats]), retries=config.retries,
                     what=f"writing the reuse index of {path}")
        quarantine_sha = _write_quarantine(path, plan, stats, config.retries)
        manifest = _manifest(config, plan, stats, counts, quarantine_sha)
        manifest_url = storage.join(path, MANIFEST)
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        storage.fault_point("commit:quarantine")
        _write_if_changed(manifest_url, manifest_bytes, config.retries)
        storage.fault_point("commit:manifest")
        commit_version(path, config.name, plan.version, hashlib.sha256(manifest_bytes).hexdigest())
    _remove_stale_temporaries(path, before=started)
    work = {name: sum(s.get(name, 0) for s in stats) for name in ("processed", "reused", "reused_quarantined")}
    log.info(
        "dataset %s/%s: %d of %d entries sharded into %d shards, %d quarantined %s; %d videos processed, %d reused",
        config.name, plan.version, counts["sharded"], counts["input"], _num_shards(manifest),
        counts["quarantined"], counts["by_reason"], work["processed"], work["reused"] + work["reused_quarantined"],
    )
    return ShardResult(
        name=config.name,
        version=plan.version,
        path=path,
        manifest_url=manifest_url,
        counts=counts,
        shards=_num_shards(manifest),
        shards_written=written,
        shards_skipped=skipped,
        splits={k: {n: v[n] for n in ("num_shards", "samples", "bytes")} for k, v in manifest["splits"].items()},
        reused_from=lookup.versions if lookup is not None else [],
        **work,
    )


def _num_shards(manifest: dict) -> int:
    return sum(split["num_shards"] for split in manifest["splits"].values())


def _task(plan: Plan, spec: ShardSpec, path: str, config: ShardConfig, lookup: ReuseLookup | None) -> ShardTask:
    task = ShardTask(
        version_url=path,
        name=spec.name,
        split=spec.split,
        index=spec.index,
        entries=plan.read_entries(spec),
        min_frames=config.min_frames,
        full_decode=config.decode_check == "full",
        transcode=config.transcode_options.model_dump(),
        retries=config.retries,
        policy=config.policy,
        frame_checks=config.frame_checks,
        frame_tolerance=config.frame_tolerance,
        segment_tolerance=config.segment_tolerance,
    )
    if lookup is not None:
        task.reuse = lookup.hints(task.entries, task.settings, plan.source["videos"])
    return task


# ---------------------------------------------------------------- running the shard writers


def _write_all(
    tasks: Iterator[ShardTask], total: int, config: ShardConfig, progress: Progress | None
) -> tuple[list[dict], int, int]:
    stats: list[dict] = []
    failures: list[str] = []
    counter = {"skipped": 0, "written": 0}

    def report() -> None:
        if progress:
            progress(len(stats) + len(failures), total)

    def unfinished() -> Iterator[ShardTask]:
        # Lazily, so only the shards in flight hold their entries in memory.
        for task in tasks:
            done = finished_stats(task)
            if done is None:
                yield task
            else:
                stats.append(done)
                counter["skipped"] += 1
                report()

    runner = _run_ray if config.ray_address else _run_processes if config.workers > 1 else _run_inline
    unavailable: BaseException | None = None
    for task, result in runner(unfinished(), config):
        if isinstance(result, BaseException) and storage.is_transient(result) or isinstance(
            result, storage.StoreUnavailableError
        ):
            unavailable = unavailable or result
        if isinstance(result, BaseException):
            failures.append(f"{task.name}: {type(result).__name__}: {result}")
            log.error("shard %s failed: %s", task.name, result)
        else:
            stats.append(result)
            counter["written"] += 1
        report()
        if unavailable is not None:
            break  # the store is gone: every other shard would only wait out its retries too
    if counter["skipped"]:
        log.info("resumed: %d of %d shards were already finished", counter["skipped"], total)
    if unavailable is not None:
        if isinstance(unavailable, storage.StoreUnavailableError):
            raise unavailable
        raise storage.StoreUnavailableError(
            f"{len(failures)} of {total} shards could not be written to {tasks_store(config)}: the store is "
            f"unavailable ({type(unavailable).__name__}: {str(unavailable)[:160]}). Check that it is up and "
            "reachable, then re-run the same command: finished shards are kept and it resumes"
        ) from None
    if failures:
        raise ShardingError(
            f"{len(failures)} of {total} shards failed (finished shards are kept; re-run to resume): "
            + "; ".join(failures[:5])
        )
    return stats, counter["written"], counter["skipped"]


def tasks_store(config: ShardConfig) -> str:
    return storage.resolve_store(config.store)


def _run_inline(tasks: Iterable[ShardTask], config: ShardConfig) -> Iterator[tuple[ShardTask, dict | BaseException]]:
    for task in tasks:
        try:
            yield task, write_shard(task)
        except Exception as err:  # recorded and re-raised as ShardingError after the other shards
            yield task, err


def _run_processes(tasks: Iterable[ShardTask], config: ShardConfig) -> Iterator[tuple[ShardTask, dict | BaseException]]:
    # spawn, not fork: the parent may hold threads (Ray, Prefect, s3fs event loops) that fork would copy broken.
    context = multiprocessing.get_context("spawn")
    source = iter(tasks)
    limit = 2 * config.workers  # bounded: do not ship every shard's entries at once
    with cf.ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
        in_flight: dict[cf.Future, ShardTask] = {}
        while True:
            while len(in_flight) < limit:
                task = next(source, None)
                if task is None:
                    break
                in_flight[pool.submit(write_shard, task)] = task
            if not in_flight:
                return
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: in_flight[f].name):
                task = in_flight.pop(future)
                try:
                    yield task, future.result()
                except Exception as err:
                    yield task, err


def _run_ray(tasks: Iterable[ShardTask], config: ShardConfig) -> Iterator[tuple[ShardTask, dict | BaseException]]:
    import ray

    started_here = False
    if not ray.is_initialized():
        address = None if config.ray_address == "local" else config.ray_address
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=config.retries)(write_shard)
        in_flight: dict = {}
        source = iter(tasks)
        limit = max(2 * config.workers, 2)  # bounded: do not ship every shard's entries at once
        exhausted = False
        while not exhausted or in_flight:
            while not exhausted and len(in_flight) < limit:
                task = next(source, None)
                if task is None:
                    exhausted = True
                else:
                    in_flight[remote.remote(task)] = task
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                task = in_flight.pop(ref)
                try:
                    yield task, ray.get(ref)
                except Exception as err:
                    yield task, err
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------- accounting, quarantine, manifest


def _reconcile(plan: Plan, stats: list[dict]) -> dict:
    by_reason = dict(plan.counts_by_reason)
    for s in stats:
        for reason, n in s["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    sharded = sum(s["samples"] for s in stats)
    quarantined = sum(by_reason.values())
    if sharded + quarantined != plan.input_count:
        raise ShardingError(
            f"accounting does not add up: {plan.input_count} entries in, {sharded} sharded + {quarantined} "
            "quarantined; refusing to commit this version"
        )
    return {
        "input": plan.input_count,
        "sharded": sharded,
        "quarantined": quarantined,
        "by_reason": dict(sorted(by_reason.items())),
    }


def _quarantine_lines(plan: Plan, stats: list[dict]) -> Iterator[str]:
    def plan_records() -> Iterator[tuple[int, str]]:
        with open(plan.quarantine_path, encoding="utf-8") as handle:
            for text in handle:
                yield json.loads(text)["line"], text.rstrip("\n")

    def shard_records(s: dict) -> Iterator[tuple[int, str]]:
        for record in sorted(s["quarantined"], key=lambda r: r["line"]):
            yield record["line"], json.dumps(record, sort_keys=True)

    streams = [plan_records()] + [shard_records(s) for s in stats if s["quarantined"]]
    for _, text in heapq.merge(*streams, key=lambda pair: pair[0]):
        yield text + "\n"


def _write_quarantine(path: str, plan: Plan, stats: list[dict], retries: int) -> str:
    url = storage.join(path, QUARANTINE)

    def write() -> str:
        digest = hashlib.sha256()
        with storage.atomic_open(url, "wb") as handle:
            for text in _quarantine_lines(plan, stats):
                data = text.encode()
                digest.update(data)
                handle.write(data)
        return digest.hexdigest()

    return with_retries(write, retries=retries, what=f"writing {url}")


def _manifest(config: ShardConfig, plan: Plan, stats: list[dict], counts: dict, quarantine_sha: str) -> dict:
    """The version's table of contents. ``splits[<split>]["shards"]`` lists the tars (``path`` relative to the
    version folder) in order: the layout hvt.data reads. No timestamps, so a re-run writes the same bytes."""
    splits: dict[str, dict] = {}
    for s in stats:
        if not s["samples"]:
            continue  # every entry of this planned shard was quarantined: no tar was written
        entry = splits.setdefault(s["split"], {"num_shards": 0, "samples": 0, "bytes": 0, "shards": []})
        entry["shards"].append({"path": s["shard"], "samples": s["samples"], "bytes": s["bytes"], "sha256": s["sha256"]})
        entry["num_shards"] += 1
        entry["samples"] += s["samples"]
        entry["bytes"] += s["bytes"]
    return {
        "format_version": FORMAT_VERSION,
        "name": config.name,
        "version": plan.version,
        "classes": plan.classes,
        "num_classes": len(plan.classes),
        "source": plan.source,
        "parameters": plan.parameters,
        "counts": counts,
        "splits": splits,
        "quarantine": {"file": QUARANTINE, "entries": counts["quarantined"], "sha256": quarantine_sha},
        "sample": {
            "files": ["<key>.<container>", "<key>.json"],
            "json_fields": [
                "key", "label", "label_name", "youtube_id", "time_start", "time_end", "split", "source",
                "sha256", "container", "codec", "fps", "num_frames", "width", "height", "duration",
                "source_codec", "normalised", "normalised_because", "segment_frames", "frame_check",
            ],
        },
    }


def _write_if_changed(url: str, data: bytes, retries: int) -> None:
    try:
        if storage.read_bytes(url) == data:
            return
        log.warning("%s exists with other content; replacing it", url)
    except FileNotFoundError:
        pass
    with_retries(lambda: storage.write_bytes(url, data), retries=retries, what=f"writing {url}")


def _remove_stale_temporaries(path: str, *, before: float) -> None:
    """Delete ``*.tmp-*`` files that runs killed before this one left behind (never a newer one: a concurrent
    writer may own it). Readers never see them — only the manifest counts — so this is tidying, not safety."""
    fs, folder = storage.get_fs(path)
    try:
        listing = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return
    for info in listing:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if ".tmp-" not in name:
            continue
        modified = info.get("mtime") or info.get("LastModified")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or before)
        if stamp < before:
            try:
                fs.rm(info["name"])
                log.info("removed %s, left by an interrupted run", info["name"])
            except OSError as err:
                log.warning("could not remove stale temporary %s: %s", info["name"], err)
