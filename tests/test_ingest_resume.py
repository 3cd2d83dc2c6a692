"""Kill a real `shard` process mid-run (SIGKILL, workers included), re-run it: same manifest as a clean run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from test_ingest_helpers import REPO

from hvt.ingest import ShardConfig, TranscodeOptions, shard_dataset
from hvt.ingest.synthetic import make_synthetic_dataset


def _argv(ds, store: Path) -> list[str]:
    return [sys.executable, "-m", "hvt.commands.shard", "--annotations", ds.annotations_csv, "--videos",
            ds.videos_dir, "--store", str(store), "--name", "killme", "--shard-size", "2", "--workers", "2",
            "--transcode", "--short-side", "32", "--quiet", "--json"]


def test_sigkill_mid_run_then_resume_gives_identical_manifest(tmp_path: Path) -> None:
    ds = make_synthetic_dataset(str(tmp_path / "data"), classes=2, per_class=20, frames=24, size=(64, 64))
    reference = shard_dataset(ShardConfig(
        annotations=ds.annotations_csv, videos=ds.videos_dir, store=str(tmp_path / "clean"), name="killme",
        shard_size=2, transcode=TranscodeOptions(short_side=32)))
    total = reference.shards
    assert total == 20

    store = tmp_path / "crashed"
    version_dir = store / "datasets" / "killme" / reference.version
    proc = subprocess.Popen(_argv(ds, store), cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(version_dir.glob("*.stats.json"))) >= 3:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, like a lost node
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    finished = len(list(version_dir.glob("*.stats.json")))
    assert 3 <= finished < total, finished
    assert not (version_dir / "manifest.json").exists()  # the version does not exist yet

    rerun = subprocess.run(_argv(ds, store), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    out = json.loads(rerun.stdout)
    assert out["version"] == reference.version
    assert out["shards_skipped"] >= finished and out["shards_written"] == total - out["shards_skipped"]
    # The same dataset: every shard with the same samples, labels and metadata, listed in the manifest with the
    # sha256 and size of the tar that is really there. Not byte-identical tars: libx264 re-encodes of the same
    # frames differ now and then between runs and processes (seen here in Nov 2026, cause not yet found).
    resumed, clean = _manifest_without_digests(version_dir / "manifest.json"), _manifest_without_digests(
        Path(reference.manifest_url))
    assert resumed == clean
    assert (version_dir / "quarantine.jsonl").read_bytes() == (Path(reference.path) / "quarantine.jsonl").read_bytes()
    assert not list(version_dir.glob("*.tmp-*"))  # leftovers of the killed run are tidied
    manifest = json.loads((version_dir / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            tar = version_dir / shard["path"]
            assert hashlib.sha256(tar.read_bytes()).hexdigest() == shard["sha256"], tar.name
            assert _samples(tar) == _samples(Path(reference.path) / shard["path"]), tar.name


def _manifest_without_digests(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    for split in manifest["splits"].values():
        split.pop("bytes", None)
        for shard in split["shards"]:
            shard.pop("sha256", None)
            shard.pop("bytes", None)
    return manifest


def _samples(tar_path: Path) -> list[dict]:
    """Each sample's metadata, without what depends on the re-encoded bytes."""
    with tarfile.open(tar_path) as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    return [{k: v for k, v in meta.items() if k != "sha256"} for meta in metas]
