"""Incremental ingest: a new version of a dataset reuses what its earlier versions already stored.

Without it, annotations that add a day's clips give a new plan and every video is probed, frame-checked and
re-encoded again. With it, only what is new or changed is processed:

* **What identifies a stored sample.** Its *recipe* (every setting that shapes the stored bytes and metadata:
  transcode policy and options, decode check, frame checks and tolerances, min_frames, the container extension, and
  the segment times of a whole video that may be cut to them) plus the source file's sha256. Everything else in a
  sample's metadata (key, label, split, source URL, ...) comes from the annotation row and is re-applied.
* **What each shard writer records.** ``<shard>.reuse.jsonl`` beside its tar, one line per entry it settled after
  reading the video: recipe, source sha256, path, size and either the byte range of the sample's members in the tar
  or the quarantine verdict. The commit concatenates them, in shard order, into the version's ``reuse-index.jsonl``.
* **How a later run finds them.** The indexes of the newest :data:`EARLIER_VERSIONS` indexed versions of the same
  name are streamed (one read per version, no listing of shards) into a SQLite table in the run's scratch folder
  keyed by (video path under the videos root, size, recipe): memory stays bounded however large the dataset.
  Each planned entry that finds a row carries it as a *hint* to its shard writer.
* **When a hint is trusted.** The writer still reads the video; only when its sha256 is the recorded one does it take
  the sample from a ranged read of the earlier tar (its bytes checked against the sha256 in its metadata) or repeat
  the quarantine verdict. A hint that does not hold (file changed, earlier shard gone or damaged) is dropped and the
  entry processed as new: reuse changes what a version costs, never what it holds.

The reused bytes are copied into the new version's own tars, so removing an earlier version never breaks a later one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import tarfile

from hvt import storage
from hvt.ingest.plan import FORMAT_VERSION
from hvt.ingest.reasons import Quarantined
from hvt.ingest.segments import may_cut

log = logging.getLogger(__name__)

INDEX = "reuse-index.jsonl"
SHARD_INDEX_SUFFIX = ".reuse.jsonl"
EARLIER_VERSIONS = 3  # the newest version holds every sample it kept; older ones only bring back dropped rows
# Bump when a change to probing, checking or transcoding makes the same settings store something else: earlier
# versions' samples then stop matching and are processed again.
RECIPE_VERSION = 1
# Metadata fields that come from the annotation row, not from the video: a reused sample takes this row's.
ENTRY_FIELDS = ("key", "label", "label_name", "youtube_id", "time_start", "time_end", "split", "source")


def recipe(settings: dict, entry: dict) -> str:
    """Digest of everything besides the source bytes that decides what is stored for ``entry``.

    ``settings``: the shard task's output-shaping settings (``ShardTask.settings``); ``entry``: a planned entry.
    """
    segment = [entry["youtube_id"], entry["time_start"], entry["time_end"]] if may_cut(entry) else None
    blob = json.dumps({"recipe_version": RECIPE_VERSION, "format_version": FORMAT_VERSION, "settings": settings,
                       "ext": entry["ext"], "segment": segment}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def relative_source(source: str, videos_root: str) -> str:
    """The video's path under its videos root: what stays the same when the root moves (local -> s3://)."""
    root = videos_root.rstrip("/") + "/"
    return source[len(root):] if source.startswith(root) else source


def shard_index_url(version_url: str, shard_name: str) -> str:
    return storage.join(version_url, shard_name + SHARD_INDEX_SUFFIX)


# ---------------------------------------------------------------- the writer's side


def reuse_sample(hint: dict | None, entry: dict, source_sha256: str) -> tuple[bytes, dict] | Quarantined | None:
    """What an earlier version settled for this entry, when ``hint`` holds for the file read now.

    Returns the stored bytes and metadata (this row's fields applied), the earlier quarantine verdict, or None:
    process the entry as new (no hint, another file, or the earlier shard unreadable or not matching its record).
    """
    if hint is None or hint["source_sha256"] != source_sha256:
        return None
    if "reason" in hint:
        return Quarantined(hint["reason"], hint["detail"])
    url = hint["tar"]
    try:
        fs, path = storage.get_fs(url)
        chunk = storage.retrying(lambda: fs.cat_file(path, start=hint["start"], end=hint["end"]), url, "reading")
        media, ext, meta = _sample_members(chunk)
    except (OSError, ValueError, KeyError, tarfile.TarError) as err:
        log.warning("cannot reuse %s from %s (%s: %s); processing it again", entry["key"], url,
                    type(err).__name__, err)
        return None
    if ext != meta.get("container") or hashlib.sha256(media).hexdigest() != meta.get("sha256"):
        log.warning("cannot reuse %s: its bytes in %s do not match their metadata; processing it again",
                    entry["key"], url)
        return None
    meta.update({name: entry[name] for name in ENTRY_FIELDS})
    return media, meta


