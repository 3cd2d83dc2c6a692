"""Training across nodes, on one machine: a head that runs no work, a "train" node that alone can host the trainers
(custom resource ``train``) and a CPU-only "decode" node (resource ``decode``), each its own ``ray start``.

* a store the worker nodes cannot see (hidden from them by a mount namespace) fails in the pre-flight, with one
  line naming the node, the path and what to do, before any epoch, with no retry;
* a train -> evaluate -> register run on that cluster whose train node is killed mid-epoch (SIGKILL of the whole
  node) and replaced: it resumes from its checkpoint, registers, its per-epoch metrics equal a one-node run of the
  same config (``worker_resources`` and ``decode_on`` only say where things run: the run name is the same), and
  Ray's state API shows every read/decode task on the decode node and every training worker on a train node.

`hvt train` runs in a subprocess (the driver, on the machine's own view of the filesystem); the test process never
joins the cluster, it watches it through the state API. The one-node reference runs first, before the cluster starts
(no idle cluster beside it), and trains only: its per-epoch metrics are in its checkpoints, its evaluation would add
nothing to compare. No driver starts Ray Train's preemption watcher (an actor per worker group that logs node
drains; a SIGKILLed node is no drain, and a lost node is detected and retried without it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from raycluster import RayCluster, can_unshare

from hvt.config import ModelSpec, OptimConfig, ScalingSpec, TrainConfig
from hvt.data import DataConfig

pytestmark = [pytest.mark.integration]

EPOCHS = 2
TIMING = {"train_clips_per_s", "train_data_wait_share", "train_tflops_per_s", "train_mfu", "attempt_start_epoch"}


def _config(store: Path, run_name: str, *, on_cluster: bool) -> TrainConfig:
    return TrainConfig(
        store=str(store),
        dataset_name="synth",
        run_name=run_name,
        model=ModelSpec(name="haltingvt-nano-g05-b10"),
        data=DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                        randaugment=True, decode_cpus=0.5, read_cpus=0.25),
        optim=OptimConfig(epochs=EPOCHS, warmup_epochs=1, batch_size=4, lr=1e-3),
        # trainers can only be placed on the node with the "train" resource; the one-node run has no such node
        scaling=ScalingSpec(num_workers=2, cpus_per_worker=0.5, max_failures=2, keep_checkpoints=EPOCHS + 1,
                            worker_resources={"train": 1.0} if on_cluster else {}),
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A store holding the synthetic set (3 classes x 6 clips), copied into each test's own store."""
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    root = tmp_path_factory.mktemp("multinode-data")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=6, seed=5, frames=16, size=(64, 64))
    shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=str(root / "store"),
                              name="synth"))
    return root / "store"


@pytest.fixture(scope="module")
def layout(tmp_path_factory, one_node_run):
    """(cluster, train node, decode node, shared folder, hidden folder): the worker nodes see ``shared`` but an
    empty ``hidden``; the train node's workers pause mid-epoch 1 (see the run test). Started after the one-node
    reference run (``one_node_run``), so that no idle cluster shares the cores with it."""
    if not can_unshare():
        if os.environ.get("CI"):  # CI runs as root with util-linux: the multi-node tests must run there
            pytest.fail("the multi-node tests need root and unshare (util-linux) to hide a folder from a node")
        pytest.skip("needs root and unshare to hide a folder from a node")
    tmp = tmp_path_factory.mktemp("multinode")
    shared, hidden = tmp / "shared", tmp / "hidden"
    shared.mkdir()
    hidden.mkdir()
    with RayCluster(tmp) as cluster:
        decode = cluster.add_node(cpus=1, resources={"decode": 1}, hidden=[hidden])
        # its training workers stop at their 3rd optimiser step (epoch 1 of 2 steps each) until the test kills it
        train = cluster.add_node(cpus=2, resources={"train": 2}, hidden=[hidden], env={
            "HVT_FAULT_PAUSE_AT": "train:step#3", "HVT_FAULT_PAUSE_S": "900",
            "HVT_FAULT_PAUSE_FLAG": str(shared / "paused")})
        yield cluster, train, decode, shared, hidden


def _store(dataset: Path, parent: Path, name: str) -> Path:
    store = parent / name
    shutil.copytree(dataset, store)
    return store


def _hvt_train(cfg: TrainConfig, workdir: Path, *extra: str, timeout: float) -> tuple[int, str, float]:
    """Run `hvt train` with ``cfg``; (exit code, stderr, seconds)."""
    config = workdir / f"{cfg.run_name}.json"
    config.write_text(cfg.model_dump_json())
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hvt.cli", "train", "--config", str(config), "--json", *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())
    return proc.returncode, proc.stderr, time.monotonic() - started


def _env() -> dict[str, str]:
    """A driver's environment: one torch thread, every log line, no preemption watcher (see the module docstring),
    and no workers prestarted for it (a one-node Ray would start idle ones that its actors cannot use)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}  # conftest's Ray settings come along
    env.pop("RAY_ADDRESS", None)
    return env


def _checkpoints(run_dir: Path) -> dict[int, dict]:
    """Every committed checkpoint's state (epoch, attempt_start_epoch, metrics) by epoch."""
    try:
        snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for path in sorted(run_dir.glob("checkpoint_*/train_state.pt")):
        if path.parent.name in snapshot:
            state = torch.load(path, map_location="cpu", weights_only=True)
            out[int(state["epoch"])] = {"attempt_start_epoch": int(state["attempt_start_epoch"]),
                                        "metrics": {k: v for k, v in state["metrics"].items() if k not in TIMING}}
    return out


