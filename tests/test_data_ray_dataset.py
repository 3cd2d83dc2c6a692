"""The Ray path end to end on real clips: shards -> read tasks -> decode actor pool -> torch batches."""


import numpy as np
import pytest
import torch
from shared_data import shared_path

from hvt.data import ClipBatchCollate, DataConfig, DeviceAugment, build_clip_dataset, split_decode_failures
from hvt.data.testing import FakeSample, write_version

CLIPS = [
    "kinetics/mmaction2__demo_demo.mp4",
    "kinetics/ask-anything__making_cake.mp4",
    "kinetics/decord__examples_flipping_a_pancake.mkv",
    "ucf101/tiny-ucf101__v_Basketball_g01_c01.avi",
    "kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4",
]


@pytest.fixture
def version(tmp_path):
    videos = shared_path("realdata", "videos")
    good = [
        FakeSample(f"clip{i}", (videos / p).read_bytes(), i, ext=p.rsplit(".", 1)[1])
        for i, p in enumerate(CLIPS)
    ]
    corrupt = FakeSample("corrupt", (videos / "other/decord__tests_test_data_corrupted.mp4").read_bytes(), 2)
    truncated = FakeSample("truncated", good[0].video[:30000], 3)
    # 4x16 asks the corrupt file (50 frames in its header, ~25 decodable) for frame 32: it fails every time
    shards = [[good[0], corrupt, good[1]], [good[2], good[3], truncated, good[4]]]
    return write_version(str(tmp_path / "v1"), {"train": shards}, [f"class{i}" for i in range(5)])


@pytest.fixture
def local_ray(shared_ray):
    """The test process's local Ray (tests/conftest.py: shared_ray)."""


def _train_config(frame_interval: int) -> DataConfig:
    """4 frames at ``frame_interval``, 112 crops, two decode tasks of 2 rows, a within-shard shuffle of 4."""
    return DataConfig(
        num_frames=4, frame_interval=frame_interval, crop_size=112, train_short_side=(128, 160),
        test_short_side=128, decode_workers=2, decode_cpus=0.5, decode_batch_rows=2, shuffle_buffer=4,
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_training_dataset_streams_labelled_clips_and_counts_bad_samples(version, local_ray):
    config = _train_config(frame_interval=16)
    ds = build_clip_dataset(version, "train", config, training=True)
    augment = DeviceAugment(config)  # the default placement: rows carry frames, the trainer augments
    seen, failed = {}, 0
    for batch in ds.iter_torch_batches(batch_size=3, collate_fn=ClipBatchCollate()):
        assert batch["frames"].shape[1:] == (4, *config.transfer_size, 3) and "static_clip" not in batch
        kept, n_failed = split_decode_failures(batch)
        failed += n_failed
        if not kept["key"]:
            continue
        clips = augment.to_uint8(kept["frames"], kept["aug"]).numpy()
        statics = augment.static_0_255(kept["frames"], kept["static_frame"], kept["static_aug"])
        statics = statics.to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
        assert clips.shape[1:] == (4, 112, 112, 3) and statics.shape == clips.shape
        for i, key in enumerate(kept["key"]):
            seen[key] = int(kept["label"][i])
            clip, static = clips[i], statics[i]
            # real content, not the zero fill of a failed row (random augmentation can make a crop nearly
            # flat, so only ask for some variation)
            assert clip.any() and clip.std() > 0 and all(np.array_equal(static[t], static[0]) for t in range(4))
    assert seen == {f"clip{i}": i for i in range(len(CLIPS))}  # every good clip once, with its label
    assert failed == 2  # the corrupt and the truncated sample, skipped and counted exactly


def _split_epoch(splits, batch_size: int = 2) -> list[list[tuple]]:
    """One epoch of every split of ``splits`` (iterated at once, as the training workers do): per split, its rows
    as ``(key, aug bytes, frames checksum)``."""
    import threading
    import zlib

    rows: list[list[tuple]] = [[] for _ in splits]

    def consume(i: int) -> None:
        for batch in splits[i].iter_batches(batch_size=batch_size, batch_format="numpy"):
            for j, key in enumerate(batch["key"]):
                rows[i].append((str(key), batch["aug"][j].tobytes(), zlib.crc32(batch["frames"][j].tobytes())))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(splits))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return rows


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_run_long_dataset_replays_the_per_epoch_datasets(version, local_ray):
    """``first_epoch=e``: the k-th iteration of one dataset, split once, gives every worker exactly the rows, order,
    frames and augmentation that a dataset built for epoch e + k gives it (what a run that builds a split per epoch
    trained on, and what a run resumed at epoch e must replay)."""
    from hvt.train.worker_data import split_streams

    config = _train_config(frame_interval=4)

    def split(workers: int, **epochs):
        dataset = build_clip_dataset(version, "train", config, training=True, **epochs)
        dataset = dataset.select_columns(["key", "frames", "aug"])
        dataset.context.execution_options.preserve_order = True
        return split_streams(dataset, workers, equal=True)

    for workers in (2, 1):  # one worker iterates the dataset itself, without a split coordinator
        built = [_split_epoch(split(workers, epoch=epoch)) for epoch in (2, 3, 4, 5)]
        run_long = split(workers, first_epoch=2)
        replayed = [_split_epoch(run_long) for _ in range(4)]
        for epoch, (got, want) in enumerate(zip(replayed, built, strict=True), start=2):
            assert got == want, f"{workers} worker(s), epoch {epoch}: the run-long dataset differs from its epoch's"
        assert built[0] != built[1]  # the epochs really differ (order or augmentation), so the match means something
        # 7 samples (the two bad ones included): equal shares of 3 for two workers, all 7 for one
        assert [len(rows) for rows in built[0]] == ([3, 3] if workers == 2 else [7])
