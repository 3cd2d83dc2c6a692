"""Every tensor the training loop and the distributed evaluator hand to a collective is on the worker's device.

With GPUs Ray Train's process group is NCCL, which refuses CPU tensors; on the CPU machines the tests run on,
every tensor is on the CPU and gloo takes it, so such a bug would pass unnoticed until a GPU run fails after it
has trained (issue 23, finding 3). ``tests/collective_guard.py`` tells the two apart on the CPU: it marks tensors
made without a device (where a GPU worker would hold them on the host) and fails a collective that gets one.
Here the guard is checked first, in one process with a gloo group; then the real evaluator and a real training
epoch run on 2 Ray Train workers under it, and the guard's records show it saw each collective they make.

The evaluator's run is also the check that evaluation on 2 Ray Train workers gives exactly what one process gives
(it was tests/test_evaluate_distributed.py; one local Ray now serves both runs): accuracies synced by torchmetrics
over DDP, per-clip GFLOPs (mean and percentiles), tokens per layer and halting depths gathered from both shares,
and decode failures counted once. The guard only marks tensors and checks collectives: the numbers are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import collective_guard as guard
import numpy as np
import pytest
import torch
import torch.distributed as dist

from hvt import collectives
from hvt.config import ScalingSpec
from hvt.data import DataConfig

CPU = torch.device("cpu")  # what ray.train.torch.get_device() gives a CPU worker


@pytest.fixture
def local_group():
    """A one-process gloo group, as Ray Train makes for one CPU worker."""
    assert collectives.init_local_group(CPU) == "gloo"
    yield
    dist.destroy_process_group()


def test_guard_marks_what_a_gpu_worker_would_hold_on_the_host():
    with guard.HostMarks():
        host = torch.tensor([1.0], dtype=torch.float64)  # the bug of finding 3: no device=
        placed = torch.tensor([1.0], device=CPU)
        moved = host.to(CPU)
        assert not guard.marked(placed) and not guard.marked(moved)
        assert guard.marked(host), "on a GPU, .to(device) returns a copy: the original stays on the host"
        assert guard.marked(host * 2) and guard.marked(torch.zeros(3)) and guard.marked(torch.arange(3))
        assert not guard.marked(placed * 2) and not guard.marked(placed + host)  # a CUDA input gives CUDA
        assert not guard.marked(torch.zeros_like(placed)) and guard.marked(torch.zeros_like(host))
        assert guard.marked(placed.cpu()) and guard.marked(placed.to("cpu"))
        assert guard.marked(torch.ones(2, device="cpu"))  # a device spelled "cpu" is the host on any worker
        module = torch.nn.Linear(2, 2).to(CPU)
        assert not guard.marked(module(placed.expand(1, 2)))


def test_guard_rejects_host_tensors_in_collectives_and_records_the_rest(local_group, tmp_path):
    original = dist.all_reduce
    with guard.guard_collectives(tmp_path):
        dist.all_reduce(torch.ones(2, device=CPU))
        dist.all_gather_object([None], {"rng": torch.get_rng_state()})  # torch places its own tensors
        with pytest.raises(guard.CollectiveOnHostError, match=r"all_reduce called from .*test_collectives_device"):
            dist.all_reduce(torch.tensor([2.0], dtype=torch.float64))
        with pytest.raises(guard.CollectiveOnHostError, match="all_gather"):
            dist.all_gather([torch.zeros(1, device=CPU)], torch.zeros(1).cpu())
    assert dist.all_reduce is original  # restored on exit
    assert [(r["op"], r["ok"]) for r in guard.records(tmp_path)] == [
        ("all_reduce", True), ("all_gather_object", True), ("all_reduce", False), ("all_gather", False)]


def test_helpers_place_their_tensors_on_the_device_and_reduce(local_group, tmp_path):
    """hvt.collectives at world size 1: the collectives run (a one-GPU run makes them too) and give the values."""
    with guard.guard_collectives(tmp_path):
        assert collectives.mean_over_ranks(2.5, 4, CPU) == 2.5
        assert collectives.sum_over_ranks([3, 1], CPU) == [3, 1]
        assert collectives.max_over_ranks(7.0, CPU) == 7.0
        assert collectives.gather_objects({"a": 1}) == [{"a": 1}]
    calls = guard.records(tmp_path)
    assert [r["op"] for r in calls] == ["all_reduce"] * 3 + ["all_gather_object"]
    assert all(r["ok"] for r in calls)


def test_helpers_without_a_process_group_return_the_local_values():
    assert not collectives.group_active()
    assert collectives.mean_over_ranks(2.5, 4, CPU) == 2.5
    assert collectives.sum_over_ranks([3, 1], CPU) == [3, 1]
    assert collectives.gather_objects("x") == ["x"]


# ------------------------------------------------------------------ the real workers, 2 of them, under the guard


@pytest.fixture(scope="module")
def local_ray(one_torch_thread, shared_ray):
    """The test process's local Ray (tests/conftest.py: shared_ray) for the training run and the evaluation run."""


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> tuple[str, str]:
    """(store, dataset version path) of a tiny synthetic set with train and val splits."""
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    root = tmp_path_factory.mktemp("collectives")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=4, seed=3, frames=16, size=(64, 64))
    store = str(root / "store")
    result = shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=store,
                                       name="synth"))
    return store, result.path


