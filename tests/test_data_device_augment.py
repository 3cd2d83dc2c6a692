"""Augmentation on the training device (augment_on=device) against the decode-side CPU path it replaces.

The decode-side path (hvt.data.transforms / hvt.data.randaugment, the latter held against PIL in
test_data_randaugment_reference.py) is the reference: the same draws must give the same clips, every RandAugment
operation must give the CPU operation's pixels per clip of a batch, and the geometry must follow the drawn box
(read back from a coordinate-coded frame). The static clip is checked on ../shared/inputs videos whose frames
carry their index (tests/framecode.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from framecode import inputs, read_code
from shared_data import shared_path

from hvt.data import DataConfig, DecodeClips
from hvt.data.decode import ClipLoader
from hvt.data.device_augment import DeviceAugment, apply_op_batched, augment_row
from hvt.data.randaugment import OPS, AugOp, apply_op
from hvt.data.transforms import PARAM_FIELDS, ClipAugment, CropBox, pack_params

torch.set_num_threads(1)
F = {name: i for i, name in enumerate(PARAM_FIELDS)}


@pytest.fixture(scope="module")
def real_clips() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (bytes, shown (height, width)): 4:3, 16:9 and portrait Kinetics clips."""
    videos = shared_path("realdata", "videos") / "kinetics"
    return {"4x3": ((videos / "mmaction2__demo_demo.mp4").read_bytes(), (256, 340)),
            "16x9": ((videos / "ask-anything__yoga.mp4").read_bytes(), (320, 568)),
            "portrait": ((videos / "ask-anything__making_cake.mp4").read_bytes(), (426, 320))}


@pytest.mark.parametrize("name", ["4x3", "16x9", "portrait"])
def test_same_draws_give_the_decode_side_clips(real_clips, name):
    """A sample's clip and static clip from the device placement equal the decode-side (CPU) ones, drawn from the
    same stream, to resampling: the box, RandAugment operations, flip and static frame are the same draws."""
    data, shown = real_clips[name]
    device_cfg = DataConfig(flip=True)  # RandAugment n=2 m=9, 224 crops from short side 256-320
    decode_cfg = device_cfg.model_copy(update={"augment_on": "decode"})
    clip_err, static_err = [], []
    for seed in range(6):
        reference = ClipLoader(decode_cfg).load(data, True, np.random.default_rng(seed))
        row = ClipLoader(device_cfg).load_frames(data, np.random.default_rng(seed), shown)
        ours = augment_row(row, device_cfg)
        np.testing.assert_array_equal(row["frame_indices"], reference["frame_indices"])
        clip_err.append(np.abs(ours["clip"].astype(float) - reference["clip"]).mean())
        static_err.append(np.abs(ours["static_clip"].astype(float) - reference["static_clip"]).mean())
    # the decoder's own rescale to the transfer size is the only difference: a few grey levels on average
    assert max(clip_err) < 6 and max(static_err) < 6, (clip_err, static_err)


@pytest.mark.parametrize("name", OPS)
def test_each_batched_operation_matches_the_cpu_operation_per_clip(name):
    """Three clips of different content and strengths in one batch: each gets exactly what the CPU operation
    (PIL-checked) gives it alone, statistics over its own frames only."""
    gen = torch.Generator().manual_seed(1)
    clips = torch.stack([torch.randint(lo, hi, (4, 3, 20, 30), generator=gen) for lo, hi in
                         [(0, 256), (60, 120), (100, 256)]]).float()  # fmt: skip
    levels = torch.tensor([0.9, -0.5, 0.3])
    ours = apply_op_batched(clips.clone(), name, levels)
    for i in range(3):
        torch.testing.assert_close(ours[i], apply_op(clips[i], AugOp(name, float(levels[i]))), atol=1e-3, rtol=0)


