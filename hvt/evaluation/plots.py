"""Evaluation plots as PNG bytes: tokens per block, halting-depth histogram, halting maps, accuracy vs GFLOPs.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend state), so this works in Ray
workers, Prefect tasks and threads alike. Every PNG carries its title and the numbers it draws as JSON in its
``Title`` / ``Description`` text chunks: ``read_plot_data(png)`` gives them back, so a test (or a dashboard) can
check a picture against ``metrics.json`` without reading pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

TOKENS_PER_LAYER = "tokens_per_layer.png"
HALTING_DEPTH = "halting_depth_histogram.png"
HALTING_MAPS = "halting_maps.png"
ACCURACY_VS_GFLOPS = "accuracy_vs_gflops.png"

_GLIMPSER_COLOR = "#8c8c8c"
_HALTING_COLOR = "#1f77b4"


@dataclass(frozen=True)
class Plot:
    """One rendered plot: its file name, its title, the PNG and the numbers it shows."""

    name: str
    title: str
    png: bytes
    data: dict[str, Any]


@dataclass(frozen=True)
class AccuracyPoint:
    """One model version on the accuracy-vs-GFLOPs plane (top-1 in [0, 1], mean GFLOPs per clip)."""

    label: str
    top1: float
    gflops: float
    highlight: bool = False


@dataclass(frozen=True)
class HaltingMapClip:
    """A val clip with its halting depths: ``frames`` uint8 ``[T, H, W, 3]``, ``depth`` ``[T, Hp, Wp]`` (1-based
    block where each patch halted, 0 = dropped by the Glimpser), and a caption (key, true and predicted class)."""

    frames: np.ndarray
    depth: np.ndarray
    caption: str
    extra: dict[str, Any] = field(default_factory=dict)


def _render(fig: Figure, name: str, title: str, data: dict[str, Any]) -> Plot:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=100,
        metadata={"Title": title, "Description": json.dumps(data, sort_keys=True), "Software": "hvt"},
    )
    return Plot(name=name, title=title, png=buffer.getvalue(), data=data)


def read_plot_data(png: bytes) -> tuple[str, dict[str, Any]]:
    """(title, data) stored in a PNG written by this module."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        text = dict(getattr(image, "text", {}) or image.info)
    if "Description" not in text:
        raise ValueError("this PNG carries no hvt plot data (no 'Description' text chunk)")
    return text.get("Title", ""), json.loads(text["Description"])


def tokens_per_layer_plot(
    tokens_per_layer: Sequence[float], *, glimpser_depth: int = 0, tokens_in: int | None = None
) -> Plot:
    """Bars: mean tokens (class token included) entering each block per clip. Glimpser blocks in grey, halting
    blocks in blue; ``tokens_in`` (all patches + class token) as a dashed reference line."""
    tokens = [float(t) for t in tokens_per_layer]
    blocks = list(range(1, len(tokens) + 1))
    title = "Tokens kept per block (mean per val clip)"
    fig = Figure(figsize=(max(5.0, 0.5 * len(tokens) + 2), 3.6))
    ax = fig.add_subplot()
    colors = [_GLIMPSER_COLOR if b <= glimpser_depth else _HALTING_COLOR for b in blocks]
    ax.bar(blocks, tokens, color=colors)
    if tokens_in:
        ax.axhline(tokens_in, color="black", linestyle="--", linewidth=1, label=f"all tokens ({tokens_in})")
    handles = [Patch(color=_GLIMPSER_COLOR, label="Glimpser block"), Patch(color=_HALTING_COLOR, label="halting block")]
    ax.set_xlim(0.4, len(tokens) + 0.6)
    ax.set_xticks(blocks)
    ax.set_xlabel("block")
    ax.set_ylabel("tokens entering the block")
    ax.set_title(title)
    ax.legend(handles=handles + ([ax.lines[0]] if tokens_in else []), fontsize=8, loc="lower left")
    fig.tight_layout()
    data = {"blocks": blocks, "tokens_per_layer": tokens, "glimpser_depth": glimpser_depth, "tokens_in": tokens_in}
    return _render(fig, TOKENS_PER_LAYER, title, data)


def halting_depth_plot(histogram: Sequence[int], *, glimpser_depth: int = 0) -> Plot:
    """Share of the patches that survived the Glimpser halting at each block. ``histogram[d]`` counts patches
    that halted at 1-based block ``d`` (index 0, the Glimpser-dropped ones, is not drawn); patches counted at the
    last block went through every block."""
    counts = [int(c) for c in histogram]
    depth = len(counts) - 1
    blocks = list(range(1, depth + 1))
    total = sum(counts[1:])
    shares = [counts[b] / total if total else 0.0 for b in blocks]
    title = "Halting depth: share of kept patches halting at each block"
    fig = Figure(figsize=(max(5.0, 0.5 * depth + 2), 3.6))
    ax = fig.add_subplot()
    colors = [_GLIMPSER_COLOR if b <= glimpser_depth else _HALTING_COLOR for b in blocks]
    ax.bar(blocks, shares, color=colors)
    ax.set_xticks(blocks)
    ax.set_xlim(0.4, depth + 0.6)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"block where the patch halted (block {depth} = ran through every block)")
    ax.set_ylabel("share of kept patches")
    ax.set_title(title)
    if total:
        mean_depth = sum(b * counts[b] for b in blocks) / total
        ax.axvline(mean_depth, color="black", linestyle="--", linewidth=1, label=f"mean {mean_depth:.2f}")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    data = {"blocks": blocks, "counts": counts[1:], "shares": shares, "glimpser_depth": glimpser_depth}
    return _render(fig, HALTING_DEPTH, title, data)


