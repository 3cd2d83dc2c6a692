"""The deterministic sharding plan: which entry goes to which shard, decided before any video is read.

Memory stays bounded for 650k entries: entries are streamed once from the annotation file; each admitted one
is appended as a JSON line to a local spill file, and the planner keeps only flat numeric arrays (spill
offset, split, source size, three 64-bit hashes). Duplicates are found by sorting hashes, the shuffle is a
sort by ``sha256(seed, key)``, so the order does not depend on the order of the annotation file.
Entries rejected at plan time (``bad_annotation``, ``missing``, ``unsupported_container``, ``unknown_label``,
``duplicate``) are streamed to a quarantine spill file in line order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from hvt import storage
from hvt.ingest import reasons
from hvt.ingest.annotations import (
    VIDEO_EXTENSIONS,
    AnnotationEntry,
    AnnotationError,
    find_class_list_beside,
    normalise_label,
    read_annotations,
    read_class_list,
)
from hvt.ingest.config import ShardConfig
from hvt.ingest.videoindex import VideoIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_KEY = 80


@dataclass
class ShardSpec:
    name: str  # "val-000000" (the tar is name + ".tar")
    split: str
    index: int
    offsets: np.ndarray  # int64 offsets into the spill file, in shard order


@dataclass
class Plan:
    version: str
    classes: list[str]
    input_count: int
    shards: list[ShardSpec]
    spill_path: str  # JSON lines of admitted entries
    quarantine_path: str  # JSON lines of plan-time rejects, sorted by line
    plan_quarantined: int
    source: dict
    parameters: dict
    counts_by_reason: dict[str, int] = field(default_factory=dict)

    def read_entries(self, spec: ShardSpec) -> list[dict]:
        out = []
        with open(self.spill_path, "rb") as handle:
            for offset in spec.offsets.tolist():
                handle.seek(offset)
                out.append(json.loads(handle.readline()))
        return out


def sample_key(entry: AnnotationEntry, rel: str, *, keep_extension: bool = False) -> str:
    """A tar-safe, deterministic key: ``<ytid>_<start:06d>_<end:06d>`` where the entry has a YouTube id,
    else the video's path under the root without extension (with it when ``keep_extension``: another video
    differs only by its extension). Anything outside ``[A-Za-z0-9_-]`` (path separators, dots, traversal)
    becomes ``_`` and the key gets a hash of the original, keeping keys unique."""
    if entry.youtube_id:
        base = entry.youtube_id
        if entry.time_start is not None and entry.time_end is not None:
            base = f"{base}_{entry.time_start:06d}_{entry.time_end:06d}"
    else:
        base = rel if keep_extension else posixpath.splitext(rel)[0]
    safe = _UNSAFE.sub("_", base)
    if safe != base or len(safe) > _MAX_KEY or not safe:
        safe = f"{safe[: _MAX_KEY - 13]}-{hashlib.sha256(base.encode()).hexdigest()[:12]}"
    return safe


def _np(values: array, dtype: type) -> np.ndarray:
    return np.frombuffer(values, dtype) if len(values) else np.zeros(0, dtype)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _file_sha256(url: str) -> str:
    digest = hashlib.sha256()
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _LabelMap:
    """Class names and a lookup from (normalised) name or index to the class index."""

    def __init__(self, names: list[str] | None) -> None:
        self.names = names
        self._index = {normalise_label(n): i for i, n in enumerate(names or [])}

    def resolve(self, entry: AnnotationEntry) -> tuple[int, str] | str:
        """``(index, name)`` or a reason detail string."""
        if entry.label is not None:
            if self.names is None:
                return entry.label, entry.label_name or str(entry.label)
            if 0 <= entry.label < len(self.names):
                return entry.label, self.names[entry.label]
            return f"label index {entry.label} outside the class list (0..{len(self.names) - 1})"
        if entry.label_name is None:
            return "no label for this entry"
        if self.names is None:
            return f"label {entry.label_name!r} given but no class list"
        index = self._index.get(normalise_label(entry.label_name))
        if index is None:
            return f"label {entry.label_name!r} is not in the class list"
        return index, self.names[index]


def _resolve_classes(config: ShardConfig, fmt: str) -> tuple[list[str] | None, str | None]:
    """The class list and where it came from: the configured file, a classInd file beside an AR-Net list,
    else (for formats that name their labels) the sorted set of labels in the annotation file."""
    if config.class_list:
        return read_class_list(config.class_list), config.class_list
    if fmt == "arnet":
        beside = find_class_list_beside(config.annotations)
        if beside:
            return read_class_list(beside), beside
    if fmt in ("kinetics_csv", "s3d_ids"):
        names = {
            e.label_name
            for e in read_annotations(config.annotations, fmt, labels_csv=config.labels_csv)
            if e.label_name and not e.error
        }
        if not names:
            raise AnnotationError(f"{config.annotations}: no labels found; give a class list")
        return sorted(names), None
    return None, None


def _later_duplicates(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position: is its hash seen at an earlier position, and the first position with that hash."""
    n = len(hashes)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    order = np.argsort(hashes, kind="stable")  # stable: within equal hashes, file order
    ordered = hashes[order]
    repeat = np.zeros(n, bool)
    repeat[1:] = ordered[1:] == ordered[:-1]
    run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))
    first = np.empty(n, np.int64)
    first[order] = order[run_start]
    is_dup = np.zeros(n, bool)
    is_dup[order[repeat]] = True
    return is_dup, first