def _coordinate_frames(h: int, w: int, t: int = 2) -> np.ndarray:
    """Frames whose red channel is the column and green the row, scaled to 0-255 (one value per pixel centre)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frame = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), np.full_like(xx, 128)], -1).round().astype(np.uint8)
    return np.repeat(frame[None], t, 0)


def test_crop_box_flip_and_transposition_follow_the_drawn_parameters():
    """Read the source coordinates back out of augmented coordinate frames: the crop spans the drawn box (in
    source pixels), the flip mirrors it, a portrait frame stored transposed comes back upright, a frame rescaled
    to fit the canvas (or already fitting) maps back to its own pixels."""
    from hvt.data.transforms import draw_train_params, placement

    cfg = DataConfig(crop_size=64, train_short_side=(64, 80), test_short_side=64, flip=True, randaugment=False)
    ht, wt = cfg.transfer_size
    augment = DeviceAugment(cfg)
    for src_h, src_w in [(120, 200), (200, 120), (64, 90), (90, 64)]:
        transposed, (ph, pw) = placement(src_h, src_w, (ht, wt))
        assert transposed == (src_h > src_w) and ph == ht  # short side at the canvas height (these fit)
        coords = _coordinate_frames(src_h, src_w)
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(coords).permute(0, 3, 1, 2).float(),
            size=(pw, ph) if transposed else (ph, pw), mode="bilinear", align_corners=False)
        placed = resized.round().permute(0, 2, 3, 1)
        placed = (placed.transpose(1, 2) if transposed else placed).to(torch.uint8)
        canvas = torch.zeros(1, 2, ht, wt, 3, dtype=torch.uint8)
        canvas[0, :, :ph, :pw] = placed
        rng = np.random.default_rng(0)
        flips = 0
        for _ in range(40):
            params = draw_train_params(src_h, src_w, cfg, rng)
            out = augment.to_uint8(canvas, pack_params(params, 0, (ph, pw))[None])[0, 0].numpy().astype(float)
            xs, ys = out[..., 0] * (src_w - 1) / 255, out[..., 1] * (src_h - 1) / 255
            left, right = xs[:, :3].mean(), xs[:, -3:].mean()
            box = params.box
            if params.flip:
                left, right = right, left
                flips += 1
            assert abs(min(left, right) - (box.left + 1.5 * box.width / 64 - 0.5)) < 2.5
            assert abs(max(left, right) - (box.left + box.width - 1.5 * box.width / 64 - 0.5)) < 2.5
            assert (xs[:, -3:].mean() < xs[:, :3].mean()) == params.flip  # mirrored exactly when drawn
            assert abs(ys[:3].mean() - (box.top + 1.5 * box.height / 64 - 0.5)) < 2.5  # upright, right rows
        assert 8 <= flips <= 32  # about half of 40


def test_one_randaugment_draw_per_clip_shared_by_its_frames():
    """Clips of identical frames stay identical frame to frame, and each clip of a batch gets its own draw."""
    cfg = DataConfig(crop_size=48, train_short_side=(56, 72), test_short_side=56, flip=True)
    ht, wt = cfg.transfer_size
    gen = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (ht, wt, 3), generator=gen, dtype=torch.uint8)
    frames = frame.expand(12, 4, ht, wt, 3).contiguous()  # 12 clips of 4 identical frames
    rng = np.random.default_rng(3)
    from hvt.data.randaugment import RandAugment
    from hvt.data.transforms import draw_train_params

    ra = RandAugment(cfg.randaugment_n, cfg.randaugment_m)
    params = [draw_train_params(ht, wt, cfg, rng, ra) for _ in range(12)]
    rows = np.stack([pack_params(p, cfg.randaugment_n, (ht, wt)) for p in params])
    out = DeviceAugment(cfg).to_uint8(frames, rows)
    for i in range(12):
        assert all(torch.equal(out[i, t], out[i, 0]) for t in range(4)), f"clip {i}: frames augmented differently"
        alone = DeviceAugment(cfg).to_uint8(frames[i : i + 1], rows[i : i + 1])[0]
        assert torch.equal(out[i], alone)  # batching never mixes one clip's draw into another
    assert len({tuple(op.name for op in p.ops) for p in params}) > 3


def test_static_clip_is_one_sampled_frame_repeated_and_augmented_as_a_clip_of_its_own():
    """frame_index_h264.mp4 carries each frame's index in its pixels: the static clip shows, on all T frames,
    the index of one of the frames sampled for the real clip, the one ``static_frame`` names."""
    data = (inputs() / "frame_index_h264.mp4").read_bytes()
    # a crop as tall as the frame keeps the code readable (the code spans the central half of the width)
    cfg = DataConfig.for_sampling("8x4x1", crop_size=96, train_short_side=(96, 96), test_short_side=96,
                                  randaugment=False, flip=False, transfer_aspect=4 / 3)
    chosen = set()
    for seed in range(8):
        row = ClipLoader(cfg).load_frames(data, np.random.default_rng(seed), (120, 160))
        out = augment_row(row, cfg)
        codes = [read_code(f) for f in out["static_clip"]]
        assert len(set(codes)) == 1 and codes[0] == row["frame_indices"][row["static_frame"]]
        assert [read_code(f) for f in out["clip"]] == row["frame_indices"].tolist()
        chosen.add(int(row["static_frame"]))
    assert len(chosen) >= 3  # drawn, not always the same position
    # with random crops, the static clip's crop is its own draw, not the real clip's frame copied
    wide = cfg.model_copy(update={"train_short_side": (96, 160)})
    differs = 0
    for seed in range(8):
        row = ClipLoader(wide).load_frames(data, np.random.default_rng(seed), (120, 160))
        out = augment_row(row, wide)
        differs += not np.array_equal(out["static_clip"][0], out["clip"][int(row["static_frame"])])
    assert differs >= 6


@pytest.mark.parametrize("augment_on", ["decode", "device"])
def test_a_training_step_runs_with_either_placement(augment_on):
    """A tiny HaltingVT trains one epoch on batches of the decode actor's rows, in either placement."""
    from hvt.config import ModelSpec, OptimConfig, TrainConfig
    from hvt.model import create_model
    from hvt.train.loop import make_optimization
    from hvt.train.step import train_one_epoch

    data = (inputs() / "frame_index_h264.mp4").read_bytes()
    cfg = TrainConfig(
        model=ModelSpec(name="haltingvt-micro-g03-b10"),
        data=DataConfig.for_sampling("4x4x1", crop_size=32, train_short_side=(32, 40), test_short_side=32,
                                     augment_on=augment_on),
        optim=OptimConfig(epochs=1, batch_size=3, warmup_epochs=0),
    )
    actor = DecodeClips(cfg.data, training=True, rng_nonce=0)
    rows = actor({"key": np.array([f"k{i}" for i in range(6)], object), "video": np.array([data] * 6, object),
                  "label": np.arange(6) % 2, "height": np.full(6, 120), "width": np.full(6, 160)})
    assert ("frames" in rows) == (augment_on == "device")
    batches = [{k: torch.from_numpy(v[s : s + 3]) for k, v in rows.items() if k != "key"} for s in (0, 3)]
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=2, img_size=32, patch_size=16, num_frames=4)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer, scheduler = make_optimization(model, cfg, steps_per_epoch=2)
    stats = train_one_epoch(model, batches, optimizer, scheduler, cfg, torch.device("cpu"), with_static=True)
    assert stats.seen == 6 and stats.optimizer_steps == 2 and np.isfinite(stats.sums["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_failed_rows_carry_valid_placeholder_parameters():
    cfg = DataConfig()
    row = DecodeClips(cfg, training=True, rng_nonce=0)({"key": np.array(["bad"], object),
                                                        "video": np.array([b"not a video"], object),
                                                        "label": np.array([0])})
    assert not row["decode_ok"][0] and not row["frames"].any()
    aug = row["aug"][0]
    assert aug[F["src_h"]] > 0 and aug[F["src_w"]] > 0  # a dropped row can never divide by zero
    expected = pack_params(ClipAugment(*cfg.transfer_size, CropBox(0, 0, 224, 224), (), False), cfg.randaugment_n,
                           cfg.transfer_size)
    np.testing.assert_array_equal(aug, expected)


def test_several_training_views_per_video_keep_their_layout():
    """num_clips > 1: frames [B, V, T, ...] and parameters [B, V, P] give clips [B, V, 3, T, c, c], each view its
    own draw, as the decode-side clips [B, V, T, c, c, 3] normalised would be laid out."""
    data = (inputs() / "frame_index_h264.mp4").read_bytes()
    cfg = DataConfig.for_sampling("4x4x2", crop_size=32, train_short_side=(32, 48), test_short_side=32)
    rows = DecodeClips(cfg, training=True, rng_nonce=0)(
        {"key": np.array(["a", "b"], object), "video": np.array([data, data], object), "label": np.array([0, 1]),
         "height": np.array([120, 120]), "width": np.array([160, 160])})
    assert rows["frames"].shape == (2, 2, 4, *cfg.transfer_size, 3) and rows["aug"].shape[:2] == (2, 2)
    frames = torch.from_numpy(rows["frames"])
    augment = DeviceAugment(cfg)
    clips = augment(frames, rows["aug"])
    statics = augment.static(frames, rows["static_frame"], rows["static_aug"])
    assert clips.shape == statics.shape == (2, 2, 3, 4, 32, 32)
    assert -1.0 <= float(clips.min()) and float(clips.max()) <= 1.0
    assert not torch.equal(clips[0, 0], clips[0, 1])  # two views of one video: two draws
    assert torch.equal(statics[..., 0, :, :], statics[..., 3, :, :])  # static: the same frame at every time step
