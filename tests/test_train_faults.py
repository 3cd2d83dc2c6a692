"""Faults: a killed driver's re-run resumes from the last (end-of-epoch) checkpoint and reproduces, epoch for
epoch, the metrics of an unbroken run of the same command; with mid-epoch checkpoints (``--checkpoint-every``) a
Ray Train worker killed between two of them, or stopped by SIGTERM (a spot notice), resumes at the checkpoint's
step and reproduces them too; a tampered registry checkpoint is refused by the CLI. (A worker lost with only
end-of-epoch checkpoints: tests/test_train_retries.py.) One unbroken run is the reference for all of them.

Reproducibility bound: exact. Every epoch's train loss / CE / ponder / motion / GFLOPs, val top-1 / top-5 and
counts of a killed-and-resumed run equal the unbroken run's bit for bit, and so do the epochs before the kill
(the same command run twice). What makes that possible: shard order, within-shard shuffle and each clip's
augmentation are functions of (seed, epoch, sample key); Ray Data keeps input order (preserve_order) so
``streaming_split`` hands every worker the same rows; each rank's RNG state is restored from the checkpoint.
Only timing figures (clips/s, data-wait share, TFLOP/s, MFU) may differ.

Training runs as `hvt train` in a subprocess (its own local Ray), so the test process never starts Ray and can
kill exactly the processes it started, by PID. The evidence of resuming comes from the checkpoints themselves:
every checkpoint records its epoch and ``attempt_start_epoch`` (where the attempt that wrote it began).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hvt import registry
from hvt.config import ModelSpec, OptimConfig, RuntimeSpec, ScalingSpec, TrainConfig
from hvt.data import DataConfig

EPOCHS = 2
MODEL = "haltingvt-nano-g05-b10"


# ------------------------------------------------------------------ helpers


def _tiny_config(store: str) -> TrainConfig:
    return TrainConfig(
        store=store,
        dataset_name="synth",
        model=ModelSpec(name=MODEL),
        data=DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32,
                        crop_size=32, randaugment=True, static_clips=True, decode_cpus=0.5),
        optim=OptimConfig(epochs=EPOCHS, warmup_epochs=1, batch_size=1, lr=1e-3),
        scaling=ScalingSpec(num_workers=2, cpus_per_worker=0.5, max_failures=2, keep_checkpoints=EPOCHS + 2),
        runtime=RuntimeSpec(log_every_steps=1),
    )


# Samples whose bytes no decoder reads, slipped into the committed version (as a shard written by an older or
# broken tool would hold them): every run below takes the trainer's and the validator's decode-failure paths.
UNDECODABLE = {"train": 2, "val": 1}


def _add_undecodable_shard(version_dir: Path, split: str, count: int) -> None:
    """Append a shard of ``count`` undecodable samples to ``split`` and re-commit the manifest (sha256s updated)."""
    import hashlib

    from hvt.data.testing import FakeSample, write_shard

    manifest = json.loads((version_dir / "manifest.json").read_text())
    entries = manifest["splits"][split]["shards"]
    name = f"{split}-{len(entries):06d}.tar"
    samples = [FakeSample(f"undecodable{i}", b"\x00\x00\x00\x18ftypmp42 not a video" * (i + 1), i % 3)
               for i in range(count)]
    size = write_shard(str(version_dir / name), samples, manifest["classes"])
    entries.append({"path": name, "samples": count, "bytes": size,
                    "sha256": hashlib.sha256((version_dir / name).read_bytes()).hexdigest()})
    manifest["splits"][split].update(num_shards=len(entries), samples=manifest["splits"][split]["samples"] + count,
                                     bytes=manifest["splits"][split].get("bytes", 0) + size)
    manifest["counts"]["sharded"] += count
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (version_dir / "manifest.json").write_bytes(data)
    record = json.loads((version_dir / "version.json").read_text())
    record["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (version_dir / "version.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def dataset_store(tmp_path_factory) -> tuple[str, str, dict[str, int]]:
    """(store, version, good samples per split) of the synthetic set plus the UNDECODABLE samples."""
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    root = tmp_path_factory.mktemp("faults")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=6, seed=5, frames=16, size=(64, 64))
    store = str(root / "store")
    result = shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=store,
                                       name="synth"))
    manifest = json.loads((Path(result.path) / "manifest.json").read_text())
    good = {split: manifest["splits"][split]["samples"] for split in UNDECODABLE}
    for split, count in UNDECODABLE.items():
        _add_undecodable_shard(Path(result.path), split, count)
    return store, result.version, good


def _prepare_run(tmp_path: Path, dataset_store: tuple[str, str], name: str,
                 configure: Callable[[TrainConfig], TrainConfig] | None = None) -> tuple[list[str], Path]:
    """`hvt train` command line for a fresh store (the dataset copied in) and the run folder it will use;
    ``configure`` changes the tiny config first."""
    import shutil

    source, version, _ = dataset_store
    store = tmp_path / "store"
    shutil.copytree(source, store)
    cfg = _tiny_config(str(store))
    cfg = (configure(cfg) if configure else cfg).model_copy(update={"run_name": name})
    config_path = tmp_path / "train.json"
    config_path.write_text(cfg.model_dump_json())
    command = [sys.executable, "-m", "hvt.cli", "train", "--config", str(config_path), "--no-register", "--json"]
    return command, store / "runs" / cfg.resolved_run_name(version)


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """Run ``command``; its log (stderr) goes to ``log``, its stdout (the --json summary) beside it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    return subprocess.Popen(command, stdout=log.with_suffix(".summary.json").open("w"), stderr=log.open("w"), env=env)


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after "(comm)"
    return parents


