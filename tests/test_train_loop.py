"""The training loop without Ray: gradient accumulation, recipes, elastic scaling and seeding."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hvt.config import OptimConfig, ScalingSpec, TrainConfig
from hvt.train.loop import progress_line, seed_everything, train_one_epoch


class LinearClipModel(torch.nn.Module):
    """Stands in for HaltingVT: a linear classifier over the whole clip, same output fields."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:  # x [B, 3, T, H, W]
        logits = self.fc(x.flatten(1))
        zero = torch.zeros((), device=x.device)
        return SimpleNamespace(logits=logits, motion_logits=None, ponder_loss=zero,
                               gflops=torch.ones(x.shape[0]))


def _batches(sizes: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randint(0, 256, (sum(sizes), 2, 4, 4, 3), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 3, (sum(sizes),), generator=gen)
    out, start = [], 0
    for size in sizes:
        out.append({"clip": clips[start:start + size], "label": labels[start:start + size],
                    "decode_ok": torch.ones(size, dtype=torch.bool)})
        start += size
    return out


def _run(accum: int, sizes: list[int]) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    model = LinearClipModel(3 * 2 * 4 * 4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    cfg = TrainConfig(optim=OptimConfig(grad_accum_steps=accum, grad_clip_norm=None))
    stats = train_one_epoch(model, _batches(sizes), optimizer, scheduler, cfg, torch.device("cpu"),
                            with_static=False)
    return model, stats.optimizer_steps


def test_accumulated_micro_batches_step_like_one_big_batch():
    big, big_steps = _run(accum=1, sizes=[8])
    accumulated, steps = _run(accum=2, sizes=[4, 4])
    assert (big_steps, steps) == (1, 1)
    for a, b in zip(big.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # without accumulation the same two micro-batches make two (different) steps
    separate, separate_steps = _run(accum=1, sizes=[4, 4])
    assert separate_steps == 2
    assert not torch.allclose(separate.fc.weight, big.fc.weight)


def test_partial_accumulation_is_flushed_at_epoch_end():
    _, steps = _run(accum=2, sizes=[2, 2, 2, 2, 2])
    assert steps == 3


def test_paper_finetune_recipe():
    optim = OptimConfig.recipe("paper-finetune")
    assert (optim.optimizer, optim.lr, optim.weight_decay) == ("adam", 1e-5, 1e-5)
    assert (optim.warmup_epochs, optim.epochs, optim.batch_size, optim.grad_clip_norm) == (5, 20, 16, 40)
    assert OptimConfig.paper_finetune(epochs=3).epochs == 3  # overrides win
    assert OptimConfig.recipe("scratch") == OptimConfig()
    assert OptimConfig().optimizer == "adamw"
    with pytest.raises(ValueError, match="unknown recipe"):
        OptimConfig.recipe("sgd-forever")  # type: ignore[arg-type]


def test_elastic_scaling_and_run_name():
    assert ScalingSpec(num_workers=4).ray_num_workers == 4
    assert ScalingSpec(num_workers=4, min_workers=2).ray_num_workers == (2, 4)
    with pytest.raises(ValueError, match="min_workers"):
        ScalingSpec(num_workers=2, min_workers=3)
    # turning elasticity on resumes the same run rather than starting a new one
    fixed = TrainConfig(scaling=ScalingSpec(num_workers=4))
    elastic = TrainConfig(scaling=ScalingSpec(num_workers=4, min_workers=2))
    assert fixed.resolved_run_name("v1") == elastic.resolved_run_name("v1")


def test_seed_everything_repeats_every_rng():
    def draw() -> tuple:
        return torch.rand(1).item(), random.random(), np.random.rand()

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first


def test_recipe_and_elastic_flags_build_the_config(tmp_path):
    import argparse

    from hvt.commands.train import add_train_config_arguments, train_config_from_args

    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    args = parser.parse_args(["--store", str(tmp_path), "--recipe", "paper-finetune", "--epochs", "3",
                              "--workers", "4", "--min-workers", "2"])
    cfg = train_config_from_args(args)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.warmup_epochs) == ("adam", 1e-5, 5)
    assert cfg.optim.epochs == 3  # the flag wins over the recipe
    assert cfg.scaling.ray_num_workers == (2, 4)


def test_progress_line_names_each_figure_of_the_epoch():
    """The per-epoch line `make demo` shows: 1-based epoch of the total, loss, val top-1, GFLOPs, clips/s."""
    metrics = {"epoch": 2, "train_loss": 1.23456, "val_top1": 0.5625, "val_gflops": 0.052712,
               "train_clips_per_s": 41.26, "val_top5": 1.0}
    assert progress_line(metrics, 40) == (
        "epoch 3/40: loss 1.235, val top-1 0.562, 0.0527 GFLOPs/clip, 41.3 clips/s"
    )


def test_training_split_is_built_once_and_iterated_every_epoch(monkeypatch):
    """``TrainSplits`` builds the run's split once, at the epoch the attempt starts at (a resumed run: the epoch
    it resumes at), and iterates the same split every epoch; asking for any epoch but the next one raises."""
    from hvt.train import worker_data

    events: list[str] = []

    class FakeSplit:
        def iter_torch_batches(self, **kwargs):
            events.append("iterate")
            return ["batch"]

    def build(first_epoch: int, workers: int) -> list[FakeSplit]:
        events.append(f"build from {first_epoch}")
        return [FakeSplit()]

    cfg = TrainConfig(store="/tmp/unused", dataset_name="d", optim=OptimConfig(epochs=5))
    splits = worker_data.TrainSplits({"dataset_path": "/tmp/unused"}, cfg, torch.device("cpu"), first_epoch=2)
    monkeypatch.setattr(splits, "_split", build)
    for epoch in range(2, cfg.optim.epochs):
        assert list(splits.batches(epoch)) == ["batch"]
    assert events == ["build from 2", "iterate", "iterate", "iterate"]
    with pytest.raises(ValueError, match="epoch 5 next, not epoch 2"):
        splits.batches(2)


@pytest.mark.parametrize("limit_bytes, decodes", [(10_000, 1), (100, 3), (0, 3)])
def test_val_share_is_decoded_once_when_it_fits(limit_bytes, decodes):
    """``ValBatches``: the first epoch streams the val share; when it fits in the limit, the later epochs replay
    the same batches without asking Ray Data again; over the limit (or limit 0) every epoch streams."""
    from hvt.train import worker_data

    class FakeShard:
        executions = 0

        def iter_torch_batches(self, batch_size, drop_last):
            FakeShard.executions += 1
            for start in range(0, 10, batch_size):  # 10 clips of 64 bytes each: 640 bytes
                yield {"clip": torch.full((min(batch_size, 10 - start), 64), start, dtype=torch.uint8),
                       "label": torch.arange(start, min(start + batch_size, 10))}

    val = worker_data.ValBatches(FakeShard(), 4, limit_bytes, torch.device("cpu"))
    epochs = []
    for _ in range(3):
        epochs.append([{k: v.clone() for k, v in b.items()} for b in val.batches()])
        val.end_epoch()
    assert FakeShard.executions == decodes
    for batches in epochs[1:]:  # the same clips, in the same batches, every epoch
        assert [b["label"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert all(torch.equal(b["clip"], a["clip"]) for a, b in zip(epochs[0], batches, strict=True))


def test_val_share_left_unfinished_is_not_replayed():
    """An epoch that stopped before the end of the share must not become the replayed share."""
    from hvt.train import worker_data

    class FakeShard:
        def iter_torch_batches(self, batch_size, drop_last):
            yield from ({"label": torch.tensor([i])} for i in range(3))

    val = worker_data.ValBatches(FakeShard(), 1, 10_000, torch.device("cpu"))
    next(iter(val.batches()))
    val.end_epoch()
    assert [int(b["label"]) for b in val.batches()] == [0, 1, 2]  # streamed again, whole


def test_fetch_ahead_starts_before_it_is_iterated_and_keeps_the_order():
    """``FetchAhead`` asks for the first item at once (in a thread), then yields every item in order; an error
    while fetching is raised where it is iterated; an empty source yields nothing."""
    import threading

    from hvt.train.worker_data import FetchAhead

    started = threading.Event()

    def source():
        started.set()
        yield from range(5)

    ahead = FetchAhead(source())
    assert started.wait(10)  # fetching began before anyone iterated
    assert list(ahead) == [0, 1, 2, 3, 4]
    assert list(FetchAhead([])) == []

    def broken():
        raise RuntimeError("decode stage died")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="decode stage died"):
        list(FetchAhead(broken()))
