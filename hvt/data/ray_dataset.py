"""Ray Data wiring: shards (bytes only) -> decode tasks -> streamed uint8 clips for Ray Train.

    read tasks (one per shard, ``read_cpus`` each)        decode tasks (at most ``decode_workers`` x ``decode_cpus``)
    tar stream -> samples -> [train] buffer shuffle  ->   decord + sampling + augmentation (DecodeClips)   -> rows

Training shuffles twice, both with bounded memory: the shard order (``FileShuffleConfig``, a new order every
epoch) and the samples within a shard (``shuffle_buffer`` samples per read task, also reseeded every epoch); read
tasks of several shards run at once, so their outputs interleave. There is no global ``random_shuffle``: it would
pull the whole dataset through the object store.

Row schema (what ``ray.train.get_dataset_shard(name).iter_torch_batches(collate_fn=collate_clips)`` yields):

=============== ======= ================================================================================
``clip``        uint8   ``[T,H,W,3]``; ``[V,T,H,W,3]`` when ``config.num_views(training) > 1`` (multi-view test:
                        views are clip-major, ``num_clips`` x ``test_crops``; average the scores over ``V``)
``static_clip`` uint8   same shape as ``clip``; only when ``config.static_clips and training``
``label``       int64   class index (-1 when the metadata was unreadable)
``key``         str     sample key in the shard
``decode_ok``   bool    False: the sample could not be read or decoded; its clips are all zeros
=============== ======= ================================================================================

Training with ``config.augment_on == "device"`` (the default), ``clip`` / ``static_clip`` are replaced by
``frames`` (uint8 ``[T,Ht,Wt,3]``, the sampled frames in the ``config.transfer_size`` canvas), ``aug`` (float32 ``[P]``, the
drawn augmentation), ``static_frame`` (int64, which of the T frames is the static clip's) and ``static_aug``;
``hvt.data.device_augment.DeviceAugment`` turns them into clips on the training device (``train_columns``).

``key`` is a string column, which Ray's default tensor conversion refuses: pass ``collate_fn=collate_clips`` (keys
come back as a list of str; ``collate_clips`` is one that keeps tensors on the CPU), or ``drop_columns(["key"])`` before handing the dataset to the trainer.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from hvt import storage
from hvt.data.config import DataConfig
from hvt.data.placement import task_resources
from hvt.data.shards import ShardSample, buffer_shuffle, iter_tar_samples, resolve_shard_urls

if TYPE_CHECKING:
    import pyarrow
    import ray.data

    from hvt.data.decode import DecodeClips

log = logging.getLogger(__name__)

try:
    from ray.data.datasource import FileBasedDatasource
except ImportError:  # pragma: no cover - ray is a hard dependency; keep the pure parts importable without it
    FileBasedDatasource = object  # type: ignore[assignment,misc]


def _meta_int(meta: dict[str, Any], name: str) -> int:
    """A size field of a sample's JSON (the shown size the shard writer recorded), 0 when absent or malformed."""
    try:
        return max(0, int(meta.get(name) or 0))
    except (TypeError, ValueError):
        return 0


def train_columns(config: DataConfig) -> list[str]:
    """The columns a training step needs from a training clip dataset of ``config``."""
    if config.device_augments(True):
        columns = ["frames", "aug", "label", "decode_ok"]
        return columns + (["static_frame", "static_aug"] if config.static_clips else [])
    return ["clip", "label", "decode_ok"] + (["static_clip"] if config.static_clips else [])


def _sample_table(samples: list[ShardSample], epoch: int | None = None) -> pyarrow.Table:
    """Raw sample rows; with an ``epoch`` column (the training epoch the rows are read for) when it is known."""
    import pyarrow as pa

    columns = {
        "key": pa.array([s.key for s in samples], pa.string()),
        "video": pa.array([s.video for s in samples], pa.large_binary()),
        "ext": pa.array([s.ext for s in samples], pa.string()),
        "label": pa.array([s.label for s in samples], pa.int64()),
        "url": pa.array([s.url for s in samples], pa.string()),
        "read_error": pa.array([s.read_error for s in samples], pa.string()),
        "height": pa.array([_meta_int(s.meta, "height") for s in samples], pa.int32()),
        "width": pa.array([_meta_int(s.meta, "width") for s in samples], pa.int32()),
    }
    if epoch is not None:
        columns["epoch"] = pa.array([epoch] * len(samples), pa.int64())
    return pa.table(columns)


