"""Clip sampling: the 8x32x1 rule, random offsets for training, centred for test, short videos as mmaction2."""

import numpy as np
import pytest

from hvt.data import ClipSampler, DataConfig, eval_clip_offsets, frame_indices, train_clip_offsets


def test_train_offsets_cover_the_valid_range_and_stay_inside():
    rng = np.random.default_rng(0)
    span, n = 8 * 32, 300  # a 10 s Kinetics clip: 45 valid start frames
    offsets = np.array([train_clip_offsets(n, span, 1, rng)[0] for _ in range(2000)])
    assert offsets.min() == 0 and offsets.max() == n - span  # every valid start is reachable ...
    assert len(np.unique(offsets)) == n - span + 1  # ... and only those
    inds = ClipSampler(8, 32, 1)(n, True, rng)
    assert inds.shape == (1, 8) and inds.max() < n
    assert np.all(np.diff(inds[0]) == 32)


def test_train_multi_clip_offsets_fall_in_their_own_segment():
    rng = np.random.default_rng(1)
    n, span, clips = 1000, 8 * 4, 4
    run = (n - span + 1) // clips
    for _ in range(200):
        offsets = train_clip_offsets(n, span, clips, rng)
        assert np.all(offsets >= np.arange(clips) * run) and np.all(offsets < (np.arange(clips) + 1) * run)


def test_eval_offset_is_centred_and_deterministic():
    n, span = 300, 256
    (offset,) = eval_clip_offsets(n, span, 1)
    inds = ClipSampler(8, 32, 1)(n, training=False)
    first, last = inds[0, 0], inds[0, -1] + 32  # the clip covers [first, last)
    assert abs(first - (n - last)) <= 1  # as much video before the clip as after it
    assert offset == first == 22
    np.testing.assert_array_equal(inds, ClipSampler(8, 32, 1)(n, training=False))
    # three test clips: centres of three equal runs, increasing
    assert eval_clip_offsets(1000, 256, 3).tolist() == [124, 372, 620]


def test_short_video_wraps_around_like_mmaction2():
    sampler = ClipSampler(8, 32, 1)
    # the real 32-frame test clip at 8x32: offset 0 and every index wraps to frame 0
    for training in (True, False):
        inds = sampler(32, training, np.random.default_rng(0))
        assert inds.tolist() == [[0] * 8]
    # 100 frames: offset 0, indices modulo 100
    assert sampler(100, False).tolist() == [[0, 32, 64, 96, 28, 60, 92, 24]]
    assert sampler(100, True, np.random.default_rng(3)).tolist() == [[0, 32, 64, 96, 28, 60, 92, 24]]


def test_repeat_last_keeps_the_last_frame_in_range():
    inds = ClipSampler(8, 32, 1, out_of_bound="repeat_last")(100, False)
    assert inds.tolist() == [[0, 32, 64, 96, 96, 96, 96, 96]]


def test_video_exactly_one_span_long_starts_at_zero():
    assert train_clip_offsets(256, 256, 1, np.random.default_rng(0)).tolist() == [0]
    assert eval_clip_offsets(256, 256, 1).tolist() == [0]
    assert frame_indices(np.array([0]), 256, 8, 32).max() == 224


def test_sampling_notation_parses():
    cfg = DataConfig.for_sampling("16x4x3", crop_size=112, train_short_side=(128, 160), test_short_side=128)
    assert (cfg.num_frames, cfg.frame_interval, cfg.num_clips) == (16, 4, 3)
    assert cfg.sampling == "16x4x3"
    assert cfg.clip_shape(training=False) == (3, 16, 112, 112, 3)
    assert DataConfig().clip_shape(training=True) == (8, 224, 224, 3)
    with pytest.raises(ValueError, match="of the form"):
        DataConfig.for_sampling("8-32-1")
    with pytest.raises(ValueError, match="larger than"):
        DataConfig(crop_size=300)
