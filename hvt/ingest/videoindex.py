"""One listing of the videos root, turned into a name -> path index that resolves annotation entries.

The root is listed once, recursively (one paginated call on S3), never once per entry: 650k entries cost one
listing, not 650k ``exists`` calls.
"""

from __future__ import annotations

import logging
import posixpath

from hvt import storage
from hvt.ingest.annotations import VIDEO_EXTENSIONS, AnnotationEntry

log = logging.getLogger(__name__)

_EXT_RANK = {ext: rank for rank, ext in enumerate(VIDEO_EXTENSIONS)}
_PARTIAL_SUFFIXES = (".part", ".tmp", ".ytdl", ".crdownload")


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, ext.lower()) if dot and stem else (name, "")


class VideoIndex:
    """Relative path -> size for every file under ``root``, and file stem -> best video path.

    A stem shared by several videos (``x.mp4`` and ``x.webm``) resolves to the most common container first
    (the order of :data:`VIDEO_EXTENSIONS`), then the shortest, then the lexically first path: deterministic.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") if "://" in root else storage.resolve_store(root)
        fs, base = storage.get_fs(self.root)
        base = base.rstrip("/")
        self.sizes: dict[str, int] = {}
        self._by_stem: dict[str, str] = {}
        self._stem_paths: dict[str, int] = {}  # path without extension -> how many videos have it
        if not fs.exists(base):
            log.warning("videos root %s does not exist: every entry will be quarantined as missing", self.root)
            return
        for path, info in fs.find(base, detail=True).items():
            if info.get("type") == "directory":
                continue
            rel = path[len(base) :].lstrip("/")
            name = posixpath.basename(rel)
            hidden = any(part.startswith(".") for part in rel.split("/"))
            if not rel or ".tmp-" in name or name.endswith(_PARTIAL_SUFFIXES):
                continue
            self.sizes[rel] = int(info.get("size") or 0)  # a hidden file is found by its explicit path only
            stem, ext = _split_ext(name)
            if ext in _EXT_RANK:
                bare = _split_ext(rel)[0]
                self._stem_paths[bare] = self._stem_paths.get(bare, 0) + 1
            if ext in _EXT_RANK and not hidden:
                current = self._by_stem.get(stem)
                if current is None or self._rank(rel) < self._rank(current):
                    self._by_stem[stem] = rel
        log.info("indexed %d files under %s", len(self.sizes), self.root)

    @staticmethod
    def _rank(rel: str) -> tuple[int, int, str]:
        return (_EXT_RANK.get(_split_ext(rel)[1], 99), len(rel), rel)

    def shares_stem(self, rel: str) -> bool:
        """True when another video under the root differs from ``rel`` only by its extension (``x.mkv``, ``x.mov``)."""
        return self._stem_paths.get(_split_ext(rel)[0], 0) > 1

    def __len__(self) -> int:
        return len(self.sizes)

    def url(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def resolve(self, entry: AnnotationEntry) -> str | None:
        """Relative path of the entry's video, or None. Tries, in order: the explicit path (exactly, then
        with leading folders dropped, then with each video extension), then the Kinetics names
        ``<ytid>_<start:06d>_<end:06d>``, ``<ytid>_<start>_<end>``, ``<ytid>``, in any subfolder."""
        if entry.path:
            found = self._resolve_path(entry.path)
            if found:
                return found
        if entry.youtube_id:
            candidates = []
            if entry.time_start is not None and entry.time_end is not None:
                candidates.append(f"{entry.youtube_id}_{entry.time_start:06d}_{entry.time_end:06d}")
                candidates.append(f"{entry.youtube_id}_{entry.time_start}_{entry.time_end}")
            candidates.append(entry.youtube_id)
            for stem in candidates:
                if stem in self._by_stem:
                    return self._by_stem[stem]
        return None

    def _resolve_path(self, path: str) -> str | None:
        path = path.replace("\\", "/").strip()
        root_path = storage.get_fs(self.root)[1].rstrip("/")
        if path.startswith(root_path + "/"):
            path = path[len(root_path) + 1 :]
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            return None  # never resolve outside the videos root
        for i in range(len(parts)):
            suffix = "/".join(parts[i:])
            if suffix in self.sizes:
                return suffix
            if _split_ext(parts[-1])[1] not in _EXT_RANK:
                for ext in VIDEO_EXTENSIONS:
                    if f"{suffix}.{ext}" in self.sizes:
                        return f"{suffix}.{ext}"
        if parts:
            stem, ext = _split_ext(parts[-1])
            found = self._by_stem.get(stem if ext in _EXT_RANK else parts[-1])
            if found and (ext not in _EXT_RANK or posixpath.basename(found) == parts[-1]):
                return found
        return None
