"""`hvt train`: train on a sharded dataset with Ray Train, then evaluate and register the result."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hvt.commands import add_config_file_arguments, emit_json, read_config_file
from hvt.commands.defaults import config_default, field_default, render_value, show_default
from hvt.errors import InputError

if TYPE_CHECKING:
    from hvt.config import TrainConfig

_SAMPLING_RE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


# flag (argparse dest) -> (section of TrainConfig, field): applied when given, shown from the field's default
CONFIG_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("epochs", "optim", "epochs"),
    ("batch_size", "optim", "batch_size"),
    ("lr", "optim", "lr"),
    ("static_class_loss_weight", "optim", "static_class_loss_weight"),
    ("workers", "scaling", "num_workers"),
    ("cpus_per_worker", "scaling", "cpus_per_worker"),
    ("min_workers", "scaling", "min_workers"),
    ("ray_address", "scaling", "ray_address"),
    ("decode_on", "scaling", "decode_on"),
    ("crop_size", "data", "crop_size"),
    ("augment_on", "data", "augment_on"),
    ("peak_tflops", "runtime", "peak_tflops"),
    ("log_every", "runtime", "log_every_steps"),
    ("checkpoint_every", "runtime", "checkpoint_every_steps"),
)
_TRAIN_CONFIG = "hvt.config:TrainConfig"


def _optim_default(key: str) -> Callable[[], str]:
    """The scratch recipe's value of ``OptimConfig.key`` (the default), and paper-finetune's where it differs."""

    def read() -> str:
        from hvt.config import OptimConfig

        scratch, paper = (getattr(OptimConfig.recipe(name), key) for name in ("scratch", "paper-finetune"))
        shown = render_value(scratch)
        return shown if scratch == paper else f"{shown}; {render_value(paper)} with --recipe paper-finetune"

    return read


def _default_recipe() -> str:
    """The named recipe that ``OptimConfig()`` (what an unset ``--recipe`` trains with) equals."""
    from typing import get_args

    from hvt.config import OptimConfig, Recipe

    return next((name for name in get_args(Recipe) if OptimConfig.recipe(name) == OptimConfig()), "none")


def _sampling_default() -> str:
    from hvt.data.config import DataConfig

    return "x".join(render_value(field_default(DataConfig, key))
                    for key in ("num_frames", "frame_interval", "num_clips"))


def add_train_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that build a ``TrainConfig`` (shared by `hvt train` and anything else that trains).

    Every value flag defaults to None ("not given", so ``--config`` and ``--recipe`` can supply it); its help shows
    the effective default, read from ``TrainConfig`` (``hvt.commands.defaults``)."""
    add_config_file_arguments(parser, "TrainConfig", "training", example="e.g. configs/demo.json")
    parser.add_argument("--store", default=None, help="store URL (default: $HVT_STORE or ./hvt-store)")
    show_default(parser.add_argument("--dataset", default=None, help="dataset name in the store"),
                 config_default(_TRAIN_CONFIG, "dataset_name"))
    parser.add_argument("--dataset-version", default=None, help="dataset version (default: newest)")
    show_default(parser.add_argument("--model", default=None, metavar="VARIANT",
                                     help="model variant to build (`hvt models` lists them)"),
                 config_default(_TRAIN_CONFIG, "model.name"))
    parser.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                        help="model override as in create_model (repeatable), e.g. keep_rate=0.5 (default: none)")
    parser.add_argument(
        "--init-from", default=None, metavar="MODEL[@REF]",
        help="start from a registered model's weights (REF: vN, latest or an alias; champion when left out), e.g. "
        "the champion fine-tuned on a new dataset version; the run and its lineage record the version (default: "
        "none: random init, or --pretrained)",
    )
    parser.add_argument("--pretrained", default=None, metavar="PATH_OR_URL",
                        help="fine-tune from these weights: a DeiT/timm ViT (the paper's init), a released HaltingVT "
                             "checkpoint or one of ours; a head of another class count is re-initialised (default: "
                             "none: random init)")
    show_default(parser.add_argument("--recipe", choices=["scratch", "paper-finetune"], default=None,
                                     help="optimiser recipe (paper-finetune: DeiT's Adam 1e-5 fine-tuning); the "
                                     "flags below override it"),
                 _default_recipe)
    for flag, key, kind, text in (
        ("--epochs", "epochs", int, "epochs"),
        ("--batch-size", "batch_size", int, "clips per worker per step"),
        ("--lr", "lr", float, "peak learning rate (after warm-up)"),
        ("--static-class-loss-weight", "static_class_loss_weight", float,
         "weight of the class loss on static fake clips: 0 where the class lives only in motion (the synthetic "
         "set), 1 as in the paper (on Kinetics one frame carries class evidence)"),
    ):
        show_default(parser.add_argument(flag, type=kind, default=None, help=text), _optim_default(key))
    show_default(parser.add_argument("--workers", type=int, default=None, help="Ray Train workers"),
                 config_default(_TRAIN_CONFIG, "scaling.num_workers"))
    parser.add_argument("--min-workers", type=int, default=None,
                        help="elastic training: run with anything from --min-workers to --workers workers (default: "
                        "none: exactly --workers)")
    show_default(parser.add_argument("--cpus-per-worker", type=float, default=None,
                                     help="CPUs each training worker reserves (fractions allowed)"),
                 config_default(_TRAIN_CONFIG, "scaling.cpus_per_worker"))
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    show_default(parser.add_argument("--sampling", default=None, metavar="FRAMESxINTERVALxCLIPS",
                                     help="temporal sampling, the paper's notation"), _sampling_default)
    show_default(parser.add_argument("--crop-size", type=int, default=None, help="training and test crop side"),
                 config_default(_TRAIN_CONFIG, "data.crop_size"))
    show_default(parser.add_argument("--augment-on", choices=["decode", "device"], default=None,
                                     help="where training clips are augmented: on the training device or by the "
                                     "decode workers (DataConfig.augment_on)"),
                 config_default(_TRAIN_CONFIG, "data.augment_on"))
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start a local Ray)")
    show_default(parser.add_argument(
        "--decode-on", choices=["auto", "decode-nodes", "any"], default=None,
        help="where Ray Data reads and decodes: auto = on nodes with the 'decode' resource when the cluster has "
        "any, else any CPU; decode-nodes = only there; any = any CPU (ScalingSpec.decode_on)",
    ), config_default(_TRAIN_CONFIG, "scaling.decode_on"))
    show_default(parser.add_argument("--seed", type=int, default=None, help="seeds the model init and data order"),
                 config_default(_TRAIN_CONFIG, "seed"))
    parser.add_argument("--skip-bad-shards", action="store_true",
                        help="leave out shards that fail their manifest sha256/count check (counted in the run's "
                        "metrics) instead of stopping with an error")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's fixed-shape parts (RuntimeSpec.compile; pays off on GPUs)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak bf16 TFLOP/s for MFU (default: known GPUs by name; none on CPU)")
    show_default(parser.add_argument("--log-every", type=int, default=None, metavar="N",
                                     help="optimiser steps between throughput/MFU lines"),
                 config_default(_TRAIN_CONFIG, "runtime.log_every_steps"))
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="also checkpoint every N optimiser steps inside an epoch, so a lost worker or spot node "
                             "costs at most N steps; the run resumes at that step (default: only at each epoch's "
                             "end)")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking server, e.g. http://127.0.0.1:5000: one MLflow run per training run "
                        "(default: $MLFLOW_TRACKING_URI; tracking off when neither is set)")
    add_promotion_arguments(parser)
    parser.add_argument("--eval-dataset", default=None, metavar="NAME[@VERSION]",
                        help="pinned evaluation set: this run and the champion are scored on its val split "
                        "(default: the training dataset's val split; no version: the newest)")


