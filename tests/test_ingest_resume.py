"""Kill a real `shard` process mid-run (SIGKILL, workers included), re-run it: same manifest as a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    assert (version_dir / "manifest.json").read_bytes() == Path(reference.manifest_url).read_bytes()
    assert (version_dir / "quarantine.jsonl").read_bytes() == (Path(reference.path) / "quarantine.jsonl").read_bytes()
    assert not list(version_dir.glob("*.tmp-*"))  # leftovers of the killed run are tidied
    for tar in Path(reference.path).glob("*.tar"):
        assert (version_dir / tar.name).read_bytes() == tar.read_bytes(), tar.name
