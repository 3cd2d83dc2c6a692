"""Decoding real clips from memory: shapes, labels, both transforms, and bad samples skipped and counted."""

from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_path

from hvt.data import DataConfig, DecodeClips, VideoDecodeError, load_clip_from_bytes, load_clip_from_path


def _videos() -> Path:
    return shared_path("realdata", "videos")


REAL_CLIPS = {  # name -> (path under videos/, label used in the test)
    "landscape": ("kinetics/mmaction2__demo_demo.mp4", 3),
    "portrait": ("kinetics/ask-anything__making_cake.mp4", 1),
    "avi_mpeg4": ("ucf101/mmaction2__tests_data_test.avi", 7),
    "mkv": ("kinetics/decord__examples_flipping_a_pancake.mkv", 0),
    "32_frames": ("kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4", 4),
    "1080p_avi": ("other/mmaction2__tools_data_skeleton_S001C001P001R001A001_rgb.avi", 9),
}


@pytest.fixture(scope="module")
def batch():
    videos = _videos()
    keys, data, labels = [], [], []
    for name, (path, label) in REAL_CLIPS.items():
        keys.append(name)
        data.append((videos / path).read_bytes())
        labels.append(label)
    corrupt = (videos / "other/decord__tests_test_data_corrupted.mp4").read_bytes()
    truncated = data[0][: len(data[0]) // 3]
    keys += ["corrupt", "truncated", "unreadable_member"]
    data += [corrupt, truncated, data[0]]
    labels += [5, 6, -1]
    read_error = [""] * (len(keys) - 1) + ["no .json member"]
    return {
        "key": np.array(keys, dtype=object),
        "video": np.array(data, dtype=object),
        "label": np.array(labels),
        "read_error": np.array(read_error, dtype=object),
    }


@pytest.mark.parametrize("training,augment_on", [(True, "decode"), (False, "decode"), (False, "device")],
                         ids=["train", "test", "test-device"])
def test_real_clips_decode_to_224_with_labels_and_bad_samples_are_counted(batch, training, augment_on):
    decode = DecodeClips(DataConfig(augment_on=augment_on), training=training, rng_nonce=0)
    out = decode(batch)
    n_good = len(REAL_CLIPS)
    assert out["clip"].shape == (n_good + 3, 8, 224, 224, 3) and out["clip"].dtype == np.uint8
    assert out["label"].dtype == np.int64 and out["label"].tolist() == batch["label"].tolist()
    assert out["key"].tolist() == batch["key"].tolist()
    assert out["decode_ok"].tolist() == [True] * n_good + [False] * 3
    assert (decode.decoded, decode.failed) == (n_good, 3)
    assert not out["clip"][n_good:].any()  # failed rows are zero-filled
    for i in range(n_good):
        assert out["clip"][i].std() > 5, f"{batch['key'][i]} decoded to a flat clip"
    assert ("static_clip" in out) == training
    if training:
        for i in range(n_good):
            static, clip = out["static_clip"][i], out["clip"][i]
            assert all(np.array_equal(static[t], static[0]) for t in range(8))
            assert not any(np.array_equal(static[0], clip[t]) for t in range(8))  # augmented as a clip of its own


def test_device_placement_ships_fixed_size_frames_and_parameters_only(batch):
    """augment_on=device: frames at the one transfer size (portrait ones transposed), a parameter row per view,
    the static clip as an index; nothing clip-sized is shipped twice."""
    config = DataConfig()
    decode = DecodeClips(config, training=True, rng_nonce=0)
    heights = np.array([0] * len(batch["key"]), np.int32)  # no shard metadata: decoded as stored, rescaled here
    out = decode({**batch, "height": heights, "width": heights})
    n_good = len(REAL_CLIPS)
    ht, wt = config.transfer_size
    assert set(out) == {"frames", "aug", "static_frame", "static_aug", "label", "key", "decode_ok"}
    assert out["frames"].shape == (n_good + 3, 8, ht, wt, 3) and out["frames"].dtype == np.uint8
    assert out["aug"].shape == out["static_aug"].shape == (n_good + 3, 9 + 2 * config.randaugment_n)
    assert out["static_frame"].shape == (n_good + 3,) and 0 <= out["static_frame"].min() <= out["static_frame"].max() < 8
    assert out["decode_ok"].tolist() == [True] * n_good + [False] * 3 and not out["frames"][n_good:].any()
    for i in range(n_good):
        assert out["frames"][i].std() > 5
        assert not np.array_equal(out["aug"][i], out["static_aug"][i])  # the static clip has draws of its own


def test_eval_transform_is_deterministic_and_multi_view_shapes():
    path = _videos() / REAL_CLIPS["portrait"][0]
    cfg = DataConfig()
    a = load_clip_from_path(str(path), cfg)
    b = load_clip_from_bytes(path.read_bytes(), cfg, training=False)
    assert a.shape == (8, 224, 224, 3) and np.array_equal(a, b)
    small = DataConfig.for_sampling(
        "4x16x2", crop_size=64, train_short_side=(72, 88), test_short_side=72, test_crops=3
    )
    views = load_clip_from_bytes(path.read_bytes(), small, training=False)
    assert views.shape == (6, 4, 64, 64, 3)  # 2 clips x 3 crops
    assert not np.array_equal(views[0], views[3])  # the two clips come from different times


def test_corrupt_and_truncated_bytes_raise_decode_error():
    videos = _videos()
    cfg = DataConfig()
    with pytest.raises(VideoDecodeError):
        load_clip_from_bytes((videos / "other/decord__tests_test_data_corrupted.mp4").read_bytes(), cfg)
    with pytest.raises(VideoDecodeError):
        load_clip_from_bytes((videos / REAL_CLIPS["landscape"][0]).read_bytes()[:4096], cfg)
    with pytest.raises(VideoDecodeError, match="empty"):
        load_clip_from_bytes(b"", cfg)
