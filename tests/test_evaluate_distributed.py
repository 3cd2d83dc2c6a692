"""Evaluation on 2 Ray Train workers gives exactly what one process gives: accuracies synced by torchmetrics over
DDP, per-clip GFLOPs (mean and percentiles), tokens per layer and halting depths gathered from both shares, and
decode failures counted once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hvt.config import ScalingSpec
from hvt.data import DataConfig
from hvt.data.testing import FakeSample, write_version
from hvt.evaluation.distributed import evaluate_distributed
from hvt.evaluation.evaluate import evaluate_model
from hvt.ingest.synthetic import MOTION_CLASSES, encode_h264, render_clip
from hvt.model import create_model
from hvt.model.zoo import model_from_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

CLASSES = list(MOTION_CLASSES[:3])
DATA = DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                  decode_workers=1, decode_cpus=0.5)


@pytest.fixture(scope="module")
def val_version(tmp_path_factory) -> str:
    samples = []
    for i in range(10):
        clip = render_clip(CLASSES[i % 3], np.random.default_rng(i), frames=16, width=32, height=32)
        samples.append(FakeSample(f"clip{i:02d}", encode_h264(clip, fps=8), i % 3))
    samples.append(FakeSample("broken", b"not a video at all", 1))
    shards = [samples[:4], samples[4:8], samples[8:]]  # 3 shards: the 2 workers get unequal shares
    return write_version(str(tmp_path_factory.mktemp("ds") / "v1"), {"val": shards}, CLASSES)


def _state() -> dict:
    torch.manual_seed(0)
    model = create_model("haltingvt-nano-g05-b10", num_classes=len(CLASSES), halt_center=-5.0)  # a low centre: tokens halt early
    return {"model": model.state_dict(), "model_config": model.config.to_dict()}


def test_two_workers_match_one_process(val_version, one_torch_thread):
    import ray

    from hvt.train.ray_env import ensure_ray

    ensure_ray(None)
    try:
        state = _state()
        single = evaluate_model(model_from_state(state), val_version, "val", DATA, num_classes=3, batch_size=4)
        scaling = ScalingSpec(num_workers=2, cpus_per_worker=0.5)
        spread = evaluate_distributed(state, val_version, "val", DATA, num_classes=3, scaling=scaling, batch_size=4)
    finally:
        ray.shutdown()

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