def _descendants(root: int) -> list[int]:
    parents = _parent_pids()
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _registered_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoint folders the run's checkpoint manager has committed (what a restart can resume from)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return []
    try:
        return [name for name in os.listdir(run_dir)
                if name.startswith("checkpoint_") and name in snapshot.read_text()]
    except (OSError, ValueError):
        return []


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _registered_checkpoints(run_dir):
        if proc.poll() is not None:
            pytest.fail(f"training exited (rc {proc.returncode}) before its first checkpoint:\n{_tail(log)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint in {run_dir} after {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(0.5)


def _checkpoint_states(run_dir: Path) -> list[dict]:
    """(epoch, attempt_start_epoch, mtime) of every committed checkpoint, oldest first."""
    states = []
    for name in _registered_checkpoints(run_dir):
        path = run_dir / name / "train_state.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        states.append({"epoch": int(state["epoch"]), "attempt_start_epoch": int(state["attempt_start_epoch"]),
                       "mtime": path.stat().st_mtime})
    return sorted(states, key=lambda s: s["mtime"])


TIMING_METRICS = {"train_clips_per_s", "train_data_wait_share", "train_tflops_per_s", "train_mfu",
                  "attempt_start_epoch"}


def _epoch_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """Every committed end-of-epoch checkpoint's reported metrics, by epoch, without the timing figures."""
    out = {}
    for name in _registered_checkpoints(run_dir):
        state = torch.load(run_dir / name / "train_state.pt", map_location="cpu", weights_only=True)
        if not state.get("epoch_progress"):  # mid-epoch checkpoints report no epoch figures
            out[int(state["epoch"])] = {k: v for k, v in state["metrics"].items() if k not in TIMING_METRICS}
    return out


def _assert_reproduces(run_dir: Path, unbroken: dict[int, dict[str, float]], epochs: int = EPOCHS) -> None:
    got = _epoch_metrics(run_dir)
    assert sorted(got) == sorted(unbroken) == list(range(epochs))
    for epoch in range(epochs):
        diff = {k: (got[epoch].get(k), v) for k, v in unbroken[epoch].items() if got[epoch].get(k) != v}
        assert not diff, f"epoch {epoch} differs from the unbroken run (got, unbroken): {diff}"


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"training did not finish within {timeout:.0f}s:\n{_tail(log)}")
    assert proc.returncode == 0, _tail(log)
    # Ray's own processes may print to the same stdout: the summary is the block from a "{" line to a "}" line
    text = log.with_suffix(".summary.json").read_text(errors="replace")
    start = re.search(r"^\{$", text, re.MULTILINE)
    assert start, f"no JSON summary on stdout:\n{text[-2000:]}"
    end = text.index("\n}\n", start.start())
    return json.loads(text[start.start():end + 3])


