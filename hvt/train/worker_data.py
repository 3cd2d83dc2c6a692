"""What a training worker reads: its share of each epoch's training split and of the val split.

* :class:`TrainSplits`: one training dataset for the run, split once; every iteration is the next epoch
  (``hvt.data.ray_dataset.build_clip_dataset(first_epoch=...)``), and :meth:`TrainSplits.batches` starts
  fetching an epoch as soon as it is asked for, so the loop asks for the next epoch before it validates and
  checkpoints the current one.
* :class:`ValBatches`: the worker's share of the val split, decoded once and replayed when it fits in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ray.train
import torch
import torch.distributed as dist

from hvt.config import TrainConfig
from hvt.data import build_clip_dataset, train_columns
from hvt.evaluation.evaluator import with_views
from hvt.train.midepoch import skip_batches

BATCH_COLUMNS = ("clip", "label", "decode_ok")  # validation rows (test transform, decode side); training: train_columns


class FetchAhead:
    """Iterates ``items``, whose first item a background thread starts fetching as soon as this is built.

    A Ray Data split hands out an epoch's first batch only once the epoch's data is decoded (the equal split
    evens the shares out at the end): fetched ahead, that decoding runs while the worker still validates and
    checkpoints the previous epoch. What is fetched, and in which order, does not change. Iterate once.
    """

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = items
        self._it: Iterator[Any] | None = None
        self._first: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fetch_first, name="fetch-ahead", daemon=True)
        self._thread.start()

    def _fetch_first(self) -> None:
        try:
            self._it = iter(self._items)
            self._first.append(next(self._it))
        except StopIteration:
            pass
        except BaseException as err:  # noqa: BLE001 - re-raised in the iterating thread
            self._error = err

    def __iter__(self) -> Iterator[Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        if self._first and self._it is not None:
            yield from self._it


class ValBatches:
    """This worker's share of the val split as batches of ``batch_size`` clips, decoded once when it can be.

    The first epoch streams the share from Ray Data and keeps a copy of each batch while the share stays within
    ``limit_bytes``. If every rank's share fitted, later epochs replay the copies: the test transform draws
    nothing at random, so they are the clips a new decode would give, without decoding them again. Otherwise
    every epoch streams (all ranks alike: the split's epochs start together on every rank).
    """

    def __init__(self, shard: Any, batch_size: int, limit_bytes: int, device: torch.device) -> None:
        self.shard, self.batch_size, self.limit_bytes, self.device = shard, batch_size, limit_bytes, device
        self._kept: list[dict[str, Any]] | None = None
        self._recording: list[dict[str, Any]] | None = None
        self._decided = limit_bytes <= 0
        self._complete = False

    def batches(self) -> Any:
        """The batches of this epoch (the kept copies once every rank's share has been kept)."""
        if self._kept is not None:
            return iter(self._kept)
        return self._stream()

    def _stream(self) -> Any:
        self._complete = False
        self._recording = None if self._decided else []
        size = 0
        for batch in self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=False):
            if self._recording is not None:
                size += sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))
                if size > self.limit_bytes:
                    self._recording = None
                else:  # a copy: the batch may be a view of Ray's object store
                    self._recording.append({k: v.clone() if isinstance(v, torch.Tensor) else v
                                            for k, v in batch.items()})
            yield batch
        self._complete = True

    def end_epoch(self) -> None:
        """After the first epoch, agree over every rank whether to replay (all ranks must call this)."""
        if self._decided:
            return
        self._decided = True
        kept = torch.tensor([int(self._complete and self._recording is not None)], device=self.device)
        if world_size() > 1:
            dist.all_reduce(kept, op=dist.ReduceOp.MIN)
        self._kept = self._recording if int(kept.item()) == 1 else None
        self._recording = None


