"""TrainConfig: one object from CLI flags to the loop; deterministic run names; the LR schedule."""

from __future__ import annotations

import argparse

import pytest

from hvt.commands.train import add_train_config_arguments, train_config_from_args
from hvt.config import OptimConfig, TrainConfig
from hvt.errors import InputError
from hvt.train.schedule import warmup_cosine_factor


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_build_the_config(tmp_path):
    cfg = train_config_from_args(
        _args("--store", str(tmp_path), "--epochs", "3", "--sampling", "16x4x1", "--workers", "1",
              "--model-override", "keep_rate=0.3")
    )
    assert cfg.optim.epochs == 3
    assert (cfg.data.num_frames, cfg.data.frame_interval, cfg.data.num_clips) == (16, 4, 1)
    assert cfg.scaling.num_workers == 1
    assert cfg.model.overrides == {"keep_rate": 0.3}
    # survives the trip to a Ray worker as plain JSON
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_bad_flags_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="--sampling '8-32'"):
        train_config_from_args(_args("--store", str(tmp_path), "--sampling", "8-32"))
    with pytest.raises(InputError, match="--config .*not found"):
        train_config_from_args(_args("--config", str(tmp_path / "missing.json")))
    with pytest.raises(InputError, match="epochs"):
        train_config_from_args(_args("--store", str(tmp_path), "--epochs", "0"))


def test_run_name_is_deterministic_and_ignores_where_it_runs():
    a = TrainConfig(store="/tmp/a")
    b = TrainConfig(store="s3://bucket/b", scaling={"max_failures": 9})
    c = TrainConfig(optim={"lr": 0.5})
    assert a.resolved_run_name("v1") == b.resolved_run_name("v1")
    assert a.resolved_run_name("v1") != c.resolved_run_name("v1")
    assert a.resolved_run_name("v1") != a.resolved_run_name("v2")


def test_unsafe_names_rejected():
    with pytest.raises(ValueError, match="dataset_name"):
        TrainConfig(dataset_name="../x")


def test_warmup_then_cosine():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.1}
    assert warmup_cosine_factor(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, **kw) == pytest.approx(0.55)
    assert warmup_cosine_factor(110, **kw) == pytest.approx(0.1)
    values = [warmup_cosine_factor(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_static_clip_class_loss_can_be_switched_off():
    import torch

    from hvt.train.loop import compute_loss

    class Out:
        logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # right on the real clip, wrong on the static one
        motion_logits = None
        ponder_loss = torch.zeros(())

    y = torch.tensor([0, 0])
    motion_y = torch.tensor([1, 0])  # real, static
    paper = compute_loss(Out(), y, motion_y, TrainConfig(optim={"static_class_loss_weight": 1.0}))
    motion_only = compute_loss(Out(), y, motion_y, TrainConfig(optim={"static_class_loss_weight": 0.0}))
    assert motion_only["ce"] < 0.05 < paper["ce"]


def test_static_class_loss_weight_follows_the_recipe_and_the_flag(tmp_path):
    """Scratch (the default, for the synthetic set whose class lives only in motion) leaves static clips out of
    the class loss; the paper's fine-tuning counts them fully; --static-class-loss-weight overrides either."""
    assert OptimConfig().static_class_loss_weight == OptimConfig.scratch().static_class_loss_weight == 0.0
    assert OptimConfig.paper_finetune().static_class_loss_weight == 1.0
    store = ("--store", str(tmp_path))
    assert train_config_from_args(_args(*store)).optim.static_class_loss_weight == 0.0
    assert train_config_from_args(_args(*store, "--recipe", "paper-finetune")).optim.static_class_loss_weight == 1.0
    given = _args(*store, "--recipe", "paper-finetune", "--static-class-loss-weight", "0.25")
    assert train_config_from_args(given).optim.static_class_loss_weight == 0.25


def test_the_model_takes_its_clip_geometry_from_the_data_config(tmp_path):
    from hvt.model import get_config

    cfg = train_config_from_args(_args("--store", str(tmp_path), "--sampling", "4x2x1", "--crop-size", "112",
                                       "--model", "haltingvt-micro-g03-b10"))
    built = get_config(cfg.model.name, **cfg.model_overrides())
    assert (built.num_frames, built.img_size) == (4, 112) == (cfg.data.num_frames, cfg.data.crop_size)
    # an override that agrees is accepted; one that disagrees is refused, naming both
    agreeing = {**cfg.model_dump(mode="json"), "model": {"name": cfg.model.name, "overrides": {"img_size": 112}}}
    assert TrainConfig.model_validate(agreeing).model_overrides()["img_size"] == 112
    clashing = {**agreeing, "model": {"name": cfg.model.name, "overrides": {"num_frames": 8}}}
    with pytest.raises(ValueError, match=r"model.overrides.num_frames=8 disagrees .*data.num_frames=4"):
        TrainConfig.model_validate(clashing)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("keep_rat=0.3", "unknown override 'keep_rat'"),
        ("keep_rate=1.5", "keep_rate values must be numbers in"),
        ('keep_rate="half"', "keep_rate values must be numbers in"),
        ("keep_rate=[0.5,0.7]", "only the last Glimpser block may keep fewer"),
        ("halted_token_mode=drop", "halted_token_mode"),
    ],
)
def test_bad_model_overrides_fail_where_parameters_enter(tmp_path, override, message):
    """Before any Ray worker exists: the CLI turns them into one-line InputErrors naming the key."""
    with pytest.raises(InputError, match=message) as caught:
        train_config_from_args(_args("--store", str(tmp_path), "--model-override", override))
    assert "\n" not in str(caught.value)


def test_augment_on_flag_sets_the_placement_and_overrides_the_config_file(tmp_path):
    import argparse
    import json

    from hvt.commands.train import add_train_config_arguments, train_config_from_args

    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"data": {"augment_on": "device"}}))
    assert train_config_from_args(parser.parse_args(["--store", str(tmp_path)])).data.augment_on == "device"
    chosen = train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--config", str(config),
                                                       "--augment-on", "decode"]))
    assert chosen.data.augment_on == "decode"
    with pytest.raises(SystemExit):
        parser.parse_args(["--augment-on", "gpu"])
