"""Write one shard: read, probe (and maybe transcode) each planned entry, stream admitted samples into a tar
that becomes visible only when complete, then write ``<shard>.stats.json`` — the shard's completion marker.

Runs in a worker (a local process or a Ray task): everything it needs travels in a picklable
:class:`ShardTask`, and it returns the stats it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import webdataset

from hvt import storage
from hvt.ingest import reasons
from hvt.ingest.config import TranscodeOptions
from hvt.ingest.framecheck import DecodeCheck, check_training_decode
from hvt.ingest.probe import VideoInfo, probe_video
from hvt.ingest.reasons import Quarantined
from hvt.ingest.reuse import ENTRY_FIELDS, recipe, reuse_sample, shard_index_url
from hvt.ingest.segments import segment_cut
from hvt.ingest.transcode import transcode_video

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that say "this will not get better by retrying".
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def with_retries(fn: Callable[[], T], *, retries: int, what: str, base_delay: float = 0.5) -> T:
    """Call ``fn``; on a transient storage error (an ``OSError`` that is not a missing file or a permission
    problem, or a connection error / timeout / 5xx from the store's client) try again up to ``retries`` times
    with exponential back-off."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except (*_PERMANENT, storage.StoreError):
            raise
        except Exception as err:
            if not (isinstance(err, OSError) or storage.is_transient(err)) or attempt == retries:
                raise
            delay = base_delay * 2**attempt
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, err, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class ShardTask:
    version_url: str
    name: str  # "train-000003"
    split: str
    index: int
    entries: list[dict]  # planned entries (see plan.build_plan), in shard order
    min_frames: int
    full_decode: bool
    transcode: dict  # TranscodeOptions for the videos that are re-encoded
    retries: int
    policy: str = "needed"  # ShardConfig.policy: always | needed | never
    frame_checks: int = 6
    frame_tolerance: float = 1.0
    segment_tolerance: float = 1.0
    # One per entry: what an earlier version stored for it (hvt.ingest.reuse), or None. Not part of the shard's
    # identity: a hint only saves work, the shard holds the same samples with or without it.
    reuse: list[dict | None] | None = None

    @property
    def settings(self) -> dict:
        """The settings that shape what is stored for an entry (with the video's bytes and the entry's segment)."""
        return {"min_frames": self.min_frames, "full_decode": self.full_decode, "transcode": self.transcode,
                "policy": self.policy, "frame_checks": self.frame_checks, "frame_tolerance": self.frame_tolerance,
                "segment_tolerance": self.segment_tolerance}

    @property
    def plan_sha256(self) -> str:
        """Identity of what this shard should contain: a stats file with another digest is stale."""
        blob = json.dumps({"entries": self.entries, **self.settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def tar_url(self) -> str:
        return storage.join(self.version_url, f"{self.name}.tar")

    @property
    def stats_url(self) -> str:
        return storage.join(self.version_url, f"{self.name}.stats.json")


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        self._sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._sink.flush()


def _tar_writer(stream: _HashingWriter) -> webdataset.TarWriter:
    """webdataset's own writer over ``stream``: members ``<key>.<ext>`` (video bytes) and ``<key>.json`` per
    sample; reproducible bytes (no clock, no owner names); bytes in, bytes out (no encoder, nothing pickled)."""
    return webdataset.TarWriter(stream, user="", group="", mode=0o644, mtime=0.0, encoder=False)


def _read_source(url: str, retries: int) -> bytes:
    try:
        return with_retries(lambda: storage.read_bytes(url), retries=retries, what=f"reading {url}")
    except FileNotFoundError:
        raise Quarantined(reasons.MISSING, f"{url} disappeared after listing") from None
    except (OSError, storage.StoreError) as err:
        raise Quarantined(reasons.UNREADABLE, f"cannot read {url}: {err}") from None


def _check(data: bytes, info: VideoInfo, task: ShardTask, *, exact_count: bool) -> DecodeCheck:
    return check_training_decode(
        data, codec=info.codec, num_checks=task.frame_checks, tolerance=task.frame_tolerance,
        num_frames=info.num_frames if exact_count else None,
    )


def _settle(entry: dict, hint: dict | None, task: ShardTask, note: dict) -> tuple[bytes, dict, bool]:
    """Bytes and metadata of one admitted sample and whether they were reused, or :class:`Quarantined`.

    Reads the video and records its sha256 in ``note`` (the entry's line in the shard's reuse index); takes what an
    earlier version stored when ``hint`` holds for these bytes, else processes the video."""
    data = _read_source(entry["source"], task.retries)
    note["source_sha256"] = hashlib.sha256(data).hexdigest()
    reused = reuse_sample(hint, entry, note["source_sha256"])
    if isinstance(reused, Quarantined):
        note["reused"] = True
        raise reused
    if reused is not None:
        return reused[0], reused[1], True
    data, meta = _prepare_sample(data, entry, task)
    return data, meta, False


def _prepare_sample(data: bytes, entry: dict, task: ShardTask) -> tuple[bytes, dict]:
    """Bytes and metadata of one admitted sample from the video's bytes ``data``, or :class:`Quarantined`.

    The probe is the reference (shown frames, upright). A whole video is cut to its segment; a file the training
    decoder would misread or cannot decode is re-encoded (policy ``needed``), every file is (``always``) or such a
    file is quarantined (``never``). What is stored is checked against the reference once more, so the metadata
    says exactly what training will see.
    """
    info = probe_video(data, ext=entry["ext"], min_frames=task.min_frames, full_decode=task.full_decode)
    source_info = info
    cut = segment_cut(entry, info, task.segment_tolerance)
    verdict: DecodeCheck | None = None
    because: str | None = None
    if cut is not None:
        because = (f"whole video cut to its segment {cut.start:g}-{cut.end:g} s "
                   f"(frames {cut.first_frame}-{cut.end_frame - 1})")
        failure = reasons.UNTRIMMED
    elif task.policy == "always":
        because, failure = "transcode policy 'always'", reasons.TRANSCODE_FAILED
    else:
        verdict = _check(data, info, task, exact_count=task.full_decode)
        if not verdict.ok:
            because, failure = verdict.detail, str(verdict.reason)
    meta: dict[str, Any] = {}
    if because is not None:
        if task.policy == "never":
            raise Quarantined(failure, f"{because}; transcoding is off (policy 'never'): allow it to normalise the file")
        source_sha256 = hashlib.sha256(data).hexdigest()  # kept in the metadata: the stored bytes are not the source
        first, end = (cut.first_frame, cut.end_frame) if cut is not None else (0, None)
        data, _ = transcode_video(data, TranscodeOptions(**task.transcode), first_frame=first, end_frame=end)
        info = probe_video(data, ext="mp4", min_frames=1)  # the reference of what is stored
        options = TranscodeOptions(**task.transcode)
        expected = (end if end is not None else source_info.num_frames) - first
        if options.max_fps is None and task.full_decode and info.num_frames != expected:
            raise Quarantined(reasons.TRANSCODE_FAILED, f"re-encoding kept {info.num_frames} of {expected} frames")
        if info.num_frames < task.min_frames:
            raise Quarantined(reasons.TOO_SHORT, f"{info.num_frames} frames after transcoding "
                              f"(fewer than min_frames={task.min_frames})")
        verdict = _check(data, info, task, exact_count=True)
        if not verdict.ok:
            raise Quarantined(reasons.DECODER_MISMATCH, f"even after transcoding: {verdict.detail}")
        meta["source_sha256"] = source_sha256
    meta.update({name: entry[name] for name in ENTRY_FIELDS})
    meta.update(
        {
            "sha256": hashlib.sha256(data).hexdigest(),
            "container": info.container,
            "codec": info.codec,
            "fps": info.fps,
            "num_frames": info.num_frames,
            "width": info.width,
            "height": info.height,
            "duration": info.duration,
            "source_codec": source_info.codec,
            "normalised": because is not None,
            "normalised_because": because,
            "segment_frames": None if cut is None else [cut.first_frame, cut.end_frame],
            "frame_check": verdict.detail if verdict is not None else None,
        }
    )
    return data, meta


def _write_once(task: ShardTask) -> dict:
    quarantined: list[dict] = []
    index_lines: list[str] = []  # the shard's reuse index (hvt.ingest.reuse), one line per entry settled here
    counts = {"samples": 0, "processed": 0, "reused": 0, "reused_quarantined": 0}
    digest = {"sha256": None, "bytes": 0}
    settings = task.settings
    hints = task.reuse or [None] * len(task.entries)

    def admitted():
        for entry, hint in zip(task.entries, hints, strict=True):
            note = {"key": entry["key"], "recipe": recipe(settings, entry), "source": entry["source"],
                    "size": entry["size"]}
            try:
                data, meta, reused = _settle(entry, hint, task, note)
            except Quarantined as q:
                record = {k: entry[k] for k in ("line", "key", "label", "label_name", "youtube_id", "split", "source")
                          if entry.get(k) is not None}
                quarantined.append({**record, "reason": q.reason, "detail": q.detail})
                counts["reused_quarantined" if note.pop("reused", False) else "processed"] += 1
                if "source_sha256" in note:  # a verdict on the file's bytes, not a failure to read it
                    index_lines.append(json.dumps({**note, "reason": q.reason, "detail": q.detail}, sort_keys=True))
                log.info("quarantined line %s (%s): %s", entry["line"], entry["source"], q)
                continue
            counts["samples"] += 1
            counts["reused" if reused else "processed"] += 1
            yield entry["key"], meta["container"], data, meta, note

    # Stream into the tar, opened lazily: a shard whose every entry is rejected writes no tar at all.
    items = admitted()
    first = next(items, None)
    if first is not None:
        with storage.atomic_open(task.tar_url, "wb") as handle:
            writer = _HashingWriter(handle)
            tar = _tar_writer(writer)
            try:
                for key, ext, data, meta, note in _chain(first, items):
                    start = tar.tarstream.offset  # where the sample's members begin in the tar: a later reuse reads
                    tar.write({"__key__": key, ext: data, "json": json.dumps(meta, sort_keys=True).encode()})
                    index_lines.append(json.dumps(
                        {**note, "tar": f"{task.name}.tar", "start": start, "end": tar.tarstream.offset},
                        sort_keys=True))
            finally:
                tar.close()
            digest = {"sha256": writer.sha256.hexdigest(), "bytes": writer.bytes}
    by_reason: dict[str, int] = {}
    for record in quarantined:
        by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1
    samples = counts.pop("samples")
    stats = {
        "shard": f"{task.name}.tar" if samples else None,
        "name": task.name,
        "split": task.split,
        "index": task.index,
        "planned": len(task.entries),
        "samples": samples,
        "bytes": digest["bytes"],
        "sha256": digest["sha256"],
        "quarantined": quarantined,
        "by_reason": dict(sorted(by_reason.items())),
        "plan_sha256": task.plan_sha256,
        **counts,
    }
    # Before the stats file: a shard counts as finished only with its reuse index in place.
    storage.write_bytes(shard_index_url(task.version_url, task.name), "".join(t + "\n" for t in index_lines).encode())
    storage.write_json(task.stats_url, stats)
    storage.fault_point("shard:stats")
    return stats


def _chain(first, rest):
    yield first
    yield from rest


def write_shard(task: ShardTask) -> dict:
    """Write the shard and its stats file; retry the whole shard on transient storage errors."""
    return with_retries(lambda: _write_once(task), retries=task.retries, what=f"writing shard {task.tar_url}")


def finished_stats(task: ShardTask) -> dict | None:
    """The stats of a shard finished by an earlier run of the same plan, else None (write it again)."""
    fs, stats_path = storage.get_fs(task.stats_url)
    try:
        stats = json.loads(storage.retrying(lambda: fs.cat_file(stats_path), task.stats_url, "reading"))
    except FileNotFoundError:
        return None
    except storage.StoreUnavailableError:
        raise
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable stats %s: %s", task.stats_url, err)
        return None
    if stats.get("plan_sha256") != task.plan_sha256:
        return None
    if stats.get("samples"):
        try:
            tar_path = storage.get_fs(task.tar_url)[1]
            size = storage.retrying(lambda: fs.info(tar_path), task.tar_url, "checking")["size"]
        except FileNotFoundError:
            return None
        if size != stats.get("bytes"):
            return None
    return stats
