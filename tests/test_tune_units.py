"""Sweeps and tracking without Ray: the Pareto front and the budget pick, the search space into trial configs,
the `hvt sweep` flags, and the tracking hooks' failure handling (an unreachable server: one warning, no error)."""

from __future__ import annotations

import logging

import pytest
from servers import free_port

from hvt.config import ModelSpec, OptimConfig, TrackingSpec, TrainConfig
from hvt.errors import InputError
from hvt.tune.pareto import TrialPoint, front_plot, front_table, pareto_front, pick_under_budget
from hvt.tune.space import PAPER_POINTS, SweepConfig, parse_grid, trial_config
from hvt.tune.tracking import Tracker, epoch_metrics, evaluation_metrics, flatten_params, resolve_tracking_uri

MODEL = "haltingvt-nano-g05-b10"


def _point(trial: str, top1: float | None, gflops: float | None, status: str = "evaluated") -> TrialPoint:
    return TrialPoint(trial, {"keep_rate": 0.5}, top1, gflops, status)


def test_front_keeps_exactly_the_undominated_points_cheapest_first():
    points = [
        _point("a", 0.50, 1.0),
        _point("b", 0.60, 2.0),
        _point("c", 0.55, 2.5),   # dominated by b (less accurate, dearer)
        _point("d", 0.70, 4.0),
        _point("e", 0.70, 5.0),   # dominated by d (as accurate, dearer)
        _point("f", 0.90, 0.5, status="stopped"),  # stopped early: never on the front
        _point("g", None, None, status="error"),
    ]
    front = pareto_front(points)
    assert [p.trial for p in front] == ["a", "b", "d"]


def test_budget_picks_the_most_accurate_front_point_within_it():
    front = pareto_front([_point("a", 0.50, 1.0), _point("b", 0.60, 2.0), _point("d", 0.70, 4.0)])
    assert pick_under_budget(front, 3.0).trial == "b"
    assert pick_under_budget(front, 2.0).trial == "b"  # the budget is inclusive
    assert pick_under_budget(front, None).trial == "d"
    assert pick_under_budget(front, 0.5) is None
    table = front_table(front, pick_under_budget(front, 3.0), {"b": "v7"})
    (row,) = [line for line in table.splitlines() if "**pick**" in line]
    assert "| b |" in row and "v7" in row and "0.600" in row


