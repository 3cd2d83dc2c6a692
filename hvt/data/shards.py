"""Where samples come from: shard URLs of a dataset version, and the samples inside one WebDataset tar.

Pure Python over file objects (no Ray), so the reading rules are testable alone. Nothing here unpickles: a sample
is the video member's raw bytes plus its JSON metadata parsed with ``json``.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from hvt import storage

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "webm", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ogv")
MANIFEST = "manifest.json"


@dataclass
class ShardSample:
    """One sample of a shard. ``read_error`` is empty when the members were read and parsed fine."""

    key: str
    video: bytes
    ext: str
    label: int
    meta: dict[str, Any]
    url: str
    read_error: str = ""


def resolve_shard_urls(source: str | list[str], split: str | None = None) -> list[str]:
    """Shard URLs for ``source``: a dataset version URL (folder with ``manifest.json``) or a list of shard URLs.

    A version URL lists ``manifest["splits"][split]["shards"]`` (each a ``{"path": ...}`` relative to the version
    folder, or a plain string).
    """
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("no shard URLs given")
        return [str(s) for s in source]
    if source.endswith(".tar"):
        return [source]
    manifest_url = storage.join(source, MANIFEST)
    if not storage.exists(manifest_url):
        raise FileNotFoundError(
            f"{manifest_url} does not exist: {source!r} is not a dataset version (a version without a manifest is "
            "unfinished). Shard the dataset first, or pass a list of shard URLs."
        )
    manifest = storage.read_json(manifest_url)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(
            f"split {split!r} not in {manifest_url}; it has: {', '.join(sorted(splits)) or 'none'}"
        )
    entries = splits[split]["shards"] if isinstance(splits[split], dict) else splits[split]
    urls = []
    for entry in entries:
        rel = entry["path"] if isinstance(entry, dict) else str(entry)
        urls.append(rel if "://" in rel or posixpath.isabs(rel) else storage.join(source, rel))
    if not urls:
        raise ValueError(f"split {split!r} of {manifest_url} has no shards")
    return urls


def read_manifest_classes(source: str) -> list[str]:
    """Class names of a dataset version, index = label."""
    manifest = storage.read_json(storage.join(source, MANIFEST))
    classes = manifest.get("classes")
    if not isinstance(classes, list):
        raise KeyError(f"{storage.join(source, MANIFEST)} has no 'classes' list")
    return [str(c) for c in classes]


def _split_name(name: str) -> tuple[str, str]:
    """``dir/abc.def.mp4`` -> (``dir/abc``, ``def.mp4``): the key is everything before the basename's first dot."""
    folder, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, ext if dot else ""


def _is_tar_metadata(name: str) -> bool:
    """WebDataset's convention for members that belong to no sample: a top-level name that begins and ends with
    ``__`` (e.g. ``__index__``). A sample key may itself begin with ``__`` (YouTube ids do, e.g. ``__NrybzYzUg``):
    ``__NrybzYzUg.mp4`` is a sample member, here as in ``webdataset.WebDataset``."""
    return "/" not in name and name.startswith("__") and name.endswith("__")


def _finish(key: str, members: dict[str, bytes], url: str) -> ShardSample:
    # the member kind is the last suffix: "clip.mp4" and "mp4" are both videos, "meta.json" is metadata
    by_kind = {ext.rsplit(".", 1)[-1].lower(): ext for ext in members}
    videos = [by_kind[kind] for kind in VIDEO_EXTENSIONS if kind in by_kind]
    video_ext = videos[0] if videos else ""
    errors = []
    if not videos:
        errors.append(f"no video member (looked for .{', .'.join(VIDEO_EXTENSIONS[:5])}, ...)")
    meta: dict[str, Any] = {}
    label = -1
    if "json" not in by_kind:
        errors.append("no .json member")
    else:
        try:
            meta = json.loads(members[by_kind["json"]].decode("utf-8"))
            label = int(meta["label"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            errors.append(f"bad .json metadata ({type(err).__name__}: {err})")
    return ShardSample(
        key=key,
        video=members.get(video_ext, b""),
        ext=video_ext,
        label=label,
        meta=meta,
        url=url,
        read_error="; ".join(errors),
    )


def iter_tar_samples(fileobj: IO[bytes], url: str) -> Iterator[ShardSample]:
    """Samples of one WebDataset tar read as a stream (members of a sample are adjacent, as the format requires).

    A tar cut inside a member (truncated upload) yields the samples before it, then one sample with ``read_error``
    set and key ``<url>#truncated``, so the loss shows up in the failure count instead of vanishing. A tar cut
    exactly between members cannot be told from a complete one; its last sample then lacks a member and is flagged.
    """
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                member_key, ext = _split_name(info.name)
                if not ext or _is_tar_metadata(info.name):
                    continue
                if member_key != key:
                    if key is not None:
                        yield _finish(key, members, url)
                    key, members = member_key, {}
                handle = tar.extractfile(info)
                members[ext] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError) as err:  # store I/O errors (OSError) propagate: Ray retries those
        log.error("shard %s is truncated or corrupt after %r: %s", url, key, err)
        yield ShardSample(
            f"{url}#truncated", b"", "", -1, {}, url, read_error=f"unreadable shard tail: {err}"
        )
        return
    if key is not None:
        yield _finish(key, members, url)


def buffer_shuffle(items: Iterable[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Shuffle a stream with a bounded buffer: each arriving item swaps out a random buffered one."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(rng.integers(buffer_size))
        buffer[slot], item = item, buffer[slot]
        yield item
    order = rng.permutation(len(buffer))
    for i in order:
        yield buffer[i]