def _sites(calls: list[dict], op: str) -> set[str]:
    """The project functions (``path function``, without line numbers) on the stacks of ``op`` calls."""
    return {site.split(":")[0] + " " + site.split(" ", 1)[1] for r in calls if r["op"] == op for site in r["sites"]}


def _all_checked(records: Path) -> list[dict]:
    """The guard's records of both workers; every collective they made got device tensors."""
    calls = guard.records(records)
    assert calls and all(r["ok"] for r in calls), json.dumps([r for r in calls if not r["ok"]], indent=1)
    assert len({p.name for p in Path(records).glob("collectives-*.jsonl")}) >= 2, "both workers were guarded"
    return calls


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_training_hands_collectives_only_device_tensors(local_ray, synthetic_store, tmp_path, monkeypatch):
    import hvt.train.trainer as trainer
    from hvt.config import ModelSpec, OptimConfig, TrainConfig

    store, _ = synthetic_store
    records = tmp_path / "records"
    guard.register()  # the workers cannot import tests/: Ray ships the guard with the wrapped function
    monkeypatch.setattr(trainer, "train_loop_per_worker", guard.guarded(trainer.train_loop_per_worker, records))
    data = DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                      static_clips=True, decode_cpus=0.5)
    scaling = ScalingSpec(num_workers=2, cpus_per_worker=0.5, max_failures=0)
    cfg = TrainConfig(store=store, dataset_name="synth", model=ModelSpec(name="haltingvt-nano-g05-b10"), data=data,
                      optim=OptimConfig(epochs=1, warmup_epochs=0, batch_size=4, lr=1e-3), scaling=scaling)
    result = trainer.run_training(cfg)  # a collective on a host tensor fails the run (max_failures=0)

    assert result.metrics["epoch"] == 0
    calls = _all_checked(records)
    reduced, gathered = _sites(calls, "all_reduce"), _sites(calls, "all_gather")
    # loss and counts over ranks, the val cache decision, RNG states, the data split
    assert {"hvt/collectives.py mean_over_ranks", "hvt/collectives.py sum_over_ranks"} <= reduced
    assert "hvt/train/worker_data.py end_epoch" in reduced
    assert "hvt/train/loop.py _gather_rng" in _sites(calls, "all_gather_object")
    assert "hvt/train/worker_data.py split_on_rank0" in _sites(calls, "broadcast_object_list")
    # torchmetrics' sync in validation
    assert {"hvt/evaluation/metrics.py compute", "hvt/train/loop.py validate"} <= gathered