def _upsample(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """[Hp, Wp] -> [H, W], each patch's value repeated over its pixels."""
    rows = np.repeat(np.arange(depth.shape[0]), int(np.ceil(height / depth.shape[0])))[:height]
    cols = np.repeat(np.arange(depth.shape[1]), int(np.ceil(width / depth.shape[1])))[:width]
    return depth[np.ix_(rows, cols)]


def halting_maps_plot(
    clips: Sequence[HaltingMapClip], *, depth: int, glimpser_depth: int, max_frames: int = 8
) -> Plot:
    """One row per clip, one column per frame: the frame with each patch coloured by the block where it halted
    (dark = halted early, bright = went deep); patches the Glimpser dropped are shaded and left uncoloured."""
    import matplotlib

    if not clips:
        raise ValueError("halting maps need at least one clip")
    frames_shown = min(max_frames, min(c.frames.shape[0] for c in clips))
    title = f"Halting maps: block where each patch halted, {len(clips)} val clips (shaded = dropped by the Glimpser)"
    fig = Figure(figsize=(1.6 * frames_shown + 1.2, 1.8 * len(clips) + 0.8))
    axes = fig.subplots(len(clips), frames_shown, squeeze=False)
    low = glimpser_depth + 1 if glimpser_depth < depth else 1
    # one colour per block a patch can halt at, so the colour bar reads as block numbers
    cmap = matplotlib.colormaps["viridis"].resampled(depth - low + 1).with_extremes(bad=(0, 0, 0, 0))
    image = None
    data_clips = []
    for row, clip in enumerate(clips):
        for t in range(frames_shown):
            ax = axes[row][t]
            frame = clip.frames[t]
            height, width = frame.shape[:2]
            full = _upsample(np.asarray(clip.depth[t], dtype=float), height, width)  # [H, W]
            dropped = full == 0
            shown = frame.astype(float) / 255.0
            shown[dropped] *= 0.3
            ax.imshow(shown, interpolation="nearest")
            image = ax.imshow(
                np.ma.masked_where(dropped, full), cmap=cmap, vmin=low - 0.5, vmax=depth + 0.5, alpha=0.55,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {t}", fontsize=8)
        axes[row][0].set_ylabel(clip.caption, fontsize=7)
        kept = clip.depth[:frames_shown] > 0
        data_clips.append(
            {
                "caption": clip.caption,
                "mean_depth_of_kept": float(clip.depth[:frames_shown][kept].mean()) if kept.any() else 0.0,
                "dropped_share": float(1.0 - kept.mean()),
                "depth": np.asarray(clip.depth[:frames_shown]).astype(int).tolist(),
                **clip.extra,
            }
        )
    fig.suptitle(title, fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, ticks=list(range(low, depth + 1)))
        bar.set_label("halting block", fontsize=8)
    data = {"depth": depth, "glimpser_depth": glimpser_depth, "frames": frames_shown, "clips": data_clips}
    return _render(fig, HALTING_MAPS, title, data)


def accuracy_vs_gflops_plot(
    points: Sequence[AccuracyPoint],
    *,
    eval_set: str,
    dense_gflops: float | None = None,
    no_halting_gflops: float | None = None,
) -> Plot:
    """Val top-1 against mean GFLOPs per clip, one point per model version evaluated on ``eval_set``, with the
    dense Joint VT cost of the same backbone (and the no-halting bound) as vertical reference lines."""
    title = f"Val top-1 vs GFLOPs per clip on {eval_set}"
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for point in points:
        ax.scatter(
            [point.gflops], [100 * point.top1], s=60 if point.highlight else 30,
            color="#d62728" if point.highlight else _HALTING_COLOR, zorder=3,
        )
        ax.annotate(point.label, (point.gflops, 100 * point.top1), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    if dense_gflops:
        ax.axvline(dense_gflops, color="black", linestyle="--", linewidth=1,
                   label=f"dense Joint VT bound ({dense_gflops:.3g} G)")
    if no_halting_gflops:
        ax.axvline(no_halting_gflops, color=_GLIMPSER_COLOR, linestyle=":", linewidth=1,
                   label=f"Glimpser, no halting ({no_halting_gflops:.3g} G)")
    xs = [p.gflops for p in points] + [v for v in (dense_gflops, no_halting_gflops) if v]
    if xs:
        ax.set_xlim(0, 1.1 * max(xs))
    ax.set_ylim(0, 105)
    ax.set_xlabel("mean GFLOPs per clip (as spent)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title, fontsize=9)
    if dense_gflops or no_halting_gflops:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    data = {
        "eval_set": eval_set,
        "points": [{"label": p.label, "top1": p.top1, "gflops": p.gflops, "highlight": p.highlight} for p in points],
        "dense_gflops": dense_gflops,
        "no_halting_gflops": no_halting_gflops,
    }
    return _render(fig, ACCURACY_VS_GFLOPS, title, data)