class VideoShardDatasource(FileBasedDatasource):
    """WebDataset video shards as rows of raw bytes: ``key, video, ext, label, url, read_error, height, width``
    (the shown size recorded in the sample's JSON, 0 when missing).

    Never unpickles anything (only ``.json`` members are parsed). Blocks hold ``rows_per_block`` samples so a
    block of long videos stays small.
    """

    _FILE_EXTENSIONS = ["tar"]

    def __init__(
        self,
        paths: list[str],
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rows_per_block: int = 8,
        epoch: int | None = None,
        first_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        if epoch is not None and first_epoch is not None:
            raise ValueError("pass epoch (one fixed epoch) or first_epoch (one epoch per execution), not both")
        super().__init__(paths, **kwargs)
        self._shuffle_buffer = shuffle_buffer
        self._seed = seed
        self._rows_per_block = rows_per_block
        self._fixed_epoch = epoch
        self._first_epoch = first_epoch
        self._epoch = epoch or 0

    def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any):
        # The read tasks built here carry `self`, so the epoch travels with them: the within-shard shuffle changes
        # every epoch yet replays identically when Ray retries a read. Which epoch: a fixed ``epoch``; else
        # ``first_epoch`` + the execution index (one execution per epoch, counted from the run's start or resume:
        # Ray's own index restarts at 0 after a restart); else Ray's execution index alone.
        context = kwargs.get("data_context", args[1] if len(args) > 1 else None)
        executions = int(getattr(context, "_execution_idx", 0) or 0)
        if self._fixed_epoch is not None:
            self._epoch = self._fixed_epoch
        elif self._first_epoch is not None:
            self._epoch = self._first_epoch + executions
            if self._shuffle is not None:  # the shard order a dataset built for this one epoch would have
                self._shuffle = _file_shuffle(self._seed, self._epoch)
        else:
            self._epoch = executions
        return super().get_read_tasks(parallelism, *args, **kwargs)

    def _read_stream(self, f: Any, path: str) -> Iterator[pyarrow.Table]:
        samples: Iterator[ShardSample] = iter_tar_samples(f, path)
        if self._shuffle_buffer > 1:
            rng = np.random.default_rng([self._seed, zlib.crc32(path.rsplit("/", 1)[-1].encode()), self._epoch])
            samples = buffer_shuffle(samples, self._shuffle_buffer, rng)
        epoch = None if self._fixed_epoch is None and self._first_epoch is None else self._epoch
        rows: list[ShardSample] = []
        for sample in samples:
            rows.append(sample)
            if len(rows) >= self._rows_per_block:
                yield _sample_table(rows, epoch)
                rows = []
        if rows:
            yield _sample_table(rows, epoch)


def _pyarrow_filesystem(urls: list[str], filesystem: Any) -> tuple[list[str], Any]:
    """Paths and a pyarrow filesystem for Ray: local paths as they are, fsspec URLs through ``FSSpecHandler``."""
    import pyarrow.fs as pafs

    if filesystem is not None and not isinstance(filesystem, pafs.FileSystem):  # an fsspec filesystem
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    remote = [u for u in urls if not storage.is_local(u)]
    if not remote:
        return [u[len("file://") :] if u.startswith("file://") else u for u in urls], filesystem
    protocols = {u.split("://", 1)[0] for u in remote}
    if len(remote) != len(urls) or len(protocols) != 1:
        raise ValueError(
            f"shard URLs mix stores ({sorted(protocols)} and local); put a dataset's shards in one store"
        )
    fs, _ = storage.get_fs(remote[0])
    paths = [storage.get_fs(u)[1] for u in urls]
    if filesystem is None:
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    return paths, filesystem


def read_shards(
    source: str | list[str],
    split: str,
    config: DataConfig,
    *,
    training: bool,
    filesystem: Any = None,
    epoch: int | None = None,
    first_epoch: int | None = None,
    decode_resource: str | None = None,
) -> ray.data.Dataset:
    """Rows of raw samples (``key, video, ext, label, url, read_error``, and ``epoch`` when it is known);
    shuffled when ``training``: by ``(seed, epoch)`` when ``epoch`` is given, by ``(seed, first_epoch + k)`` at
    the dataset's k-th execution when ``first_epoch`` is, else anew at every execution."""
    import ray.data

    urls = resolve_shard_urls(source, split)
    paths, pa_fs = _pyarrow_filesystem(urls, filesystem)
    datasource = VideoShardDatasource(
        paths,
        filesystem=pa_fs,
        shuffle=_file_shuffle(config.seed, epoch) if training else None,
        shuffle_buffer=config.shuffle_buffer if training else 0,
        seed=config.seed,
        rows_per_block=config.rows_per_block,
        epoch=epoch,
        first_epoch=first_epoch,
    )
    resources = task_resources(decode_resource, config.read_cpus)
    return ray.data.read_datasource(datasource, override_num_blocks=len(paths), num_cpus=config.read_cpus,
                                    ray_remote_args={"resources": resources} if resources else None)


def _file_shuffle(seed: int, epoch: int | None) -> Any:
    from ray.data import FileShuffleConfig

    if epoch is None:
        return FileShuffleConfig(seed=seed, reseed_after_execution=True)
    return FileShuffleConfig(seed=zlib.crc32(f"{seed}:{epoch}".encode()), reseed_after_execution=False)


