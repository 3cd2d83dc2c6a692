"""Markdown evaluation report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, (int, float)) else "n/a"


def render_report(
    *,
    title: str,
    metrics: dict[str, Any],
    classes: list[str],
    lineage: dict[str, Any],
    plots: Sequence[str | tuple[str, str]] | None = None,
) -> str:
    """A short human-readable report: headline metrics, per-class accuracy, cost, plots and lineage.

    ``plots``: image files beside the report, each a file name or ``(file name, caption)``."""
    lines = [f"# {title}", ""]
    lines += [
        "| metric | value |",
        "|---|---|",
        f"| val top-1 | {_pct(metrics.get('val_top1'))} |",
        f"| val top-5 | {_pct(metrics.get('val_top5'))} |",
        f"| chance (top-1) | {_pct(1.0 / max(1, len(classes)))} |",
        f"| mean GFLOPs per clip (as spent) | {metrics.get('gflops_mean', float('nan')):.4f} |",
        *[f"| GFLOPs per clip, {q} percentile | {metrics[key]:.4f} |"
          for q, key in (("50th", "gflops_p50"), ("90th", "gflops_p90"), ("99th", "gflops_p99")) if key in metrics],
        f"| val clips | {metrics.get('clips', 0)} |",
        f"| decode failures | {metrics.get('decode_failures', 0)} |",
        *([f"| train decode failures (last epoch) | {metrics['train_decode_failures']} |"]
          if "train_decode_failures" in metrics else []),
        *([f"| damaged shards left out | {len(metrics['skipped_shards'])} ({metrics.get('skipped_samples', 0)} "
           f"samples): {'; '.join(metrics['skipped_shards'])} |"] if metrics.get("skipped_shards") else []),
        f"| eval clips/s | {metrics.get('clips_per_s', 0.0):.1f} (on {metrics.get('eval_workers', 1)} worker(s)) |",
        "",
    ]
    per_class = metrics.get("per_class_top1")
    if per_class:
        lines += ["## Per-class top-1", "", "| class | top-1 |", "|---|---|"]
        lines += [f"| {name} | {_pct(acc)} |" for name, acc in zip(classes, per_class, strict=False)]
        lines.append("")
    tokens = metrics.get("tokens_per_layer")
    if tokens:
        lines += ["## Tokens processed per layer (mean per clip)", "", "| layer | tokens |", "|---|---|"]
        lines += [f"| {i + 1} | {t:.1f} |" for i, t in enumerate(tokens)]
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
    for plot in plots or []:
        name, caption = (plot, plot) if isinstance(plot, str) else plot
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    lines += champion_decision_lines(metrics.get("promotion"))
    lines += ["## Lineage", ""]
    lines += [f"- **{key}**: `{value}`" for key, value in sorted(lineage.items()) if not isinstance(value, dict)]
    lines.append("")
    return "\n".join(lines)


def _figure(score: dict[str, Any] | None, key: str, fmt: str) -> str:
    value = (score or {}).get(key)
    return format(value, fmt) if isinstance(value, (int, float)) else "n/a"


def champion_decision_lines(decision: dict[str, Any] | None) -> list[str]:
    """The champion decision (``registry.ChampionDecision.as_record()``): both models' figures on the one set
    they were compared on, the policy, and the reason."""
    if not decision:
        return []
    challenger, champion = decision.get("challenger") or {}, decision.get("champion")
    lines = ["## Champion decision", "", f"Compared on `{decision.get('eval_set')}` "
             f"(evaluation set `{str(decision.get('eval_set_sha256', ''))[:16]}`).", "",
             "| model | val top-1 | GFLOPs per clip | scored |", "|---|---|---|---|",
             f"| this version | {_figure(challenger, 'top1', '.4f')} | {_figure(challenger, 'gflops_per_clip', '.4f')} "
             f"| {challenger.get('how', '')} |"]
    if champion:
        lines.append(f"| champion {champion.get('version', '')} | {_figure(champion, 'top1', '.4f')} | "
                     f"{_figure(champion, 'gflops_per_clip', '.4f')} | {champion.get('how', '')} |")
    policy = decision.get("policy") or {}
    budget = policy.get("max_gflops_per_clip")
    lines += ["", f"**{decision.get('decision', '')}**: {decision.get('reason', '')}", "",
              f"Policy: at least {float(policy.get('min_gain_top1', 0.0)):.2f} top-1 points better"
              + (f", at most {budget:g} GFLOPs per clip." if budget else ", no GFLOPs budget."), ""]
    return lines
