"""The training step: all-reduce only when stepping, one host sync per log interval, throughput and MFU."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from hvt.config import OptimConfig, RuntimeSpec, TrainConfig
from hvt.train import step as step_mod
from hvt.train.step import peak_flops, train_one_epoch, training_flops


class CountingModel(torch.nn.Module):
    """A linear clip classifier with DDP's ``no_sync`` hook; records, per forward, whether it ran inside no_sync."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(features, classes)
        self.inside_no_sync = False
        self.forwards: list[bool] = []

    @contextlib.contextmanager
    def no_sync(self):
        self.inside_no_sync = True
        try:
            yield
        finally:
            self.inside_no_sync = False

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        self.forwards.append(self.inside_no_sync)
        logits = self.fc(x.flatten(1))
        zero = torch.zeros((), device=x.device)
        return SimpleNamespace(logits=logits, motion_logits=None, ponder_loss=zero,
                               gflops=torch.full((x.shape[0],), 2.0))


def _batches(n: int, size: int = 2) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        out.append({"clip": torch.randint(0, 256, (size, 2, 4, 4, 3), generator=gen, dtype=torch.uint8),
                    "static_clip": torch.randint(0, 256, (size, 2, 4, 4, 3), generator=gen, dtype=torch.uint8),
                    "label": torch.randint(0, 3, (size,), generator=gen),
                    "decode_ok": torch.ones(size, dtype=torch.bool)})
    return out


def _epoch(n: int, accum: int, *, log_every: int = 1000, peak: float | None = None, static: bool = False,
           on_interval=None):
    torch.manual_seed(0)
    model = CountingModel(3 * 2 * 4 * 4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    cfg = TrainConfig(optim=OptimConfig(grad_accum_steps=accum, grad_clip_norm=None),
                      runtime=RuntimeSpec(log_every_steps=log_every, peak_tflops=peak))
    stats = train_one_epoch(model, _batches(n), optimizer, scheduler, cfg, torch.device("cpu"), static, on_interval)
    return model, stats


def test_gradients_all_reduce_only_on_the_micro_batch_that_steps():
    model, stats = _epoch(5, accum=2)
    # micro-batches 1 and 3 accumulate without all-reduce; 2 and 4 step; 5 is the last and flushes: it must sync
    assert model.forwards == [True, False, True, False, False]
    assert stats.optimizer_steps == 3


class _SyncCounter:
    """Counts device-to-host reads: aten scalar reads seen by the profiler plus patched ``tolist``/``item``."""

    def __init__(self, monkeypatch) -> None:
        self.python_reads = 0
        for name in ("tolist", "item"):
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=original, **k):
                self.python_reads += 1
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)

    def run(self, fn):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            result = fn()
        names = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal")
        aten = sum(e.count for e in prof.key_averages() if e.key in names)
        return result, aten


def test_one_host_read_per_log_interval(monkeypatch):
    counter = _SyncCounter(monkeypatch)
    intervals: list[dict] = []
    (_, stats), aten_reads = counter.run(lambda: _epoch(8, accum=1, log_every=4, on_interval=intervals.append))
    assert stats.optimizer_steps == 8 and len(intervals) == 2
    # one read per interval (steps 4 and 8) and one for the epoch totals; nothing per micro-batch
    assert counter.python_reads == 3, counter.python_reads
    assert aten_reads <= 3


def test_throughput_data_wait_and_mfu_are_reported():
    peak_tflops = 1e-6  # 1 MFLOP/s: makes a CPU run's utilisation a visible number
    _, stats = _epoch(4, accum=1, peak=peak_tflops, static=True)
    # every forward pass counts: 2 real + 2 static clips per batch, 2 GMACs each
    assert stats.forward_gmacs == pytest.approx(4 * 4 * 2.0)
    assert stats.seen == 8
    metrics = stats.metrics()
    expected = training_flops(stats.forward_gmacs) / stats.seconds / (peak_tflops * 1e12)
    assert metrics["train_mfu"] == pytest.approx(expected)
    assert metrics["train_clips_per_s"] == pytest.approx(8 / stats.seconds)
    assert 0.0 <= metrics["train_data_wait_share"] <= 1.0
    assert training_flops(1.0) == 6e9  # forward + backward = 3 forwards, 2 FLOPs per multiply-add
    # no known peak (CPU, no override): no MFU rather than a made-up one
    _, plain = _epoch(2, accum=1)
    assert "train_mfu" not in plain.metrics()


def test_peak_table_matches_device_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = torch.device("cuda", 0)
    for name, tflops in [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
                         ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        assert peak_flops(cuda) == tflops * 1e12, name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some Future GPU")
    assert peak_flops(cuda) is None
    assert peak_flops(cuda, override_tflops=500.0) == 500e12
    assert peak_flops(torch.device("cpu")) is None


def test_failed_decodes_are_dropped_on_the_host():
    batch = _batches(1, size=3)[0]
    batch["decode_ok"] = torch.tensor([True, False, True])
    x, y, motion_y, n_real, n_failed = step_mod.split_batch(batch, torch.device("cpu"), with_static=True)
    assert (n_real, n_failed) == (2, 1)
    assert x.shape[0] == 4 and y.tolist() == [*batch["label"][[0, 2]].tolist()] * 2
    assert motion_y.tolist() == [1, 1, 0, 0]


def test_ddp_options_follow_the_model():
    cfg = TrainConfig()
    plain = torch.nn.Linear(2, 2)
    assert step_mod.ddp_kwargs(plain, cfg) == {"find_unused_parameters": True}
    plain.all_parameters_in_graph = True
    assert step_mod.ddp_kwargs(plain, cfg) == {}
    plain.motion_head = torch.nn.Linear(2, 2)
    off = TrainConfig(optim=OptimConfig(motion_loss_weight=0.0))
    assert step_mod.ddp_kwargs(plain, off) == {"find_unused_parameters": True}


def test_runtime_flags_build_the_config_and_leave_the_run_name(tmp_path):
    import argparse

    from hvt.commands.train import add_train_config_arguments, train_config_from_args

    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    plain = train_config_from_args(parser.parse_args(["--store", str(tmp_path)]))
    tuned = train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--compile", "--peak-tflops", "989",
                                                      "--log-every", "10"]))
    assert (tuned.runtime.compile, tuned.runtime.peak_tflops, tuned.runtime.log_every_steps) == (True, 989.0, 10)
    assert not plain.runtime.compile and plain.runtime.ordered_data
    # how a run executes is not what it computes: the same run (and its checkpoints) either way
    assert plain.resolved_run_name("v1") == tuned.resolved_run_name("v1")
