"""The accuracy-compute Pareto front of a sweep, the pick under a GFLOPs budget, its plot and its report.

A point is on the front when no other point is at least as accurate for at most as many GFLOPs per clip and
strictly better in one of the two. Both figures come from one evaluation set (the sweep's), GFLOPs as spent.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialPoint:
    """One trial of a sweep: its search-space values and, once evaluated, val top-1 and GFLOPs per clip.

    ``status``: ``evaluated`` (trained to the end and scored on the sweep's evaluation set), ``stopped`` (the
    scheduler stopped it early: figures of its last epoch's validation), ``error``.
    """

    trial: str
    params: dict[str, float]
    top1: float | None
    gflops: float | None
    status: str
    run_name: str = ""
    epochs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items()))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def dominates(a: TrialPoint, b: TrialPoint) -> bool:
    """Whether ``a`` is at least as accurate as ``b`` for at most its GFLOPs, and strictly better in one."""
    assert a.top1 is not None and a.gflops is not None and b.top1 is not None and b.gflops is not None
    return a.top1 >= b.top1 and a.gflops <= b.gflops and (a.top1 > b.top1 or a.gflops < b.gflops)


def pareto_front(points: Sequence[TrialPoint]) -> list[TrialPoint]:
    """The evaluated points no other evaluated point dominates, cheapest first (equal figures: both kept)."""
    scored = [p for p in points if p.status == "evaluated" and p.top1 is not None and p.gflops is not None]
    front = [p for p in scored if not any(dominates(q, p) for q in scored if q is not p)]
    return sorted(front, key=lambda p: (p.gflops, -p.top1, p.trial))


def pick_under_budget(front: Sequence[TrialPoint], budget_gflops: float | None) -> TrialPoint | None:
    """The most accurate front point spending at most ``budget_gflops`` per clip (all of them when None);
    between equally accurate ones the cheaper. None when no point fits the budget."""
    fitting = [p for p in front if budget_gflops is None or (p.gflops is not None and p.gflops <= budget_gflops)]
    if not fitting:
        return None
    return max(fitting, key=lambda p: (p.top1, -(p.gflops or 0.0)))


def front_table(front: Sequence[TrialPoint], picked: TrialPoint | None,
                versions: dict[str, str] | None = None) -> str:
    """The front as a markdown table, cheapest first; the budget's pick marked."""
    keys = sorted({k for p in front for k in p.params})
    head = ["", "GFLOPs/clip", "val top-1", *keys, "trial", "registered"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in front:
        mark = "**pick**" if picked is not None and point.trial == picked.trial else ""
        values = [_short(point.params.get(k, "")) for k in keys]
        lines.append("| " + " | ".join([mark, f"{point.gflops:.4f}", f"{point.top1:.3f}", *values, point.trial,
                                         (versions or {}).get(point.trial, "-")]) + " |")
    return "\n".join(lines)


def front_plot(points: Sequence[TrialPoint], front: Sequence[TrialPoint], *, title: str,
               budget_gflops: float | None = None, picked: TrialPoint | None = None) -> bytes:
    """PNG: every trial (evaluated ones as dots, early-stopped ones as crosses at their last epoch's figures),
    the front as a line, the budget as a vertical line and its pick circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    evaluated = [p for p in points if p.status == "evaluated" and p.top1 is not None and p.gflops is not None]
    stopped = [p for p in points if p.status == "stopped" and p.top1 is not None and p.gflops is not None]
    if evaluated:
        ax.scatter([p.gflops for p in evaluated], [p.top1 for p in evaluated], color="tab:blue", label="trial")
    if stopped:
        ax.scatter([p.gflops for p in stopped], [p.top1 for p in stopped], color="tab:gray", marker="x",
                   label="stopped early (last epoch)")
    if front:
        ax.plot([p.gflops for p in front], [p.top1 for p in front], color="tab:red", marker="o",
                label="Pareto front")
        for point in front:
            ax.annotate(point.label, (point.gflops, point.top1), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    if budget_gflops is not None:
        ax.axvline(budget_gflops, color="tab:green", linestyle="--", label=f"budget {budget_gflops:g} GFLOPs")
    if picked is not None:
        ax.scatter([picked.gflops], [picked.top1], s=220, facecolors="none", edgecolors="tab:green",
                   linewidths=2, label="pick")
    ax.set_xlabel("GFLOPs per clip (as spent)")
    ax.set_ylabel("val top-1")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def sweep_report(*, name: str, eval_set: str, points: Sequence[TrialPoint], front: Sequence[TrialPoint],
                 picked: TrialPoint | None, budget_gflops: float | None, versions: dict[str, str],
                 promotion: str, plot_name: str) -> str:
    """The sweep's markdown report: the front table, the budget's pick and its promotion decision, every
    trial, the plot."""
    budget = f"{budget_gflops:g} GFLOPs per clip" if budget_gflops is not None else "none (the most accurate point)"
    lines = [
        f"# Sweep {name}",
        "",
        f"Evaluation set: `{eval_set}`; {len(points)} trials, "
        f"{sum(p.status == 'evaluated' for p in points)} evaluated, {sum(p.status == 'stopped' for p in points)} "
        f"stopped early, {sum(p.status == 'error' for p in points)} failed.",
        "",
        "## Pareto front (val top-1 vs GFLOPs per clip)",
        "",
        front_table(front, picked, versions) if front else "_no evaluated trial_",
        "",
        f"Budget: {budget}. "
        + (f"Pick: trial {picked.trial} ({picked.label}): top-1 {picked.top1:.3f} at {picked.gflops:.4f} "
           f"GFLOPs/clip, registered as {versions.get(picked.trial, '-')}; {promotion}."
           if picked is not None else "No front point fits the budget: no candidate for champion."),
        "",
        "## Every trial",
        "",
        "| trial | status | epochs | GFLOPs/clip | val top-1 | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for point in sorted(points, key=lambda p: p.trial):
        gflops = f"{point.gflops:.4f}" if point.gflops is not None else "-"
        top1 = f"{point.top1:.3f}" if point.top1 is not None else "-"
        lines.append(f"| {point.trial} | {point.status} | {point.epochs} | {gflops} | {top1} | {point.label} |")
    lines += ["", f"![accuracy vs GFLOPs]({plot_name})", ""]
    return "\n".join(lines)
