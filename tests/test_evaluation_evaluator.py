"""The one evaluator: view averaging, GFLOPs per video and per view, device choice, views parsing."""

from __future__ import annotations

import pytest
import torch

from hvt.config import TrainConfig
from hvt.data import DataConfig
from hvt.evaluation.evaluate import SpendAccumulator, evaluate_batches
from hvt.evaluation.evaluator import DeviceError, Evaluator, parse_views, select_device, with_views
from hvt.evaluation.metrics import ClipMetrics
from hvt.model import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _videos(b: int, v: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, v, 8, 32, 32, 3), generator=g, dtype=torch.uint8)


def test_views_are_averaged_as_probabilities_and_gflops_summed():
    torch.manual_seed(0)
    model = create_model("haltingvt-nano-g05-b10", num_classes=7, halt_center=1.0).eval()
    clips = _videos(2, 6)
    scores = Evaluator(model, max_clips=4).score(clips)  # 12 views in chunks of 4
    assert scores.views == 6 and scores.probs.shape == (2, 7) and scores.view_gflops.shape == (12,)
    with torch.no_grad():  # independent: each view alone, softmax, mean
        x = clips.float().div(127.5).sub(1.0).permute(0, 1, 5, 2, 3, 4)  # [B, V, 3, T, H, W]
        outs = [model(x[i]) for i in range(2)]
    expect = torch.stack([o.logits.softmax(-1).mean(0) for o in outs])
    assert torch.allclose(scores.probs, expect, atol=1e-6)
    assert torch.allclose(scores.gflops, torch.stack([o.gflops.sum() for o in outs]).float())
    assert len(set(scores.view_gflops.tolist())) > 1  # views halt differently: spent GFLOPs differ

    metrics, spend = ClipMetrics(7), SpendAccumulator()
    batch = {"clip": clips, "label": torch.tensor([1, 2]), "decode_ok": torch.tensor([True, True])}
    evaluate_batches(Evaluator(model), [batch], metrics, spend)
    out = metrics.compute()
    assert out["views"] == 6 and out["clips"] == 2
    assert out["gflops_per_video_mean"] == pytest.approx(float(scores.gflops.mean()), rel=1e-5)
    assert out["gflops_per_view_mean"] == pytest.approx(float(scores.view_gflops.mean()), rel=1e-5)
    assert out["gflops_per_video_mean"] == pytest.approx(6 * out["gflops_per_view_mean"], rel=1e-5)
    summary = spend.summary()
    assert sum(summary["halting_depth_histogram"]) == int((scores.halting_depth > 0).sum())
    assert summary["tokens_per_layer"][0] == 1 + 8 * 16  # per view: class token + 8 frames x 16 patches


def test_views_parsing_and_data_config():
    assert parse_views("4x3") == (4, 3)
    cfg = with_views(DataConfig(), "2x3")
    assert (cfg.num_clips, cfg.test_crops, cfg.num_views(False)) == (2, 3, 6)
    assert with_views(cfg, None) is cfg
    for bad in ("4x2", "0x1", "4", "x3"):
        with pytest.raises(ValueError, match="CLIPSxCROPS|1 or 3"):
            parse_views(bad)
    assert TrainConfig(val_views="4x3").val_views == "4x3"
    with pytest.raises(ValueError):
        TrainConfig(val_views="4x2")
    assert TrainConfig().fingerprint() != TrainConfig(val_views="2x3").fingerprint()
    with pytest.raises(ValueError, match="val_views"):  # several training clips per video: refused, say what to do
        TrainConfig(data=DataConfig(num_clips=4))
    three_crops = TrainConfig(data=DataConfig(test_crops=3))  # validation then takes the data config's 3 crops
    assert with_views(three_crops.data, three_crops.val_views).num_views(False) == 3


def test_gpu_is_refused_where_there_is_none():
    assert select_device(False).type == "cpu"
    if torch.cuda.is_available():
        assert select_device(True).type == "cuda"
    else:
        with pytest.raises(DeviceError, match="--gpu"):
            select_device(True)