# the training of `hvt train` (hvt.train.trainer.run_training), without the evaluation and registration after it
TRAIN_ONLY = ("import sys\nfrom hvt.config import TrainConfig\nfrom hvt.train.trainer import run_training\n"
              "run_training(TrainConfig.model_validate_json(open(sys.argv[1]).read()))")


def _committed(run_dir: Path) -> int:
    """How many checkpoints the run has committed (the polling form of ``len(_checkpoints(run_dir))``)."""
    try:
        snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    except FileNotFoundError:
        return 0
    return sum(path.parent.name in snapshot for path in run_dir.glob("checkpoint_*/train_state.pt"))


@pytest.fixture(scope="module")
def one_node_run(tmp_path_factory, dataset) -> dict[int, dict]:
    """The per-epoch metrics of the same config trained on a one-node local Ray (the training `hvt train` runs)."""
    tmp = tmp_path_factory.mktemp("one-node")
    cfg = _config(_store(dataset, tmp, "store"), "same", on_cluster=False)
    config = tmp / "same.json"
    config.write_text(cfg.model_dump_json())
    proc = subprocess.run([sys.executable, "-c", TRAIN_ONLY, str(config)], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _checkpoints(Path(cfg.store) / "runs" / "same")


@pytest.mark.timeout(300)
def test_a_store_the_worker_nodes_cannot_see_fails_in_the_preflight(layout, dataset, tmp_path):
    cluster, _, _, _, hidden = layout
    cfg = _config(_store(dataset, hidden, "store"), "hidden", on_cluster=True)
    code, err, seconds = _hvt_train(cfg, tmp_path, "--ray-address", cluster.address, timeout=240)
    assert code == 2, err[-4000:]
    lines = [line for line in err.splitlines() if "pre-flight: node" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-4000:]
    line = lines[0]
    assert re.match(r"hvt train: error: pre-flight: node \S+ \(node [0-9a-f]{8}, (trainer|decode)", line), line
    assert f"cannot read {cfg.store}/datasets/synth/" in line and "manifest.json" in line
    assert "use an s3:// store or a filesystem mounted at the same path on every node" in line
    assert seconds < 120, seconds
    run_dir = Path(cfg.store) / "runs" / "hidden"
    assert not list(run_dir.glob("checkpoint_*")), "an epoch was trained"
    assert "retry" not in err


@pytest.mark.timeout(900)
def test_a_run_across_nodes_survives_its_train_node_and_equals_one_node(layout, dataset, one_node_run, tmp_path):
    """Train -> evaluate -> register across the nodes. Mid-epoch 1 (the train node's workers paused at their 3rd
    step) the whole train node is killed and a replacement started: the run resumes from epoch 0's checkpoint,
    registers, reproduces the one-node run epoch for epoch, and every read/decode task ran on the decode node."""
    from ray.util.state import list_actors, list_tasks

    cluster, doomed, decode, shared, hidden = layout
    cfg = _config(_store(dataset, shared, "store"), "same", on_cluster=True)
    run_dir = Path(cfg.store) / "runs" / "same"
    config = tmp_path / "cfg.json"
    config.write_text(cfg.model_dump_json())
    log = tmp_path / "train.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hvt.cli", "train", "--config", str(config),
                                 "--ray-address", cluster.address], stdout=subprocess.DEVNULL, stderr=err,
                                env=_env())
    try:
        deadline = time.monotonic() + 400
        while not (shared / "paused").exists() or _committed(run_dir) != 1:
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline and _committed(run_dir) < 2, log.read_text()[-4000:]
            time.sleep(0.5)
        assert sorted(_checkpoints(run_dir)) == [0]
        cluster.kill(doomed)  # mid-epoch 1: the machine is gone, its trainers with it
        replacement = cluster.add_node(cpus=2, resources={"train": 2}, hidden=[hidden])  # the autoscaler's
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:] + "\n" + "\n".join(cluster.tail(n) for n in cluster.nodes)
    assert "pre-flight: 2 node(s)" in text  # the train node and the decode node were probed
    assert "a worker or node was lost" in text and "retry 1 of 2" in text, text[-4000:]
    got = _checkpoints(run_dir)
    assert sorted(got) == sorted(one_node_run) == list(range(EPOCHS))
    assert got[0]["attempt_start_epoch"] == 0 and got[1]["attempt_start_epoch"] == 1, got
    for epoch in range(EPOCHS):
        assert got[epoch]["metrics"] == one_node_run[epoch]["metrics"], f"epoch {epoch}"
    assert (Path(cfg.store) / "registry" / cfg.model.name / "v1" / "metrics.json").exists()

    tasks = list_tasks(address=cluster.dashboard, detail=True, limit=10000, raise_on_missing_output=False)
    data_tasks = [t for t in tasks if "ReadVideoShard" in t.name or "MapBatches" in t.name]
    assert data_tasks, sorted({t.name for t in tasks})
    placed = {t.node_id for t in data_tasks if t.node_id}
    assert placed == {decode.node_id}, f"read/decode tasks ran on {placed}; the decode node is {decode.node_id}"
    assert {t.node_id for t in tasks if t.name == "hvt-preflight"} == {doomed.node_id, decode.node_id}
    workers = list_actors(address=cluster.dashboard, detail=True, limit=10000,
                          filters=[("class_name", "=", "RayTrainWorker")], raise_on_missing_output=False)
    assert workers and {w.node_id for w in workers} == {doomed.node_id, replacement.node_id}