EVAL_DATA = DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                       decode_workers=1, decode_cpus=0.5)


@pytest.fixture(scope="module")
def val_version(tmp_path_factory) -> str:
    """A val split of 10 clips and one that does not decode, in 3 shards: the 2 workers get unequal shares."""
    from hvt.data.testing import FakeSample, write_version
    from hvt.ingest.synthetic import MOTION_CLASSES, encode_h264, render_clip

    classes = list(MOTION_CLASSES[:3])
    samples = []
    for i in range(10):
        clip = render_clip(classes[i % 3], np.random.default_rng(i), frames=16, width=32, height=32)
        samples.append(FakeSample(f"clip{i:02d}", encode_h264(clip, fps=8), i % 3))
    samples.append(FakeSample("broken", b"not a video at all", 1))
    shards = [samples[:4], samples[4:8], samples[8:]]
    return write_version(str(tmp_path_factory.mktemp("ds") / "v1"), {"val": shards}, classes)


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_two_workers_match_one_process_and_hand_collectives_only_device_tensors(local_ray, val_version, tmp_path,
                                                                               monkeypatch):
    """Evaluation on 2 Ray Train workers (under the guard) gives exactly what one process gives: accuracies synced
    by torchmetrics over DDP, per-clip GFLOPs (mean and percentiles), tokens per layer and halting depths gathered
    from both shares, and decode failures counted once."""
    import hvt.evaluation.distributed as distributed
    from hvt.evaluation.evaluate import evaluate_model
    from hvt.model import create_model
    from hvt.model.zoo import model_from_state

    records = tmp_path / "records"
    guard.register()
    monkeypatch.setattr(distributed, "_eval_worker", guard.guarded(distributed._eval_worker, records))
    torch.manual_seed(0)
    model = create_model("haltingvt-nano-g05-b10", num_classes=3, halt_center=-5.0)  # a low centre: tokens halt early
    state = {"model": model.state_dict(), "model_config": model.config.to_dict()}
    single = evaluate_model(model_from_state(state), val_version, "val", EVAL_DATA, num_classes=3, batch_size=4)
    scaling = ScalingSpec(num_workers=2, cpus_per_worker=0.5)
    spread = distributed.evaluate_distributed(state, val_version, "val", EVAL_DATA, num_classes=3, scaling=scaling,
                                              batch_size=4)

    assert single["eval_workers"] == 1 and spread["eval_workers"] == 2
    assert single["clips"] == spread["clips"] == 10
    assert single["decode_failures"] == spread["decode_failures"] == 1
    for key in ("top1", "top5", "gflops_mean", "gflops_p50", "gflops_p90", "gflops_p99", "gflops_min", "gflops_max"):
        assert spread[key] == pytest.approx(single[key], rel=1e-5), key
    assert spread["per_class_top1"] == pytest.approx(single["per_class_top1"])
    assert spread["tokens_per_layer"] == pytest.approx(single["tokens_per_layer"], rel=1e-5)
    assert spread["halting_depth_histogram"] == single["halting_depth_histogram"]
    # a low halting centre: clips really differ in what they spent, so the percentiles are informative
    assert single["gflops_min"] < single["gflops_max"]
    assert spread["clips_per_s"] > 0

    calls = _all_checked(records)
    reduced, gathered = _sites(calls, "all_reduce"), _sites(calls, "all_gather")
    # torchmetrics' sync; the evaluator's wall time and per-clip spend
    assert {"hvt/evaluation/metrics.py compute", "hvt/evaluation/distributed.py _eval_worker"} <= gathered
    assert {"hvt/collectives.py max_over_ranks", "hvt/evaluation/distributed.py _eval_worker"} <= reduced
    assert "hvt/evaluation/evaluate.py combine_shares" in _sites(calls, "all_gather_object")