def _reap(pids: list[int], grace: float = 30.0) -> None:
    """Wait for processes this test started (via the killed driver) to exit; SIGKILL any left after ``grace``."""
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ mid-epoch checkpoints
# Batches of one clip make 7 optimiser steps per epoch on each of the 2 workers (14 training samples); with a
# checkpoint every MID_EVERY = 2 steps, epoch 1 (global steps 8-14) checkpoints at steps 8, 10 and 12, then at
# its end. The reference is the same run without mid-epoch checkpoints (`--checkpoint-every` is not part of
# what a run computes, nor of its name).

MID_EVERY = 2


def _checkpoint_every(every: int) -> Callable[[TrainConfig], TrainConfig]:
    def configure(cfg: TrainConfig) -> TrainConfig:
        return cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"checkpoint_every_steps": every})})

    return configure


def _committed_states(run_dir: Path) -> list[dict]:
    """Every committed checkpoint as (name, epoch, step, attempt_start_step, mid), oldest step first. Ray deletes
    surplus mid-epoch checkpoints as new ones come: one that vanishes while being read is left out."""
    states = []
    for name in _registered_checkpoints(run_dir):
        try:
            state = torch.load(run_dir / name / "train_state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError):
            continue
        states.append({"name": name, "epoch": int(state["epoch"]), "step": int(state["step"]),
                       "attempt_start_step": int(state["attempt_start_step"]),
                       "mid": bool(state.get("epoch_progress"))})
    return sorted(states, key=lambda s: (s["attempt_start_step"], s["step"]))


def _train_workers(proc: subprocess.Popen) -> list[int]:
    return [pid for pid in _descendants(proc.pid) if "RayTrainWorker" in _cmdline(pid)]


def _settled_snapshot(run_dir: Path, quiet: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until the checkpoint manager's snapshot has not changed for ``quiet`` seconds (a report the controller
    was registering when the workers froze is then in it)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        text = snapshot.read_text() if snapshot.exists() else ""
        if text != last:
            last, since = text, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)
    pytest.fail(f"the checkpoint snapshot of {run_dir} kept changing for {timeout:.0f}s")


def _wait_for_mid_checkpoint(run_dir: Path, proc: subprocess.Popen, log: Path, epoch: int, after_step: int,
                             timeout: float) -> dict:
    """The first committed mid-epoch checkpoint of ``epoch`` past global step ``after_step``."""
    deadline = time.monotonic() + timeout
    while True:
        states = _committed_states(run_dir)
        found = [s for s in states if s["mid"] and s["epoch"] == epoch and s["step"] > after_step]
        if found:
            return found[0]
        if any(not s["mid"] and s["epoch"] >= epoch for s in states):
            pytest.fail(f"epoch {epoch} ended before a mid-epoch checkpoint past step {after_step}: {states}")
        if proc.poll() is not None:
            pytest.fail(f"training exited (rc {proc.returncode}) before a mid-epoch checkpoint:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no mid-epoch checkpoint of epoch {epoch} in {run_dir} after {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(0.2)


def _freeze_between_mid_checkpoints(run_dir: Path, proc: subprocess.Popen, log: Path, epoch: int,
                                    timeout: float) -> tuple[list[int], dict]:
    """Stop (SIGSTOP) every training worker at a moment when the newest committed checkpoint is a mid-epoch one
    of ``epoch``: the workers are then between two mid-epoch checkpoints. Returns (the stopped workers, that
    checkpoint). The caller kills one and continues the others."""
    after = -1
    while True:
        seen = _wait_for_mid_checkpoint(run_dir, proc, log, epoch, after, timeout)
        workers = _train_workers(proc)
        assert workers, f"no RayTrainWorker process under the driver:\n{_tail(log)}"
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        _settled_snapshot(run_dir)
        newest = _committed_states(run_dir)[-1]
        if newest["mid"]:
            return workers, newest
        # the epoch's end got committed first: nothing left to test in this epoch, so this run cannot tell
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        after = seen["step"]


def _resumed_attempt(run_dir: Path) -> dict:
    """The committed end-of-epoch checkpoint of the attempt that started last (after the fault)."""
    resumed = [s for s in _committed_states(run_dir) if s["attempt_start_step"] > 0 and not s["mid"]]
    assert resumed, f"no checkpoint came from a resumed attempt: {_committed_states(run_dir)}"
    return resumed[-1]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, dataset_store) -> dict[int, dict[str, float]]:
    """Per-epoch metrics of the same command run to the end without faults, checkpointed only at epoch ends."""
    tmp_path = tmp_path_factory.mktemp("unbroken")
    command, run_dir = _prepare_run(tmp_path, dataset_store, "unbroken")
    log = tmp_path / "train.log"
    _finish(_start(command, log), log, timeout=420)
    metrics = _epoch_metrics(run_dir)
    assert sorted(metrics) == list(range(EPOCHS)), _tail(log)
    assert not any(s["mid"] for s in _committed_states(run_dir))
    # every epoch counts each undecodable sample once, over both workers, and trains on every good one
    _, _, good = dataset_store
    for epoch, m in metrics.items():
        assert (m["train_decode_failures"], m["train_clips"]) == (UNDECODABLE["train"], good["train"]), epoch
        assert (m["val_decode_failures"], m["val_clips"]) == (UNDECODABLE["val"], good["val"]), epoch
    return metrics


