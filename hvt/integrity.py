"""Is a dataset version what its manifest says? Shards checked against the manifest's sha256, size and sample
count, and the manifest against the sha256 recorded in ``version.json`` at commit.

Training and evaluation call :func:`check_splits` before any worker starts: a damaged shard is a one-line
:class:`DataIntegrityError` naming it, or — with ``skip_bad=True``, an explicit opt-in — it is left out and
counted in the returned :class:`SplitCheck`, which the run summary, report and registry metrics carry.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

from hvt import storage

MANIFEST = "manifest.json"

VERSION_FILE = "version.json"
_CHUNK = 1 << 20


class DataIntegrityError(ValueError):
    """A dataset version's files are not what its manifest says; the message names the file and what to do."""


@dataclass(frozen=True)
class ShardProblem:
    split: str
    path: str  # relative to the version folder, as in the manifest
    problem: str
    samples: int = 0  # what the manifest says it holds

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class SplitCheck:
    """The shards of one split to read (``urls``) and the ones left out, with why."""

    split: str
    urls: list[str] = field(default_factory=list)
    samples: int = 0  # in the shards kept
    skipped: list[ShardProblem] = field(default_factory=list)

    @property
    def skipped_samples(self) -> int:
        return sum(p.samples for p in self.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "shards": len(self.urls), "samples": self.samples,
                "skipped_shards": [str(p) for p in self.skipped], "skipped_samples": self.skipped_samples}


class _Hashing:
    """Read-only file wrapper that hashes and counts what is read."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data


def shard_facts(url: str) -> tuple[str, int, int, str]:
    """(sha256, bytes, samples, tar problem or "") of one shard, read once as a stream. ``samples`` counts the
    distinct keys of its members (``<key>.<ext>``), as the reader groups them."""
    fs, path = storage.get_fs(url)

    def read() -> tuple[str, int, int, str]:
        with fs.open(path, "rb") as raw:
            reader = _Hashing(raw)
            keys: set[str] = set()
            problem = ""
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    for info in tar:
                        if info.isreg():
                            keys.add(info.name.rsplit("/", 1)[-1].split(".", 1)[0])
            except (tarfile.TarError, EOFError) as err:
                problem = f"not a readable tar ({err})"
            while reader.read(_CHUNK):  # the rest (tar padding, or bytes after a damaged header)
                pass
            return reader.sha256.hexdigest(), reader.bytes, len(keys), problem

    return storage.retrying(read, url, "verifying")


def check_shard(version_url: str, entry: dict[str, Any]) -> str:
    """What is wrong with one manifest shard entry's file (empty string: nothing)."""
    url = storage.join(version_url, entry["path"])
    try:
        sha256, size, samples, problem = shard_facts(url)
    except FileNotFoundError:
        return f"missing ({entry.get('samples')} samples lost)"
    wrong = []
    if entry.get("bytes") is not None and size != entry["bytes"]:
        wrong.append(f"{size} bytes, manifest says {entry['bytes']}")
    if entry.get("sha256") and sha256 != entry["sha256"]:
        wrong.append(f"sha256 {sha256[:12]}… is not the manifest's {entry['sha256'][:12]}…")
    if problem:
        wrong.append(problem)
    elif entry.get("samples") is not None and samples != entry["samples"]:
        wrong.append(f"{samples} samples, manifest says {entry['samples']}")
    if not wrong:
        return ""
    return f"damaged: {'; '.join(wrong)} ({entry.get('samples')} samples)"


def manifest_problems(version_url: str, manifest_bytes: bytes) -> list[str]:
    """Whether the manifest is the one committed (sha256 in ``version.json``) and adds up (shard counts and
    samples per split, sharded total)."""
    problems = []
    try:
        record = storage.read_json(storage.join(version_url, VERSION_FILE))
        recorded = record.get("manifest_sha256") if isinstance(record, dict) else None
        actual = hashlib.sha256(manifest_bytes).hexdigest()
        if recorded and recorded != actual:
            problems.append(f"{MANIFEST} sha256 {actual[:12]}… is not the {recorded[:12]}… recorded at commit in "
                            f"{VERSION_FILE}: the manifest was changed after the version was committed")
    except FileNotFoundError:
        pass
    except storage.DamagedFileError as err:
        problems.append(str(err))
    try:
        manifest = json.loads(manifest_bytes)
        splits = manifest.get("splits", {})
        total = 0
        for name, split in splits.items():
            shards = split.get("shards", [])
            listed = sum(int(s.get("samples", 0)) for s in shards)
            total += listed
            if split.get("num_shards") is not None and split["num_shards"] != len(shards):
                problems.append(f"split {name!r}: {len(shards)} shards listed, manifest says {split['num_shards']}")
            if split.get("samples") is not None and split["samples"] != listed:
                problems.append(f"split {name!r}: its shards hold {listed} samples, manifest says {split['samples']}")
        sharded = manifest.get("counts", {}).get("sharded")
        if sharded is not None and sharded != total:
            problems.append(f"splits hold {total} samples, manifest counts.sharded says {sharded}")
    except (ValueError, AttributeError, TypeError) as err:
        problems.append(f"{MANIFEST} is not a valid manifest ({err})")
    return problems


def check_splits(
    version_url: str, splits: list[str], *, skip_bad: bool = False, workers: int = 4
) -> dict[str, SplitCheck]:
    """Verify the manifest and every shard of ``splits`` of a dataset version (shards read in parallel).

    Returns the shards to read per split. Raises :class:`DataIntegrityError` naming the first problem, unless
    ``skip_bad``: then damaged shards are left out and listed (a manifest problem is always an error, as no
    shard list can be trusted then).
    """
    manifest_url = storage.join(version_url, MANIFEST)
    manifest_bytes = storage.read_bytes(manifest_url)
    problems = manifest_problems(version_url, manifest_bytes)
    if problems:
        raise DataIntegrityError(f"dataset {version_url}: {problems[0]}. Re-shard it (`hvt shard`) or run "
                                 "`hvt store check` for the full list")
    manifest = json.loads(manifest_bytes)
    checks: dict[str, SplitCheck] = {}
    jobs = []
    for split in splits:
        checks[split] = SplitCheck(split)
        for entry in manifest.get("splits", {}).get(split, {}).get("shards", []):
            jobs.append((split, entry))
    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda job: check_shard(version_url, job[1]), jobs))
    for (split, entry), problem in zip(jobs, results, strict=True):
        check = checks[split]
        if not problem:
            check.urls.append(storage.join(version_url, entry["path"]))
            check.samples += int(entry.get("samples", 0))
            continue
        if not skip_bad:
            raise DataIntegrityError(
                f"shard {storage.join(version_url, entry['path'])} ({split}) is {problem}. Run `hvt store check "
                "--repair` then the same `hvt shard` to rewrite it, or pass --skip-bad-shards to leave it out"
            )
        check.skipped.append(ShardProblem(split, entry["path"], problem, int(entry.get("samples", 0))))
    return checks