def _chunks(sizes: np.ndarray, max_count: int | None, max_bytes: int | None) -> Iterator[tuple[int, int]]:
    """``[start, end)`` ranges: at most ``max_count`` samples and, unless one sample alone is larger,
    at most ``max_bytes`` source bytes."""
    if max_bytes is None:
        step = max_count or len(sizes)
        for start in range(0, len(sizes), max(step, 1)):
            yield start, min(start + step, len(sizes))
        return
    start, total = 0, 0
    for i, size in enumerate(sizes.tolist()):
        full = (max_count is not None and i - start >= max_count) or (total + size > max_bytes and i > start)
        if full:
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def build_plan(config: ShardConfig, workdir: str) -> Plan:
    """Stream the annotations, resolve and label every entry, reject what cannot be sharded, and cut the
    seeded shuffle of the rest into shards. Reads no video bytes."""
    from hvt.ingest.annotations import detect_format

    fmt = detect_format(config.annotations) if config.format == "auto" else config.format
    class_names, class_source = _resolve_classes(config, fmt)
    labels = _LabelMap(class_names)
    index = VideoIndex(config.videos)

    spill_path = os.path.join(workdir, "entries.jsonl")
    quarantine_path = os.path.join(workdir, "plan-quarantine.jsonl")
    offsets, sizes, splits = array("q"), array("q"), array("q")
    key_hashes, source_hashes, shuffle_hashes, lines = array("Q"), array("Q"), array("Q"), array("q")
    split_names: list[str] = []
    by_reason: dict[str, int] = {}
    input_count = 0
    plan_digest = hashlib.sha256()

    def reject(out, entry: AnnotationEntry, reason: str, detail: str, **extra) -> None:
        by_reason[reason] = by_reason.get(reason, 0) + 1
        record = {**entry.describe(), **extra, "reason": reason, "detail": detail}
        out.write(json.dumps(record, sort_keys=True) + "\n")

    with open(spill_path, "w", encoding="utf-8") as spill, open(quarantine_path, "w", encoding="utf-8") as rejects:
        for entry in read_annotations(config.annotations, fmt, labels_csv=config.labels_csv):
            split = entry.split or config.default_split
            if config.split is not None and split != config.split:
                continue
            input_count += 1
            if entry.error:
                reject(rejects, entry, reasons.BAD_ANNOTATION, entry.error)
                continue
            rel = index.resolve(entry)
            if rel is None:
                wanted = entry.path or entry.youtube_id
                reject(rejects, entry, reasons.MISSING, f"no video for {wanted!r} under {index.root}")
                continue
            ext = posixpath.splitext(rel)[1].lstrip(".").lower()
            if ext not in VIDEO_EXTENSIONS:
                reject(rejects, entry, reasons.UNSUPPORTED_CONTAINER, f"'.{ext}' is not a video container "
                       f"we shard ({', '.join(VIDEO_EXTENSIONS)})", source=index.url(rel))
                continue
            label = labels.resolve(entry)
            if isinstance(label, str):
                reject(rejects, entry, reasons.UNKNOWN_LABEL, label, source=index.url(rel))
                continue
            key = sample_key(entry, rel, keep_extension=index.shares_stem(rel))
            record = {
                "line": entry.line,
                "key": key,
                "label": label[0],
                "label_name": label[1],
                "youtube_id": entry.youtube_id,
                "time_start": entry.time_start,
                "time_end": entry.time_end,
                "split": split,
                "source": index.url(rel),
                "size": index.sizes[rel],
                "ext": ext,
            }
            text = json.dumps(record, sort_keys=True)
            offsets.append(spill.tell())
            spill.write(text + "\n")
            plan_digest.update(text.encode() + b"\n")
            if split not in split_names:
                split_names.append(split)
            splits.append(split_names.index(split))
            sizes.append(index.sizes[rel])
            key_hashes.append(_hash64(key))
            source_hashes.append(_hash64(rel))
            shuffle_hashes.append(_hash64(f"{config.seed}\0{key}"))
            lines.append(entry.line)

    # Duplicates: a key or a source video already admitted on an earlier line.
    key_arr, src_arr = _np(key_hashes, np.uint64), _np(source_hashes, np.uint64)
    line_arr = _np(lines, np.int64)
    dup_key, first_key = _later_duplicates(key_arr)
    dup_src, first_src = _later_duplicates(src_arr)
    duplicate = dup_key | dup_src
    offset_arr = _np(offsets, np.int64)
    dup_records: list[str] = []
    if duplicate.any():
        with open(spill_path, "rb") as handle:
            for pos in np.flatnonzero(duplicate).tolist():
                handle.seek(int(offset_arr[pos]))
                rec = json.loads(handle.readline())
                what = "sample key" if dup_key[pos] else "source video"
                first_line = int(line_arr[first_key[pos] if dup_key[pos] else first_src[pos]])
                dup_records.append(
                    json.dumps(
                        {
                            **{k: rec[k] for k in ("line", "label", "label_name", "youtube_id", "split", "source")
                               if rec.get(k) is not None},
                            "key": rec["key"],
                            "reason": reasons.DUPLICATE,
                            "detail": f"same {what} as line {first_line}",
                        },
                        sort_keys=True,
                    )
                )
        by_reason[reasons.DUPLICATE] = len(dup_records)
        _merge_sorted_by_line(quarantine_path, dup_records)

    # Seeded shuffle per split, then cut into shards.
    split_arr, size_arr, shuffle_arr = _np(splits, np.int64), _np(sizes, np.int64), _np(shuffle_hashes, np.uint64)
    shards: list[ShardSpec] = []
    for split in sorted(split_names):
        members = np.flatnonzero((split_arr == split_names.index(split)) & ~duplicate)
        order = members[np.lexsort((line_arr[members], shuffle_arr[members]))]
        for i, (start, end) in enumerate(_chunks(size_arr[order], config.shard_size, config.shard_bytes)):
            shards.append(ShardSpec(name=f"{split}-{i:06d}", split=split, index=i, offsets=offset_arr[order[start:end]]))

    source = {
        "annotations": config.annotations,
        "annotations_sha256": _file_sha256(config.annotations),
        "format": fmt,
        "videos": index.root,
        "class_list": class_source,
        "labels_csv": [{"url": u, "sha256": _file_sha256(u)} for u in config.labels_csv],
    }
    parameters = config.plan_parameters()
    version = config.version or _version_id(source, parameters, class_names, plan_digest.hexdigest())
    plan_quarantined = sum(by_reason.values())
    log.info(
        "plan %s: %d entries, %d to shard in %d shards, %d rejected before reading videos",
        version, input_count, len(key_arr) - int(duplicate.sum()), len(shards), plan_quarantined,
    )
    return Plan(
        version=version,
        classes=class_names or [],
        input_count=input_count,
        shards=shards,
        spill_path=spill_path,
        quarantine_path=quarantine_path,
        plan_quarantined=plan_quarantined,
        source=source,
        parameters=parameters,
        counts_by_reason=by_reason,
    )


def _version_id(source: dict, parameters: dict, classes: list[str] | None, plan_digest: str) -> str:
    blob = json.dumps(
        {"format_version": FORMAT_VERSION, "source": source, "parameters": parameters, "classes": classes,
         "entries": plan_digest},
        sort_keys=True,
    )
    return "v-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _merge_sorted_by_line(path: str, extra: list[str]) -> None:
    """Merge JSON lines ``extra`` (sorted by line) into the line-sorted file at ``path``, streaming."""
    import heapq

    merged = path + ".merged"
    with open(path, encoding="utf-8") as base, open(merged, "w", encoding="utf-8") as out:
        for text in heapq.merge(base, (t + "\n" for t in extra), key=lambda t: json.loads(t)["line"]):
            out.write(text)
    os.replace(merged, path)