def add_promotion_arguments(parser: argparse.ArgumentParser, shown: str | None = None) -> None:
    """The promotion policy's flags (``PromotionPolicy``), shared with `hvt registry promote`; ``shown`` replaces
    the policy's own defaults in the help where another default applies."""
    policy = "hvt.registry.policy:PromotionPolicy"
    show_default(parser.add_argument("--min-gain-top1", type=float, default=None, metavar="POINTS",
                                     help="promote only a model at least this many val top-1 points better than the "
                                     "champion (and strictly better)"),
                 shown or config_default(policy, "min_gain_top1"))
    show_default(parser.add_argument("--max-gflops-per-clip", type=float, default=None, metavar="GFLOPS",
                                     help="never promote a model spending more GFLOPs per clip (one view) than this"),
                 shown or _gflops_budget_default)


def _gflops_budget_default() -> str:
    from hvt.registry.policy import PromotionPolicy

    value = field_default(PromotionPolicy, "max_gflops_per_clip")
    return "no limit" if value is None else render_value(value)


def promotion_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (a ``PromotionPolicy`` as a dict) with the flags given applied; each checked here, one line."""
    policy = dict(base or {})
    for flag, key in (("min_gain_top1", "min_gain_top1"), ("max_gflops_per_clip", "max_gflops_per_clip")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if value < 0 or (key == "max_gflops_per_clip" and value == 0):
            raise InputError(f"--{flag.replace('_', '-')} {value:g}: give a "
                             f"{'positive' if key == 'max_gflops_per_clip' else 'non-negative'} number")
        policy[key] = value
    return policy


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise InputError(f"--model-override {text!r}: expected KEY=VALUE, e.g. keep_rate=0.5")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def train_config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """The ``TrainConfig`` of the flags applied over ``base`` (default: the ``--config`` file's object)."""
    from pydantic import ValidationError

    from hvt import storage
    from hvt.config import TrainConfig

    base = read_config_file(args.config, "train") if base is None else base
    for section in ("model", "data", "optim", "scaling", "runtime", "tracking"):
        base.setdefault(section, {})
        if not isinstance(base[section], dict):
            raise InputError(f"--config {args.config}: {section!r} must be a JSON object, e.g. what "
                             "`hvt train --print-config` prints")
    if args.recipe:
        from hvt.config import OptimConfig

        base["optim"] = OptimConfig.recipe(args.recipe, **base["optim"]).model_dump(mode="json")
    base["store"] = storage.resolve_store(args.store or base.get("store"))
    if args.dataset:
        base["dataset_name"] = args.dataset
    if args.dataset_version:
        base["dataset_version"] = args.dataset_version
    if args.model:
        base["model"]["name"] = args.model
    if args.pretrained:  # a local path is made absolute: Ray workers do not share the driver's working dir
        local = "://" not in args.pretrained
        base["model"]["pretrained"] = os.path.abspath(os.path.expanduser(args.pretrained)) if local else args.pretrained
    if args.init_from:
        base["model"]["init_from"] = args.init_from
    if args.model_override:
        overrides = dict(base["model"].get("overrides", {}))
        overrides.update(_parse_override(item) for item in args.model_override)
        base["model"]["overrides"] = overrides
    for flag, section, key in CONFIG_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            base[section][key] = value
    if getattr(args, "tracking_uri", None):
        base["tracking"]["tracking_uri"] = args.tracking_uri
    if args.gpu:
        base["scaling"]["use_gpu"] = True
    if args.compile:
        base["runtime"]["compile"] = True
    if args.seed is not None:
        base["seed"] = args.seed
    if getattr(args, "skip_bad_shards", False):
        base["skip_bad_shards"] = True
    if args.eval_dataset:
        from hvt.config import parse_dataset_ref

        try:
            parse_dataset_ref(args.eval_dataset)
        except ValueError as err:
            raise InputError(f"--eval-dataset {err}") from err
        base["eval_dataset"] = args.eval_dataset
    base["promotion"] = promotion_from_args(args, base.get("promotion"))
    if args.sampling:
        match = _SAMPLING_RE.match(args.sampling)
        if not match:
            raise InputError(f"--sampling {args.sampling!r}: expected FRAMESxINTERVALxCLIPS, e.g. 8x32x1")
        frames, interval, clips = (int(g) for g in match.groups())
        base["data"].update(num_frames=frames, frame_interval=interval, num_clips=clips)
    try:
        return TrainConfig.model_validate(base)
    except ValidationError as err:
        raise InputError(f"invalid training configuration: {validation_summary(err)}") from err


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train with Ray Train, evaluate on val, register the model")
    add_train_config_arguments(parser)
    parser.add_argument("--no-register", action="store_true", help="train and evaluate only")
    parser.add_argument("--json", action="store_true", help="machine-readable summary")
    parser.set_defaults(func=run)


def print_config(config: Any) -> None:
    """Print a resolved config (a pydantic model) as the JSON that ``--config`` reads back to the same config,
    in the form of the files in configs/ (to stdout, also under ``--json``)."""
    emit_json(config.model_dump(mode="json"), indent=2)


def run(args: argparse.Namespace) -> int:
    cfg = train_config_from_args(args)
    if args.print_config:
        print_config(cfg)
        return 0
    from hvt.promotion import check_eval_dataset
    from hvt.stages import evaluate_run, register_run
    from hvt.train.trainer import run_training

    check_eval_dataset(cfg)  # a missing or mismatched pinned set fails before anything trains
    result = run_training(cfg)
    metrics, state = evaluate_run(result, cfg)
    summary: dict[str, Any] = {"run": result.run_name, "run_path": result.run_path, "metrics": metrics,
                               "data": {split: check.as_dict() for split, check in result.data_checks.items()}}
    if args.no_register:  # the MLflow run (when tracked) gets the evaluation and is closed
        from hvt.tune.tracking import record_evaluation

        record_evaluation(cfg.tracking, result.tracking_run_id, metrics, {})
    else:
        registered = register_run(result, cfg, metrics, state)
        summary["registry"] = {
            "model": registered.version.model,
            "version": registered.version.version,
            "path": registered.version.path,
            "promoted": registered.promoted,
            "reason": registered.promotion_reason,
            "promotion": registered.decision,
        }
    if args.json:
        emit_json(summary, indent=2)
    else:
        print(f"run {result.run_name}: val top-1 {metrics['val_top1']:.3f}, top-5 {metrics['val_top5']:.3f}")
        print(f"data: {metrics.get('clips', 0)} val clips evaluated, {metrics.get('decode_failures', 0)} val and "
              f"{metrics.get('train_decode_failures', 0)} train decode failures, "
              f"{len(metrics.get('skipped_shards', []))} damaged shards left out"
              + (f" ({'; '.join(metrics['skipped_shards'])})" if metrics.get("skipped_shards") else ""))
        if "registry" in summary:
            reg = summary["registry"]
            champion = "champion is now " + reg["version"] if reg.get("promoted") else "champion unchanged"
            print(f"registered {reg['model']} {reg['version']} at {reg['path']} ({reg['reason']}); {champion}")
    return 0


def validation_summary(err: Exception) -> str:
    """A pydantic ``ValidationError`` as one line: ``where: what`` for each problem, joined by ``; ``."""
    problems = []
    for item in err.errors():  # type: ignore[attr-defined]
        where = ".".join(str(part) for part in item["loc"]) or "config"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if item["loc"] else message)
    return "; ".join(problems).replace("\n", " ")