def build_clip_dataset(
    source: str | list[str],
    split: str,
    config: DataConfig,
    *,
    training: bool,
    filesystem: Any = None,
    decoder: type[DecodeClips] | None = None,
    epoch: int | None = None,
    first_epoch: int | None = None,
    decode_resource: str | None = None,
) -> ray.data.Dataset:
    """Dataset of clip rows (schema in the module docstring) for ``TorchTrainer(datasets={...})``.

    ``source``: a dataset version URL (folder holding ``manifest.json``; local path or fsspec URL such as
    ``s3://bucket/datasets/k200/v1``) or a list of shard URLs. ``filesystem``: optional fsspec or pyarrow
    filesystem (credentials, endpoint) for remote stores. ``decoder``: the decoder class, built per batch in a Ray
    task (benchmarks subclass it to add timing columns); None: :class:`hvt.data.decode.DecodeClips`, imported by the
    decode tasks alone (read tasks and split coordinators then never import torch). ``epoch``: the training epoch this dataset is for; then the shard order, the
    within-shard shuffle and every clip's augmentation are functions of ``(config.seed, epoch, sample key)``, so a
    run (or a resumed one) replays exactly; None: fresh randomness at every execution. ``first_epoch``: one
    dataset for a whole run, each execution (iteration) of it the next epoch, from ``first_epoch`` (a resumed
    run passes the epoch it resumes at): the same rows, order and augmentation as one dataset per epoch, built
    and split once (Ray Train's usual pattern, one split coordinator for the run). ``decode_resource``: the custom
    resource read and decode tasks request (``hvt.data.placement``: ``"decode"`` keeps them on decode nodes);
    None: any node with free CPUs.
    """
    import ray.data

    samples = read_shards(source, split, config, training=training, filesystem=filesystem, epoch=epoch,
                          first_epoch=first_epoch, decode_resource=decode_resource)
    decoder_kwargs: dict[str, Any] = {"config": config, "training": training}
    if epoch is not None:
        decoder_kwargs["epoch"] = epoch
    # Ray tasks, not an actor pool: a decoder holds no state worth keeping (it is built per batch in well under a
    # millisecond), and tasks run in Ray's pooled worker processes, which stay warm from one execution to the next,
    # where an actor pool starts (and imports into) new processes at every epoch's execution of the dataset.
    return samples.map_batches(
        _decode_batch,
        fn_kwargs={"decoder": decoder, "decoder_kwargs": decoder_kwargs},
        batch_size=config.decode_batch_rows,
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=config.decode_workers),
        num_cpus=config.decode_cpus,
        zero_copy_batch=True,
        **({"resources": task_resources(decode_resource, config.decode_cpus)} if decode_resource else {}),
    )


def _decode_batch(
    batch: dict[str, np.ndarray], decoder: type[DecodeClips] | None, decoder_kwargs: dict[str, Any]
) -> dict[str, np.ndarray]:
    """One ``map_batches`` call of the decode stage: a fresh ``decoder(**decoder_kwargs)`` applied to ``batch``."""
    if decoder is None:
        from hvt.data.decode import DecodeClips

        decoder = DecodeClips
    return decoder(**decoder_kwargs)(batch)


try:
    from ray.data.collate_fn import NumpyBatchCollateFn as _CollateBase
except ImportError:  # pragma: no cover
    _CollateBase = object  # type: ignore[assignment,misc]


class ClipBatchCollate(_CollateBase):
    """``iter_torch_batches(collate_fn=ClipBatchCollate(device))``: every column a tensor, ``key`` a list of str.

    Because one column is a list, Ray does not move the batch itself: pass the training device here (e.g.
    ``ray.train.torch.get_device()``) and the tensors arrive there, still uint8 (``normalize_clips`` next).
    """

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import warnings

        import torch

        out: dict[str, Any] = {}
        for name, column in batch.items():
            if column.dtype == object or column.dtype.kind in "US":
                out[name] = [str(v) for v in column]
                continue
            with warnings.catch_warnings():  # read-only views of Ray's object store; never written to
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.as_tensor(column)
            out[name] = tensor.to(self.device, non_blocking=True) if self.device is not None else tensor
        return out


collate_clips = ClipBatchCollate()
"""Ready-made ``ClipBatchCollate()`` that leaves tensors on the CPU."""


def split_decode_failures(batch: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Drop the rows with ``decode_ok == False`` from a batch; return the kept batch and how many were dropped.

    Works on numpy or torch batches; list columns (``key``) are filtered too. Sum the counts over the epoch (and
    across workers) to report ``data/decode_failures``.
    """
    ok = batch["decode_ok"]
    ok_np = ok.cpu().numpy() if hasattr(ok, "cpu") else np.asarray(ok)
    failed = int((~ok_np.astype(bool)).sum())
    if failed == 0:
        return batch, 0
    kept: dict[str, Any] = {}
    index = np.flatnonzero(ok_np)
    for name, column in batch.items():
        if isinstance(column, list):
            kept[name] = [column[i] for i in index]
        elif hasattr(column, "index_select"):
            import torch

            kept[name] = column.index_select(0, torch.as_tensor(index, device=column.device))
        else:
            kept[name] = column[index]
    return kept, failed