def _sample_members(chunk: bytes) -> tuple[bytes, str, dict]:
    """The video bytes, their extension and the parsed metadata of one sample's tar members."""
    media, ext, meta = None, "", None
    with tarfile.open(fileobj=io.BytesIO(chunk), mode="r:") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            if handle is None:
                continue
            kind = info.name.partition(".")[2]  # keys hold no dots: "<key>.json", "<key>.mp4"
            if kind == "json":
                meta = json.loads(handle.read())
            else:
                media, ext = handle.read(), kind
    if media is None or not isinstance(meta, dict):
        raise ValueError("the byte range does not hold a video and its metadata")
    return media, ext, meta


# ---------------------------------------------------------------- the commit


def write_version_index(version_url: str, shard_names: list[str]) -> int:
    """Concatenate the shards' indexes into the version's ``reuse-index.jsonl`` (streamed); returns its lines.

    A shard finished by a run before incremental ingest has no index: its samples are simply not reusable."""
    lines = 0
    with storage.atomic_open(storage.join(version_url, INDEX), "wb") as out:
        for name in shard_names:
            url = shard_index_url(version_url, name)
            try:
                data = storage.read_bytes(url)
            except FileNotFoundError:
                log.info("%s has no reuse index (written before incremental ingest)", name)
                continue
            out.write(data)
            lines += data.count(b"\n")
    return lines


# ---------------------------------------------------------------- the planner's side


class ReuseLookup:
    """Earlier versions' index rows, keyed by (video path under the root, size, recipe), in a local SQLite file."""

    def __init__(self, workdir: str, *, retry_quarantined: bool = False) -> None:
        self._db = sqlite3.connect(os.path.join(workdir, "reuse.sqlite"))
        self._db.execute("CREATE TABLE rows (rel TEXT, size INTEGER, recipe TEXT, hint TEXT, "
                         "PRIMARY KEY (rel, size, recipe)) WITHOUT ROWID")
        self.retry_quarantined = retry_quarantined
        self.versions: list[str] = []  # the versions whose indexes were loaded, newest first

    @classmethod
    def for_dataset(cls, store: str, name: str, current: str, workdir: str, *,
                    retry_quarantined: bool = False) -> ReuseLookup:
        """Load the newest indexed versions of dataset ``name`` (other than ``current``, the one being written)."""
        from hvt.ingest.versions import list_dataset_versions

        lookup = cls(workdir, retry_quarantined=retry_quarantined)
        for earlier in reversed(list_dataset_versions(store, name)):
            if len(lookup.versions) == EARLIER_VERSIONS:
                break
            if earlier.version != current and lookup.load(earlier.path):
                lookup.versions.append(earlier.version)
        if lookup.versions:
            log.info("reusing samples of %s %s", name, ", ".join(lookup.versions))
        return lookup

    def load(self, version_url: str) -> bool:
        """Add one version's index (rows already present, from a newer version, win). False when it has none."""
        try:
            root = storage.read_json(storage.join(version_url, "manifest.json"))["source"]["videos"]
            self._load_index(version_url, root)
        except FileNotFoundError:
            log.info("%s has no %s (written before incremental ingest): nothing to reuse from it", version_url, INDEX)
            return False
        except (storage.DamagedFileError, KeyError, TypeError, ValueError) as err:
            log.warning("not reusing %s: %s", version_url, err)
            return False
        return True

    def _load_index(self, version_url: str, root: str) -> None:
        url = storage.join(version_url, INDEX)
        fs, path = storage.get_fs(url)
        batch: list[tuple[str, int, str, str]] = []
        with fs.open(path, "rb") as handle:
            for line in handle:
                row = json.loads(line)
                if "reason" in row and self.retry_quarantined:
                    continue
                if "tar" in row:
                    row["tar"] = storage.join(version_url, row["tar"])
                batch.append((relative_source(row["source"], root), row["size"], row["recipe"], json.dumps(row)))
                if len(batch) == 10_000:
                    self._insert(batch)
                    batch = []
        self._insert(batch)
        self._db.commit()

    def _insert(self, batch: list[tuple[str, int, str, str]]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?)", batch)

    def hints(self, entries: list[dict], settings: dict, videos_root: str) -> list[dict | None]:
        """For each planned entry, what an earlier version recorded for the same path, size and recipe (or None)."""
        out: list[dict | None] = []
        for entry in entries:
            found = self._db.execute(
                "SELECT hint FROM rows WHERE rel = ? AND size = ? AND recipe = ?",
                (relative_source(entry["source"], videos_root), entry["size"], recipe(settings, entry)),
            ).fetchone()
            out.append(json.loads(found[0]) if found else None)
        return out

    def close(self) -> None:
        self._db.close()