def test_front_plot_is_a_png():
    points = [_point("a", 0.5, 1.0), _point("b", 0.6, 2.0), _point("c", 0.4, 3.0, status="stopped")]
    png = front_plot(points, pareto_front(points), title="t", budget_gflops=1.5, picked=points[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_default_space_is_the_papers_four_variants_and_grids_are_combinations():
    base = TrainConfig(model=ModelSpec(name=MODEL))
    assert SweepConfig(base=base).points() == [dict(p) for p in PAPER_POINTS]
    grid = parse_grid(["keep_rate=0.3,0.7", "lr=1e-3", "lr=2e-3"])
    assert grid == {"keep_rate": [0.3, 0.7], "lr": [1e-3, 2e-3]}
    points = SweepConfig(base=base, grid=grid).points()
    assert len(points) == 4 and {"keep_rate": 0.7, "lr": 2e-3} in points


@pytest.mark.parametrize("item, message", [
    ("keep_rate", "expected KEY=V1,V2"),
    ("depth=2,3", "'depth' is not searchable"),
    ("lr=fast", "must be numbers"),
])
def test_bad_grid_flags_are_one_line_errors(item, message):
    with pytest.raises(InputError, match=message):
        parse_grid([item])


def test_a_point_the_model_refuses_fails_when_the_sweep_is_built():
    with pytest.raises(ValueError, match=r"grid point \{'keep_rate': 1.5\}"):
        SweepConfig(base=TrainConfig(model=ModelSpec(name=MODEL)), grid={"keep_rate": [1.5]})


def test_trial_config_sets_the_last_glimpser_keep_rate_beta_ponder_weight_and_lr():
    base = TrainConfig(model=ModelSpec(name=MODEL), optim=OptimConfig(lr=1e-3))
    cfg = trial_config(base, {"keep_rate": 0.3, "beta": 5.0, "ponder_weight": 1e-3, "lr": 2e-3})
    assert cfg.model.overrides == {"keep_rate": [1.0, 0.3], "halt_center": 5.0, "ponder_weight": 1e-3}
    assert cfg.optim.lr == 2e-3 and base.optim.lr == 1e-3
    from hvt.model.zoo import get_config

    built = get_config(MODEL, **cfg.model_overrides())
    assert built.keep_rate == (1.0, 0.3) and built.halt_center == 5.0 and built.ponder_weight == 1e-3
    # each point is its own run (resumable by name), the same point always the same run
    names = {trial_config(base, p).resolved_run_name("v1") for p in SweepConfig(base=base).points()}
    assert len(names) == 4
    assert trial_config(base, PAPER_POINTS[0]).resolved_run_name("v1") in names


def test_tracking_changes_no_run_name_and_sweep_names_follow_the_space():
    base = TrainConfig(model=ModelSpec(name=MODEL))
    tracked = base.model_copy(update={"tracking": TrackingSpec(tracking_uri="http://x", parent_run_id="p")})
    assert tracked.resolved_run_name("v1") == base.resolved_run_name("v1")
    one = SweepConfig(base=base, grid={"lr": [1e-3]}).resolved_name("v1")
    assert one == SweepConfig(base=tracked, grid={"lr": [1e-3]}).resolved_name("v1")
    assert one != SweepConfig(base=base, grid={"lr": [2e-3]}).resolved_name("v1")


def test_sweep_flags_build_the_sweep_config(tmp_path):
    from hvt.cli import build_parser
    from hvt.commands.sweep import sweep_config_from_args

    args = build_parser().parse_args([
        "sweep", "--store", str(tmp_path), "--dataset", "synth", "--model", MODEL, "--grid", "keep_rate=0.3,0.7",
        "--grid", "beta=5,10", "--epochs", "1", "--budget-gflops", "0.05", "--max-concurrent", "1",
        "--tracking-uri", "http://127.0.0.1:5000",
    ])
    sweep = sweep_config_from_args(args)
    assert sweep.grid == {"keep_rate": [0.3, 0.7], "beta": [5.0, 10.0]} and len(sweep.points()) == 4
    assert sweep.budget_gflops == 0.05 and sweep.max_concurrent == 1 and sweep.base.optim.epochs == 1
    assert sweep.base.tracking.tracking_uri == "http://127.0.0.1:5000" and sweep.base.dataset_name == "synth"
    # what --print-config prints reads back as the same sweep
    path = tmp_path / "sweep.json"
    path.write_text(sweep.model_dump_json())
    again = sweep_config_from_args(build_parser().parse_args(["sweep", "--config", str(path)]))
    assert again == sweep


def test_tracking_is_off_without_a_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingSpec()) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(TrackingSpec()) == "http://127.0.0.1:1"
    assert resolve_tracking_uri(TrackingSpec(tracking_uri="http://h:2")) == "http://h:2"
    assert not Tracker(None).enabled and Tracker(None).open_run("e", "k", "v", run_name="r", tags={}) is None


def test_params_and_metrics_are_flattened_and_filtered():
    assert flatten_params({"optim": {"lr": 0.001}, "model": {"overrides": {}}, "seed": 0}) == {
        "optim.lr": "0.001", "model.overrides": "{}", "seed": "0"}
    epoch = epoch_metrics({"epoch": 1, "step": 9, "val_top1": 0.5, "train_mfu": 0.1, "flag": True,
                           "train_loss": float("nan")})
    assert epoch == {"val_top1": 0.5, "train_mfu": 0.1}
    evaluated = evaluation_metrics({"val_top1": 0.5, "gflops_mean": 0.02, "halting_depth_histogram": [0, 2, 2],
                                    "tokens_per_layer": [1, 2]})
    assert evaluated == {"eval_top1": 0.5, "eval_gflops_mean": 0.02, "eval_halting_depth_mean": 1.5}


def test_unreachable_tracking_server_is_one_warning_and_never_an_error(caplog, monkeypatch):
    """Every hook the training run calls, against a port nothing listens on: none raises, one warning in all."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="hvt.tune.tracking")
    tracker = Tracker(uri)
    run_id = tracker.open_run("exp", "hvt.run_name", "run-a", run_name="run-a", tags={}, params={"a": "1"})
    assert run_id is None and not tracker.enabled
    for step in range(3):
        tracker.log_metrics("some-run", {"val_top1": 0.5}, step)
    tracker.log_files("some-run", {"report.md": b"# r"})
    tracker.set_tags("some-run", {"x": 1})
    tracker.end_run("some-run")
    assert not Tracker(uri).enabled  # the whole process stops calling that server
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert uri in warnings[0].getMessage() and "training goes on" in warnings[0].getMessage()