class TrainSplits:
    """The run's training data: one run-long dataset, split once; every iteration of it is the next epoch.

    Rank 0 builds the dataset with ``first_epoch`` = the epoch this attempt starts at (0, or the epoch a resumed
    run resumes at; Ray's own per-execution reseeding counts executions, which restart at 0 after a restart), so
    epoch e's shard order, within-shard shuffle and every clip's augmentation are functions of ``(seed, e, sample
    key)`` (``hvt.data.ray_dataset.build_clip_dataset``). It splits it once with ``streaming_split(equal=True)``
    (a single worker keeps it whole: :func:`split_streams`) and hands the splits to the other ranks; every epoch
    iterates them again (Ray Train's usual pattern: no new split coordinator per epoch). With
    ``runtime.ordered_data`` the split is deterministic too: rows keep their input order and go to the worker that
    has received the fewest so far.
    """

    def __init__(self, loop_config: dict[str, Any], cfg: TrainConfig, device: torch.device, first_epoch: int) -> None:
        self.loop_config, self.cfg, self.device = loop_config, cfg, device
        self._next_epoch = first_epoch
        self._mine: Any = None  # this rank's split, once built

    def _split(self, first_epoch: int, workers: int) -> Any:
        dataset = build_clip_dataset(self.loop_config["dataset_path"], "train", self.cfg.data, training=True,
                                     first_epoch=first_epoch, decode_resource=self.loop_config.get("decode_resource"))
        dataset = dataset.select_columns(train_columns(self.cfg.data))
        dataset.context.execution_options.preserve_order = self.cfg.runtime.ordered_data
        return split_streams(dataset, workers, equal=True)

    def batches(self, epoch: int, skip: int = 0) -> Any:
        """This worker's share of epoch ``epoch`` of the training data, as CPU batches (pinned for CUDA), already
        being fetched (:class:`FetchAhead`). Every rank calls this once per epoch, in order from ``first_epoch``,
        once the previous epoch's batches are all taken; another epoch raises ValueError.

        ``skip``: leave out the first ``skip`` batches (an epoch resumed from a mid-epoch checkpoint, which had
        consumed them). The epoch replays exactly (the same rows, in the same order, to the same rank), so what
        follows is what the unbroken run saw after its checkpoint. The skipped rows are still read and decoded:
        they are dropped here, on the rank."""
        cfg = self.cfg
        if "dataset_path" not in self.loop_config:  # driver-built dataset (older callers)
            shard = ray.train.get_dataset_shard("train")
            return skip_batches(shard.iter_torch_batches(batch_size=cfg.optim.batch_size, drop_last=False), skip)
        if epoch != self._next_epoch:
            raise ValueError(f"the training data yields epoch {self._next_epoch} next, not epoch {epoch}")
        self._next_epoch += 1
        if self._mine is None:
            self._mine = split_on_rank0(lambda workers: self._split(epoch, workers))
        batches = FetchAhead(self._mine.iter_torch_batches(
            batch_size=cfg.optim.batch_size, drop_last=False, device="cpu", pin_memory=self.device.type == "cuda"
        ))
        return skip_batches(batches, skip) if skip else batches


def val_iterator(loop_config: dict[str, Any], cfg: TrainConfig) -> Any:
    """This worker's share of the val split (its test views, ``cfg.val_views``), iterable once per epoch.

    Split with ``equal=False``: every val sample is evaluated exactly once over the workers (Ray Train's own split
    of a ``datasets={"val": ...}`` entry is ``equal=True``, which drops up to W - 1 samples to even the shares out:
    fine for training steps, wrong for a figure that picks the best checkpoint and goes into the registry)."""
    if "val_path" not in loop_config:  # driver-built dataset (older callers)
        return ray.train.get_dataset_shard("val")

    def split(workers: int) -> Any:
        dataset = build_clip_dataset(loop_config["val_path"], "val", with_views(cfg.data, cfg.val_views),
                                     training=False, decode_resource=loop_config.get("decode_resource"))
        return split_streams(dataset.select_columns(list(BATCH_COLUMNS)), workers, equal=False)

    return split_on_rank0(split)


def split_streams(dataset: Any, workers: int, *, equal: bool) -> list[Any]:
    """``dataset`` as ``workers`` streams, one per training worker: ``Dataset.streaming_split(workers, equal)``,
    whose coordinator actor runs the executions and deals the rows out. One worker takes the dataset itself: it
    runs each execution in its own process, and no coordinator actor is started (measured: two fewer Ray actor
    processes per run). Either way every iteration is one execution of the dataset, so a run-long dataset's
    k-th iteration is the same epoch (``hvt.data.ray_dataset``: the execution index)."""
    if workers == 1:
        return [dataset]
    return dataset.streaming_split(workers, equal=equal)


def split_on_rank0(split: Callable[[int], list[Any]]) -> Any:
    """This rank's part of ``split(world_size)``, which rank 0 alone runs (building a dataset and splitting it
    starts Ray Data actors) and hands to the other ranks. All ranks must call this."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    splits: list[Any] = [split(world_size()) if rank == 0 else None]
    if world_size() > 1:
        dist.broadcast_object_list(splits, src=0)
    return splits[0][rank]


def world_size() -> int:
    """How many training workers take part (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1
