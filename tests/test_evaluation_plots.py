"""Evaluation plots: valid PNGs whose titles say what they show and whose embedded data is what was drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hvt.evaluation import plots
from hvt.evaluation.report import render_report


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_tokens_per_layer_bars_follow_the_data():
    tokens = [129.0, 129.0, 65.0, 30.5]
    plot = plots.tokens_per_layer_plot(tokens, glimpser_depth=2, tokens_in=129)
    title, data = plots.read_plot_data(plot.png)
    assert title == plot.title and "Tokens kept per block" in title
    assert data["tokens_per_layer"] == tokens and data["blocks"] == [1, 2, 3, 4]
    # the drawing itself changes with the data: halving the last bar changes the picture
    other = plots.tokens_per_layer_plot([129.0, 129.0, 65.0, 15.0], glimpser_depth=2, tokens_in=129)
    assert _pixels(plot.png).shape == _pixels(other.png).shape
    assert not np.array_equal(_pixels(plot.png), _pixels(other.png))


def test_halting_histogram_shares_skip_the_glimpser_dropped_bin():
    plot = plots.halting_depth_plot([0, 0, 0, 30, 90], glimpser_depth=2)
    title, data = plots.read_plot_data(plot.png)
    assert "Halting depth" in title
    assert data["counts"] == [0, 0, 30, 90]
    assert data["shares"] == pytest.approx([0.0, 0.0, 0.25, 0.75])


def test_halting_maps_shade_dropped_patches():
    frames = np.full((4, 32, 32, 3), 200, np.uint8)
    depth = np.zeros((4, 4, 4))
    depth[:, :2] = 3  # top half halted at block 3, bottom half dropped by the Glimpser
    depth[:, :1] = 4
    plot = plots.halting_maps_plot([plots.HaltingMapClip(frames, depth, "clip")], depth=4, glimpser_depth=2)
    title, data = plots.read_plot_data(plot.png)
    assert "Halting maps" in title and "dropped by the Glimpser" in title
    [clip] = data["clips"]
    assert clip["dropped_share"] == pytest.approx(0.5)
    assert clip["mean_depth_of_kept"] == pytest.approx(3.5)
    assert np.array(clip["depth"]).shape == (4, 4, 4)
    assert _pixels(plot.png).mean() > 0


def test_upsample_repeats_each_patch_over_its_pixels():
    grid = np.array([[1, 2], [3, 4]])
    big = plots._upsample(grid, 4, 4)
    assert big.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_accuracy_vs_gflops_with_one_model_has_the_dense_marker():
    plot = plots.accuracy_vs_gflops_plot(
        [plots.AccuracyPoint("m v1", 0.8, 0.012, highlight=True)],
        eval_set="synth/v1/val", dense_gflops=0.03, no_halting_gflops=0.02,
    )
    title, data = plots.read_plot_data(plot.png)
    assert "top-1 vs GFLOPs" in title and "synth/v1/val" in title
    assert data["points"] == [{"label": "m v1", "top1": 0.8, "gflops": 0.012, "highlight": True}]
    assert data["dense_gflops"] == 0.03


def test_report_embeds_plots_with_captions():
    text = render_report(title="m", metrics={}, classes=["a"], lineage={},
                         plots=[("tokens_per_layer.png", "Tokens kept per block"), "extra.png"])
    assert "![Tokens kept per block](tokens_per_layer.png)" in text
    assert "![extra.png](extra.png)" in text
