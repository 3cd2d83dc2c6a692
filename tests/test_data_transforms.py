"""Augmentation: one draw per clip, identical on every frame; static clips; normalisation for the device."""

import numpy as np
import pytest
import torch

from hvt.data import DataConfig, make_static_clip, normalize_clips
from hvt.data.randaugment import OPS, AugOp, RandAugment, apply_op
from hvt.data.static_clips import make_static_training_clip, make_static_views
from hvt.data.transforms import eval_crop_boxes, eval_transform, random_crop_box, train_transform


def _textured_frame(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3 % 256, yy * 4 % 256, (xx + yy) * 2 % 256], -1)
    return (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", OPS)
def test_each_randaugment_op_treats_every_frame_the_same(name):
    frame = torch.from_numpy(_textured_frame()).permute(2, 0, 1)
    clip = frame.unsqueeze(0).repeat(4, 1, 1, 1).float()  # 4 identical frames
    out = apply_op(clip, AugOp(name, 0.9))
    assert out.shape == clip.shape
    for t in range(1, 4):
        torch.testing.assert_close(out[t], out[0])
    if name != "identity":
        assert not torch.equal(out, clip), f"{name} at strength 0.9 left the clip unchanged"


def test_randaugment_draws_once_per_clip():
    frame = _textured_frame()
    clip = np.repeat(frame[None], 8, axis=0)  # [T,H,W,3], all frames equal
    cfg = DataConfig(crop_size=48, train_short_side=(56, 72), test_short_side=56, randaugment_n=2, flip=True)
    changed = 0
    for seed in range(30):
        out = train_transform(clip, cfg, np.random.default_rng(seed))
        assert out.shape == (8, 48, 48, 3) and out.dtype == np.uint8
        # a per-frame draw (crop, operations, flip) would make frames differ
        assert all(np.array_equal(out[t], out[0]) for t in range(8)), (
            f"seed {seed}: frames augmented differently"
        )
        plain = train_transform(
            clip, cfg.model_copy(update={"randaugment": False}), np.random.default_rng(seed)
        )
        changed += not np.array_equal(out, plain)
    assert changed >= 20  # RandAugment really does something on most clips


def test_randaugment_is_reproducible_from_the_rng():
    clip = torch.from_numpy(np.stack([_textured_frame(seed=s) for s in range(3)])).permute(0, 3, 1, 2)
    ra = RandAugment(2, 9)
    a = ra(clip, np.random.default_rng(7))
    b = ra(clip, np.random.default_rng(7))
    assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_train_crop_box_stays_inside_and_scales_with_short_side():
    cfg = DataConfig()
    rng = np.random.default_rng(0)
    for h, w in [(240, 426), (426, 320), (1080, 1920), (256, 340)]:
        for _ in range(50):
            box = random_crop_box(h, w, cfg, rng)
            assert 0 <= box.top and box.top + box.height <= h and 0 <= box.left and box.left + box.width <= w
            # the box is 224 pixels of a frame rescaled to short side 256..320
            assert 224 / 320 * min(h, w) - 1 <= box.height <= 224 / 256 * min(h, w) + 1


def test_eval_crop_is_centred_and_three_crops_span_the_long_side():
    cfg = DataConfig()
    (box,) = eval_crop_boxes(256, 340, cfg)
    assert (box.height, box.width) == (224, 224)
    assert (
        abs(box.left - (340 - box.left - box.width)) <= 1 and abs(box.top - (256 - box.top - box.height)) <= 1
    )
    left, centre, right = eval_crop_boxes(256, 340, cfg.model_copy(update={"test_crops": 3}))
    assert left.left == 0 and right.left + right.width == 340 and centre == box
    top, _, bottom = eval_crop_boxes(426, 320, cfg.model_copy(update={"test_crops": 3}))  # portrait
    assert top.top == 0 and bottom.top + bottom.height == 426
    views = eval_transform(
        np.repeat(_textured_frame(256, 340)[None], 2, 0), cfg.model_copy(update={"test_crops": 3})
    )
    assert len(views) == 3 and all(v.shape == (2, 224, 224, 3) for v in views)


def test_static_clip_is_one_frame_repeated():
    clip = np.stack([np.full((6, 6, 3), t, np.uint8) for t in range(8)])
    static = make_static_clip(clip, 5)
    assert static.shape == clip.shape and static.dtype == np.uint8
    assert np.all(static == 5)
    views = np.stack([clip, clip + 10])
    statics = make_static_views(views, np.random.default_rng(0))
    for v in range(2):
        assert all(np.array_equal(statics[v, t], statics[v, 0]) for t in range(8))
        assert any(np.array_equal(statics[v, 0], views[v, t]) for t in range(8))  # a frame of that very view


def test_static_training_clip_is_one_frame_augmented_as_its_own_clip():
    """As the released RawFrameFakeVidDataset: one sampled frame, repeated, with its own augmentation draws."""
    frames = np.stack([_textured_frame(96, 128, seed=t) for t in range(8)])
    cfg = DataConfig(crop_size=48, train_short_side=(56, 72), randaugment_n=2, flip=True)
    static = make_static_training_clip(frames, cfg, np.random.default_rng(0))
    assert static.shape == (8, 48, 48, 3) and static.dtype == np.uint8
    assert all(np.array_equal(static[t], static[0]) for t in range(8))
    # the drawn frame went through train_transform with the draws that follow the frame choice
    rng = np.random.default_rng(0)
    index = int(rng.integers(8))
    assert np.array_equal(static[0], train_transform(frames[index : index + 1], cfg, rng)[0])
    # not a frame cut from the augmented real clip: its crop/RandAugment draws are its own
    real = train_transform(frames, cfg, np.random.default_rng(1))
    assert not any(np.array_equal(static[0], real[t]) for t in range(8))


def test_normalize_clips_to_channels_first_in_minus_one_one():
    batch = torch.zeros(2, 8, 4, 5, 3, dtype=torch.uint8)
    batch[..., 0] = 255  # red channel full
    out = normalize_clips(batch)
    assert out.shape == (2, 3, 8, 4, 5) and out.dtype == torch.float32
    assert torch.all(out[:, 0] == 1.0) and torch.all(out[:, 1:] == -1.0)
    assert normalize_clips(torch.zeros(2, 3, 8, 4, 5, 3, dtype=torch.uint8)).shape == (2, 3, 3, 8, 4, 5)
    with pytest.raises(ValueError, match="expected uint8 clips"):
        normalize_clips(torch.zeros(2, 3, 8, 4, 5))
