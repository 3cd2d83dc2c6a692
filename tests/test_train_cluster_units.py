"""The cluster decisions that need no cluster: where decode tasks go, which failures are retried, which nodes
the pre-flight probes, and what the probe itself checks on a real folder. The multi-node behaviour is in
tests/test_cluster_multinode.py."""

from __future__ import annotations

import hashlib

import pytest
import ray.exceptions
from ray.train import WorkerGroupError

from hvt.config import ScalingSpec, TrainConfig
from hvt.data.placement import DECODE_RESOURCE, resolve_decode_resource, task_resources
from hvt.train.preflight import nodes_to_probe, probe_store
from hvt.train.trainer import classify_failure


def test_decode_placement_follows_the_cluster():
    assert resolve_decode_resource("auto", {"CPU": 16.0, "decode": 32.0}) == DECODE_RESOURCE
    assert resolve_decode_resource("auto", {"CPU": 16.0, "GPU": 4.0}) is None
    assert resolve_decode_resource("decode-nodes", {"CPU": 16.0}) == DECODE_RESOURCE  # an autoscaler starts one
    assert resolve_decode_resource("any", {"CPU": 4.0, "decode": 4.0}) is None
    assert task_resources("decode", 0.25) == {"decode": 0.25}
    assert task_resources(None, 0.25) == {}
    with pytest.raises(ValueError, match="decode_on='gpu'"):
        resolve_decode_resource("gpu", {})  # type: ignore[arg-type]


def test_placement_settings_do_not_rename_a_run():
    base = TrainConfig(model={"name": "haltingvt-nano-g05-b10"})
    placed = base.model_copy(update={"scaling": base.scaling.model_copy(
        update={"decode_on": "decode-nodes", "worker_resources": {"train": 1.0}})})
    assert placed.fingerprint() == base.fingerprint()
    assert placed.scaling.resources_per_worker() == {"CPU": 0.5, "train": 1.0}
    assert ScalingSpec(use_gpu=True, cpus_per_worker=4).resources_per_worker() == {"CPU": 4, "GPU": 1}
    with pytest.raises(ValueError, match="worker_resources CPU"):
        ScalingSpec(worker_resources={"CPU": 2})


def _group_error(**failures: BaseException) -> WorkerGroupError:
    return WorkerGroupError("worker errors", {int(rank.strip("r")): err for rank, err in failures.items()})


def test_data_and_configuration_errors_fail_once():
    assert classify_failure(_group_error(r0=FileNotFoundError(2, "No such file", "/store/val-000000.tar"))) == "fatal"
    assert classify_failure(_group_error(r0=ValueError("bad config"), r1=RuntimeError("gloo: peer closed"))) == "fatal"
    assert classify_failure(_group_error(r0=RuntimeError("CUDA out of memory"))) == "fatal"


def test_errors_as_ray_train_wraps_them_are_classified_by_what_they_wrap():
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback, WorkerHealthCheckFailedError

    missing = UserExceptionWithTraceback(FileNotFoundError(2, "No such file", "/x/val-000000.tar"), "Traceback ...")
    assert classify_failure(_group_error(r0=missing)) == "fatal"
    reset = UserExceptionWithTraceback(ConnectionResetError(104, "Connection reset by peer"), "Traceback ...")
    assert classify_failure(_group_error(r0=reset)) == "transient"
    # what a SIGKILLed worker looks like to the controller
    dead = WorkerHealthCheckFailedError("The actor is dead", ray.exceptions.ActorDiedError())
    assert classify_failure(_group_error(r0=missing, r1=dead)) == "lost"


def test_a_lost_worker_or_node_is_retried_even_beside_collateral_errors():
    died = ray.exceptions.ActorDiedError()
    assert classify_failure(_group_error(r0=died)) == "lost"
    # the surviving rank fails in its collective with an error of its own: the death decides
    assert classify_failure(_group_error(r0=RuntimeError("Connection closed by peer"), r1=died)) == "lost"
    assert classify_failure(_group_error(r1=ray.exceptions.NodeDiedError("node 1 died"))) == "lost"


def test_a_store_that_fails_transiently_is_retried():
    assert classify_failure(_group_error(r0=ConnectionResetError(104, "Connection reset by peer"))) == "transient"


def _node(node_id: str, alive: bool = True, **resources: float) -> dict:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0." + node_id[-1], "Resources": resources}


def test_the_preflight_probes_every_node_that_trains_or_decodes():
    nodes = [
        _node("head0", CPU=0.0),  # coordinates only: never probed
        _node("gpu01", CPU=48.0, GPU=4.0),
        _node("cpu02", CPU=32.0, decode=32.0),
        _node("dead3", alive=False, CPU=32.0, decode=32.0),
    ]
    gpu = ScalingSpec(use_gpu=True, cpus_per_worker=4).resources_per_worker()
    roles = {n.node_id: n.roles for n in nodes_to_probe(nodes, gpu, DECODE_RESOURCE)}
    assert roles == {"gpu01": ("trainer",), "cpu02": ("decode",)}
    # without decode nodes, decoding may run on any CPU: the GPU node decodes too
    roles = {n.node_id: n.roles for n in nodes_to_probe(nodes[:2], gpu, None)}
    assert roles == {"gpu01": ("trainer", "decode")}


def test_the_probe_reads_the_manifest_and_writes_under_runs(tmp_path):
    version = tmp_path / "store" / "datasets" / "d" / "v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_bytes(b'{"classes": []}')
    (version / "train-000000.tar").write_bytes(b"x")
    sha = hashlib.sha256(b'{"classes": []}').hexdigest()
    runs = tmp_path / "store" / "runs"
    assert probe_store(str(version / "manifest.json"), sha, [str(version / "train-000000.tar")], str(runs)) is None
    assert list(runs.iterdir()) == []  # the probe file is gone again

    missing = probe_store(str(tmp_path / "elsewhere" / "manifest.json"), sha, [], str(runs))
    assert missing is not None and missing.startswith("cannot read") and "elsewhere" in missing
    other = probe_store(str(version / "manifest.json"), "0" * 64, [], str(runs))
    assert other is not None and "different" in other
    no_shard = probe_store(str(version / "manifest.json"), sha, [str(version / "val-000000.tar")], str(runs))
    assert no_shard is not None and "val-000000.tar" in no_shard
    (tmp_path / "readonly").mkdir()
    (tmp_path / "readonly" / "runs").write_text("a file where the runs folder should be")
    cannot_write = probe_store(str(version / "manifest.json"), sha, [], str(tmp_path / "readonly" / "runs"))
    assert cannot_write is not None and cannot_write.startswith("cannot write under")
