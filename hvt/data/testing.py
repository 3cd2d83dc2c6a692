"""Tiny shard writer for tests and benchmarks (the real one lives in ``hvt.ingest``; same on-disk format).

``write_shard`` writes ``<key>.<ext>`` + ``<key>.json`` per sample with the plain ``tarfile`` module;
``write_version`` adds a ``manifest.json`` so the folder is a dataset version ``build_clip_dataset`` accepts.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeSample:
    key: str
    video: bytes
    label: int
    ext: str = "mp4"
    meta: dict[str, Any] = field(default_factory=dict)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str, samples: Sequence[FakeSample], classes: Sequence[str] = ()) -> int:
    """Write one WebDataset tar; returns its size in bytes."""
    with tarfile.open(path, "w") as tar:
        for s in samples:
            meta = {
                "label": s.label,
                "label_name": classes[s.label] if 0 <= s.label < len(classes) else str(s.label),
            }
            meta.update({"num_frames": 0, "fps": 0.0, "width": 0, "height": 0})
            meta.update(s.meta)
            _add(tar, f"{s.key}.{s.ext}", s.video)
            _add(tar, f"{s.key}.json", json.dumps(meta).encode())
    return os.path.getsize(path)


def write_version(folder: str, splits: dict[str, list[list[FakeSample]]], classes: Sequence[str]) -> str:
    """Write ``{split}-{i:06d}.tar`` shards and ``manifest.json`` into ``folder``; returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    manifest: dict[str, Any] = {"classes": list(classes), "splits": {}}
    for split, shards in splits.items():
        entries = []
        for i, samples in enumerate(shards):
            name = f"{split}-{i:06d}.tar"
            size = write_shard(os.path.join(folder, name), samples, classes)
            entries.append({"path": name, "samples": len(samples), "bytes": size})
        manifest["splits"][split] = {"shards": entries, "samples": sum(e["samples"] for e in entries)}
    with open(os.path.join(folder, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=2)
    return folder
