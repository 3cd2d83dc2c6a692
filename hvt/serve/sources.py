"""Where the videos of an inference job come from: a folder (recursively), an ``s3://`` (any fsspec) prefix, a list
file, or a dataset split ``dataset:NAME[@VERSION]/SPLIT``.

Every source is a stream in a fixed order (folders: names sorted, one directory listed per call; list files: line
order; datasets: shard order, then member order), so part ``k`` of a job always holds the same inputs and a
resumed run can skip the parts already written. Nothing here holds the archive, or its list, in memory.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from hvt import storage
from hvt.errors import InputError

_DATASET = re.compile(r"^dataset:(?P<name>[A-Za-z0-9][\w.-]*)(?:@(?P<version>[\w.-]+))?/(?P<split>[\w.-]+)$")


class SourceError(InputError):
    """The ``SOURCE`` of an inference job cannot be listed; the message names it and what to pass instead."""


@dataclass(frozen=True)
class InferInput:
    """One input of a job: ``id`` (path relative to the source, the list line, or the dataset key), ``path`` (what
    is read: a local path or fsspec URL; ``<shard url>#<key>`` for dataset samples), and for dataset samples the
    video ``data`` (already frame-exact at shard time) or the ``read_error`` of a damaged shard member."""

    id: str
    path: str
    data: bytes | None = None
    read_error: str = ""


class InferSource:
    """A stream of :class:`InferInput` in a fixed order; ``count()`` walks it once more without keeping it."""

    description: str = ""

    def __iter__(self) -> Iterator[InferInput]:
        raise NotImplementedError

    def count(self) -> int:
        return sum(1 for _ in self)


def _hidden(name: str) -> bool:
    return name.startswith(".") or ".tmp-" in name


class FolderSource(InferSource):
    """Every regular, non-hidden file under ``root`` (local folder or fsspec prefix), depth first, names sorted.

    A file that is not a video still becomes an input (its row says why it was not classified): one row per
    file, always."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.description = f"folder {root}"
        self.fs, self.base = storage.get_fs(self.root)
        self._local = storage.is_local(self.root)

    def _url(self, path: str) -> str:
        if self._local:
            return path
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{path}"

    def _walk(self, folder: str, seen: set[str]) -> Iterator[tuple[str, str]]:
        """(path, listing error) of every file under ``folder``; a folder that cannot be listed is one entry with
        its error (its files are unknown, so it is a row rather than a silent gap). Symlinked folders are
        followed once: a link back up the tree is not a loop."""
        if self._local:
            real = os.path.realpath(folder)
            if real in seen:
                return
            seen.add(real)
        try:
            entries = sorted(self.fs.ls(folder, detail=True), key=lambda e: e["name"])  # one directory per call
        except OSError as err:
            yield folder, f"cannot list this folder ({type(err).__name__}: {err})"
            return
        self.fs.invalidate_cache(folder)  # object-store listings are cached per directory: keep none of them
        subdirs = []
        for entry in entries:
            name = entry["name"].rstrip("/")
            if _hidden(posixpath.basename(name)) or name == folder.rstrip("/"):
                continue
            linked_dir = self._local and entry.get("islink") and os.path.isdir(name)  # fsspec lists it as a file
            if entry["type"] == "directory" or linked_dir:
                subdirs.append(name)
            else:
                yield name, ""
        for sub in subdirs:
            yield from self._walk(sub, seen)

    def __iter__(self) -> Iterator[InferInput]:
        prefix = self.base.rstrip("/") + "/"
        for path, error in self._walk(self.base, set()):
            rel = path[len(prefix):] if path.startswith(prefix) else posixpath.basename(path)
            yield InferInput(id=rel, path=self._url(path), read_error=error)


class ListSource(InferSource):
    """A text file with one video path or URL a line (``#`` comments and blank lines skipped); relative paths are
    relative to the list file's folder. The id is the line as written."""

    def __init__(self, list_url: str) -> None:
        self.list_url = list_url
        self.description = f"list {list_url}"
        self.folder = posixpath.dirname(list_url)

    def __iter__(self) -> Iterator[InferInput]:
        fs, path = storage.get_fs(self.list_url)
        with fs.open(path, "rt", encoding="utf-8") as handle:  # streamed: a list of millions is never loaded whole
            for raw in handle:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                absolute = "://" in line or posixpath.isabs(line)
                yield InferInput(id=line, path=line if absolute else storage.join(self.folder, line))


class DatasetSource(InferSource):
    """The samples of split ``split`` of a committed dataset version, read shard by shard as a stream."""

    def __init__(self, store: str, name: str, version: str | None, split: str) -> None:
        from hvt.ingest.versions import resolve_dataset

        self.dataset = resolve_dataset(store, name, version)
        self.split = split
        splits = self.dataset.manifest.get("splits", {})
        if split not in splits:
            raise SourceError(
                f"dataset:{name}@{self.dataset.version}/{split}: no split {split!r} (it has: "
                f"{', '.join(sorted(splits)) or 'none'})"
            )
        self.description = f"dataset {name} {self.dataset.version} split {split}"

    def count(self) -> int:
        return self.dataset.split_samples(self.split)

    def __iter__(self) -> Iterator[InferInput]:
        from hvt.data.shards import iter_tar_samples, resolve_shard_urls

        for url in resolve_shard_urls(self.dataset.path, self.split):
            fs, path = storage.get_fs(url)
            with fs.open(path, "rb") as handle:
                for sample in iter_tar_samples(handle, url):
                    yield InferInput(
                        id=sample.key, path=f"{url}#{sample.key}", data=sample.video, read_error=sample.read_error
                    )


def open_source(text: str, store: str | None = None) -> InferSource:
    """The :class:`InferSource` for ``SOURCE`` text: ``dataset:NAME[@VERSION]/SPLIT`` (in ``store``), a folder or
    URL prefix, or a list file. Raises :class:`SourceError` (one line) for anything else."""
    text = text.strip()
    match = _DATASET.match(text)
    if match:
        return DatasetSource(storage.resolve_store(store), match["name"], match["version"], match["split"])
    if text.startswith("dataset:"):
        raise SourceError(f"SOURCE {text!r}: expected dataset:NAME[@VERSION]/SPLIT, e.g. dataset:kinetics@v2/val")
    fs, path = storage.get_fs(text)
    if fs.isdir(path):
        return FolderSource(text)
    if fs.isfile(path):
        return ListSource(text)
    if not storage.is_local(text):
        return FolderSource(text)  # an object-store prefix need not exist as a "directory" object
    raise SourceError(
        f"SOURCE {text}: no such folder or list file; pass a folder of videos, an s3:// prefix, a text file with "
        "one video path a line, or dataset:NAME[@VERSION]/SPLIT"
    )
