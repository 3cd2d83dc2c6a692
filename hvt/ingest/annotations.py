"""Readers for the annotation formats of the field, all streaming :class:`AnnotationEntry` objects.

Formats:

- ``kinetics_csv``: ``label,youtube_id,time_start,time_end,split[,is_cc]`` with a header; extra columns are
  kept when useful (``file`` / ``path``: an explicit video path).
- ``arnet``: AR-Net / AdaFuse ``videofolder`` lists, ``<dir>/<ytid>_<start:06d>_<end:06d> <num_frames> <label>``
  (the folder may contain spaces), with a class list such as ``minik_classInd.txt``.
- ``s3d_ids``: one YouTube id per line (the S3D Mini-Kinetics split); labels come from joining Kinetics CSVs.
- ``mmaction``: ``<path> <label>`` per line, path relative to the videos root.

Readers never hold a whole file: they yield one entry per line. A line that cannot be parsed becomes an entry
with ``error`` set, so the planner quarantines it as ``bad_annotation`` instead of losing it.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hvt import storage

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "mkv", "webm", "avi", "mov", "m4v")
FORMATS: tuple[str, ...] = ("kinetics_csv", "arnet", "s3d_ids", "mmaction")

_YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_SEGMENT = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$")
_INT = re.compile(r"^-?\d+$")


class AnnotationError(ValueError):
    """The annotation file as a whole cannot be used (unknown format, missing columns, no labels)."""


@dataclass(slots=True)
class AnnotationEntry:
    line: int  # 1-based line (data row) number in the annotation file: the entry's identity in reports
    label_name: str | None = None
    label: int | None = None  # an explicit class index, when the format carries one
    youtube_id: str | None = None
    time_start: int | None = None
    time_end: int | None = None
    split: str | None = None
    path: str | None = None  # an explicit video path (relative to the videos root, or absolute)
    error: str | None = None  # set when the line could not be parsed

    def describe(self) -> dict:
        """The fields worth recording about this entry in quarantine.jsonl."""
        out = {"line": self.line}
        for name in ("label_name", "label", "youtube_id", "time_start", "time_end", "split", "path"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


# ---------------------------------------------------------------- class lists


def normalise_label(name: str) -> str:
    """Kinetics spells classes with spaces, some copies with underscores or quotes: compare case- and
    separator-insensitively."""
    return " ".join(name.strip().strip('"').replace("_", " ").lower().split())


def read_class_list(url: str) -> list[str]:
    """Class names, one per line, index = line number. ``<int> <name>`` lines (UCF101 ``classInd.txt``,
    1-based) are accepted and ordered by their number."""
    lines = [line.strip() for line in storage.read_text(url).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise AnnotationError(f"class list {url} is empty")
    numbered = [line.split(None, 1) for line in lines]
    if all(len(parts) == 2 and _INT.match(parts[0]) for parts in numbered):
        numbered.sort(key=lambda parts: int(parts[0]))
        return [parts[1].strip() for parts in numbered]
    return lines


def find_class_list_beside(annotations: str) -> str | None:
    """AR-Net ships ``*classInd*.txt`` next to its lists: find one in the same folder."""
    folder = posixpath.dirname(annotations) if "://" in annotations else os.path.dirname(os.path.abspath(annotations))
    try:
        names = storage.listdir(folder)
    except (OSError, storage.StoreError):
        return None
    candidates = sorted(n for n in names if "classind" in n.lower() and n.endswith(".txt"))
    return storage.join(folder, candidates[0]) if candidates else None


# ---------------------------------------------------------------- format detection


def _lines(url: str) -> Iterator[str]:
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        yield from text


def detect_format(url: str, sample: int = 50) -> str:
    """Guess the format from the first lines of ``url``."""
    head: list[str] = []
    for line in _lines(url):
        if line.strip():
            head.append(line.strip())
        if len(head) >= sample:
            break
    if not head:
        raise AnnotationError(f"annotation file {url} is empty")
    first = head[0].lower()
    if "," in first and ("youtube_id" in first or first.startswith("label,")):
        return "kinetics_csv"
    if all(_YTID.match(line) for line in head):
        return "s3d_ids"
    votes = {"arnet": 0, "mmaction": 0}
    for line in head:
        parts = line.rsplit(None, 2)
        path_ext = parts[0].rsplit(".", 1)[-1].lower() if "." in posixpath.basename(parts[0]) else ""
        if len(parts) == 3 and _INT.match(parts[1]) and _INT.match(parts[2]) and path_ext not in VIDEO_EXTENSIONS:
            votes["arnet"] += 1
        elif len(parts) >= 2 and _INT.match(parts[-1]):
            votes["mmaction"] += 1
    if max(votes.values()) * 2 > len(head):
        return max(votes, key=votes.__getitem__)
    raise AnnotationError(
        f"cannot tell the format of {url} from its first lines (e.g. {head[0]!r}); "
        f"pass format= one of {', '.join(FORMATS)}"
    )


def split_from_name(text: str) -> str | None:
    """``train``/``val``/``test`` from a path component or file name (``images/val/…``, ``val_ytid_list.txt``)."""
    for token in re.split(r"[/\\_.\-\s]+", text.lower()):
        if token in ("train", "training"):
            return "train"
        if token in ("val", "valid", "validation"):
            return "val"
        if token == "test":
            return "test"
    return None


# ---------------------------------------------------------------- readers


def _int_or_none(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    return int(float(text))  # some copies write 417.0


def read_kinetics_csv(url: str) -> Iterator[AnnotationEntry]:
    rows = csv.DictReader(_lines(url))
    fields = [f.strip() for f in rows.fieldnames or []]
    if "label" not in fields or not ({"youtube_id", "file", "path"} & set(fields)):
        raise AnnotationError(
            f"{url}: a Kinetics CSV needs a header with 'label' and 'youtube_id' (or 'file'/'path'), got {fields}"
        )
    for number, row in enumerate(rows, start=1):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        entry = AnnotationEntry(line=number, label_name=row.get("label") or None, split=row.get("split") or None)
        entry.youtube_id = row.get("youtube_id") or None
        entry.path = row.get("file") or row.get("path") or None
        try:
            entry.time_start = _int_or_none(row.get("time_start"))
            entry.time_end = _int_or_none(row.get("time_end"))
        except ValueError:
            entry.error = f"time_start/time_end are not numbers: {row.get('time_start')!r}, {row.get('time_end')!r}"
        if entry.label_name is None:
            entry.error = entry.error or "empty label"
        if entry.youtube_id is None and entry.path is None:
            entry.error = entry.error or "neither youtube_id nor file given"
        yield entry


def read_arnet_list(url: str) -> Iterator[AnnotationEntry]:
    default_split = split_from_name(posixpath.basename(url))
    for number, raw in enumerate(_lines(url), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 2)
        if len(parts) != 3 or not _INT.match(parts[1]) or not _INT.match(parts[2]):
            yield AnnotationEntry(line=number, error=f"expected '<folder> <num_frames> <label>', got {line!r}")
            continue
        folder, label = parts[0], int(parts[2])
        entry = AnnotationEntry(line=number, label=label, path=folder)
        entry.split = split_from_name(posixpath.dirname(folder)) or default_split
        match = _SEGMENT.match(posixpath.basename(folder))
        if match:
            entry.youtube_id = match["ytid"]
            entry.time_start, entry.time_end = int(match["start"]), int(match["end"])
        # The class folder doubles as a label name, useful when checking against the class list.
        class_dir = posixpath.basename(posixpath.dirname(folder))
        entry.label_name = class_dir or None
        yield entry


def read_mmaction_list(url: str) -> Iterator[AnnotationEntry]:
    default_split = split_from_name(posixpath.basename(url))
    for number, raw in enumerate(_lines(url), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not _INT.match(parts[1]):
            yield AnnotationEntry(line=number, error=f"expected '<path> <label>', got {line!r}")
            continue
        path, label = parts[0], int(parts[1])
        head = path.rsplit(None, 1)
        if len(head) == 2 and _INT.match(head[1]):
            yield AnnotationEntry(line=number, path=head[0], error=f"multi-label lines are not supported: {line!r}")
            continue
        stem = posixpath.splitext(posixpath.basename(path))[0]
        match = _SEGMENT.match(stem)
        entry = AnnotationEntry(line=number, label=label, path=path, split=default_split)
        if match:
            entry.youtube_id = match["ytid"]
            entry.time_start, entry.time_end = int(match["start"]), int(match["end"])
        yield entry


def read_s3d_ids(url: str, labels_csv: Iterable[str]) -> Iterator[AnnotationEntry]:
    """Join YouTube ids with Kinetics CSVs for label and segment. Holds one small record per CSV row
    (``ytid -> (label, start, end)``), never the videos."""
    lookup: dict[str, tuple[str, int | None, int | None]] = {}
    for csv_url in labels_csv:
        for row in read_kinetics_csv(csv_url):
            if row.youtube_id and row.label_name and row.youtube_id not in lookup:
                lookup[row.youtube_id] = (row.label_name, row.time_start, row.time_end)
    if not lookup:
        raise AnnotationError(
            f"{url} is a YouTube-id list: give labels_csv (Kinetics CSVs holding these ids) to label it"
        )
    split = split_from_name(posixpath.basename(url))
    for number, raw in enumerate(_lines(url), start=1):
        ytid = raw.strip()
        if not ytid:
            continue
        entry = AnnotationEntry(line=number, youtube_id=ytid, split=split)
        if not _YTID.match(ytid):
            entry.error = f"not a YouTube id: {ytid!r}"
        elif ytid in lookup:
            entry.label_name, entry.time_start, entry.time_end = lookup[ytid]
        yield entry


def read_annotations(url: str, fmt: str = "auto", *, labels_csv: Iterable[str] = ()) -> Iterator[AnnotationEntry]:
    """Stream the entries of ``url`` in file order (``fmt='auto'`` detects the format)."""
    fmt = detect_format(url) if fmt == "auto" else fmt
    if fmt == "kinetics_csv":
        return read_kinetics_csv(url)
    if fmt == "arnet":
        return read_arnet_list(url)
    if fmt == "mmaction":
        return read_mmaction_list(url)
    if fmt == "s3d_ids":
        return read_s3d_ids(url, list(labels_csv))
    raise AnnotationError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