# ------------------------------------------------------------------ (a) the driver dies


@pytest.mark.integration
@pytest.mark.timeout(780)
def test_killed_driver_rerun_resumes_instead_of_restarting(tmp_path, dataset_store, unbroken):
    """The driver is killed (SIGKILL) while its workers are stopped after the epoch-0 checkpoint, so the kill
    lands between two checkpoints whatever the machine's speed; the same command re-run continues the run."""
    command, run_dir = _prepare_run(tmp_path, dataset_store, "driver-kill")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _start(command, first_log)
    workers: list[int] = []
    try:
        _wait_for_checkpoint(run_dir, first, first_log, timeout=200)
        workers = _train_workers(first)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        _settled_snapshot(run_dir)
        started_by_first = _descendants(first.pid)  # its local Ray: GCS, raylet, workers
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        for pid in workers:  # stopped: they would never see their raylet go
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    _reap(started_by_first)
    before = _checkpoint_states(run_dir)
    assert before and before[-1]["epoch"] < EPOCHS - 1, f"killed too late to test resuming: {before}"
    killed_at = time.time()

    second = _start(command, second_log)  # the same command, as a retried flow run would issue it
    summary = _finish(second, second_log, timeout=300)
    after = [s for s in _checkpoint_states(run_dir) if s["mtime"] > killed_at]
    assert after, f"the re-run committed no checkpoint:\n{_tail(second_log)}"
    assert after[0]["epoch"] == before[-1]["epoch"] + 1, f"re-run did not continue the run: {before} -> {after}"
    assert all(s["attempt_start_epoch"] == before[-1]["epoch"] + 1 for s in after)
    assert [s["epoch"] for s in before + after] == list(range(EPOCHS))
    assert "resumed from epoch" in second_log.read_text(errors="replace")
    assert summary["run"] == run_dir.name
    _assert_reproduces(run_dir, unbroken)


# ------------------------------------------------------------------ (b) a worker dies between mid-epoch checkpoints


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_worker_killed_between_mid_epoch_checkpoints_resumes_at_the_step(tmp_path, dataset_store, unbroken):
    command, run_dir = _prepare_run(tmp_path, dataset_store, "mid-kill", _checkpoint_every(MID_EVERY))
    log = tmp_path / "train.log"
    steps_per_epoch = int(unbroken[0]["step"])
    proc = _start(command, log)
    workers: list[int] = []
    try:
        workers, newest = _freeze_between_mid_checkpoints(run_dir, proc, log, epoch=1, timeout=300)
        os.kill(workers[0], signal.SIGKILL)
        for pid in workers[1:]:
            os.kill(pid, signal.SIGCONT)
        _finish(proc, log, timeout=300)
    finally:
        for pid in workers[1:]:
            if _alive(pid):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    assert newest["step"] % MID_EVERY == 0 and newest["step"] % steps_per_epoch != 0, newest
    resumed = _resumed_attempt(run_dir)
    # it resumed at the step of the newest checkpoint: inside epoch 1, not at its start (the epoch-0 checkpoint,
    # the best by val top-1, was not taken either)
    assert resumed["attempt_start_step"] == newest["step"], (newest, resumed)
    print(f"killed after the checkpoint of step {newest['step']}, resumed at step {resumed['attempt_start_step']}")
    into = newest["step"] - steps_per_epoch
    assert f"resumed from epoch 1, {into} steps into it (step {newest['step']})" in log.read_text(errors="replace")
    _assert_reproduces(run_dir, unbroken)


_STEP_LINE = re.compile(r"RayTrainWorker pid=(\d+)\D.*?epoch (\d+) step (\d+):")


def _settled_log(log: Path, quiet: float = 3.0, timeout: float = 30.0) -> str:
    """The driver's log once it has not grown for ``quiet`` seconds (frozen workers' last lines have arrived)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = log.stat().st_size
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return log.read_text(errors="replace")
        time.sleep(0.2)
    pytest.fail(f"the log {log} kept growing for {timeout:.0f}s with the workers stopped")


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_worker_stopped_by_sigterm_loses_at_most_n_steps(tmp_path, dataset_store, unbroken):
    """A spot notice: SIGTERM to a training worker mid-epoch. The run resumes from a step at most MID_EVERY
    optimiser steps behind the step the workers had reached when the signal came (rank 0 logs every step; the
    workers are stopped for the moment of the signal so that this step can be read off the log)."""
    command, run_dir = _prepare_run(tmp_path, dataset_store, "mid-sigterm", _checkpoint_every(MID_EVERY))
    log = tmp_path / "train.log"
    steps_per_epoch = int(unbroken[0]["step"])
    proc = _start(command, log)
    workers: list[int] = []
    try:
        _wait_for_mid_checkpoint(run_dir, proc, log, epoch=1, after_step=-1, timeout=300)
        workers = _train_workers(proc)
        assert workers, f"no RayTrainWorker process under the driver:\n{_tail(log)}"
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        reached = [int(epoch) * steps_per_epoch + int(step)
                   for pid, epoch, step in _STEP_LINE.findall(_settled_log(log)) if int(pid) in workers]
        os.kill(workers[0], signal.SIGTERM)  # delivered when it continues
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        _finish(proc, log, timeout=300)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    assert reached, f"the signalled attempt logged no step:\n{_tail(log)}"
    signalled_at, resumed_at = max(reached), _resumed_attempt(run_dir)["attempt_start_step"]
    print(f"SIGTERM at global step {signalled_at}, resumed at step {resumed_at} (every {MID_EVERY})")
    assert 0 <= signalled_at - resumed_at <= MID_EVERY, (signalled_at, resumed_at)
    assert resumed_at > steps_per_epoch  # from a mid-epoch checkpoint of epoch 1, not the epoch-0 one
    _assert_reproduces(run_dir, unbroken)


# ------------------------------------------------------------------ (c) a tampered registry checkpoint


@pytest.fixture
def tampered_store(tmp_path) -> str:
    from hvt.model import create_model

    model = create_model(MODEL, num_classes=3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["a", "b", "c"],
                "data_config": _tiny_config(str(tmp_path)).data.model_dump(mode="json")}, buffer)
    store = str(tmp_path / "store")
    version = registry.register_version(
        store, "tiny", files={"model.pt": buffer.getvalue()}, metrics={"val_top1": 0.5}, lineage={},
        created_at="2026-01-01T00:00:00+00:00",
    )
    registry.set_alias(store, "tiny", version.version)
    path = Path(version.path) / "model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the weights
    path.write_bytes(bytes(data))
    return store


def _hvt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(
    "command",
    [
        ("predict", "{video}", "--model", "champion"),
        ("evaluate", "tiny", "--ref", "champion", "--dataset", "synth"),
    ],
    ids=["predict", "evaluate"],
)
def test_cli_refuses_a_tampered_registry_checkpoint(tampered_store, realdata, command):
    video = str(realdata / "videos" / "kinetics" / "mmaction2__demo_demo.mp4")
    proc = _hvt(*[part.format(video=video) for part in command], "--store", tampered_store)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sha256" in proc.stderr and "Refusing to load" in proc.stderr
    assert "Traceback" not in proc.stderr
