"""Champion against challenger on one evaluation set.

A challenger (a run just trained, or a version named to ``hvt registry promote``) was scored on one set: its
training dataset's val split, or a pinned set (``TrainConfig.eval_dataset``). When the champion was scored on
another set, its registered checkpoint (sha256-verified) is scored here on the challenger's clips, with the same
evaluator, views and precision, and the registry's policy (``hvt.registry.policy``) decides on the two figures.
Both figures, the set and the reason end up in the challenger's ``metrics["promotion"]``, its report, the
``register`` log line and the Prefect report artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvt import registry
from hvt.config import ScalingSpec, TrainConfig, parse_dataset_ref
from hvt.data import DataConfig
from hvt.errors import InputError
from hvt.evaluation.evaluator import parse_views
from hvt.evaluation.runs import eval_set_identity, evaluation_scaling, run_evaluation
from hvt.ingest.versions import DatasetError, DatasetRef, resolve_dataset
from hvt.integrity import DataIntegrityError, SplitCheck, check_splits

if TYPE_CHECKING:
    from hvt.train.trainer import TrainResult

log = logging.getLogger(__name__)

EVAL_SPLIT = "val"


@dataclass(frozen=True)
class EvalSetting:
    """Where and how a challenger was scored; a champion scored against it is scored exactly so."""

    dataset: DatasetRef
    split: str
    check: SplitCheck | None  # the shards read (and any left out); None: every shard of the split
    views: str  # CLIPSxCROPS
    batch_size: int
    scaling: ScalingSpec | None  # use_gpu: CUDA with bf16 autocast, else fp32 on the CPU (evaluator.autocast)
    on_workers: bool = False

    @property
    def eval_set(self) -> str:
        return f"{self.dataset.name}/{self.dataset.version}/{self.split}"

    @property
    def precision(self) -> str:
        return "bf16-autocast" if self.scaling is not None and self.scaling.use_gpu else "fp32"

    def source(self) -> list[str] | str:
        return self.check.urls if self.check is not None else self.dataset.path


def resolve_eval_dataset(cfg: TrainConfig, classes: list[str]) -> DatasetRef | None:
    """The pinned evaluation set of ``cfg`` (None when none is pinned), refused before anything trains when it
    does not exist or labels other classes than ``classes``, the training set's."""
    if cfg.eval_dataset is None:
        return None
    name, version = parse_dataset_ref(cfg.eval_dataset)
    dataset = resolve_dataset(cfg.store, name, version)
    if list(dataset.classes) != list(classes):
        raise InputError(f"--eval-dataset {cfg.eval_dataset}: its classes ({len(dataset.classes)}) are not the "
                         f"training set's ({len(classes)}, same order); pin a set with the same class list")
    return dataset


def check_eval_dataset(cfg: TrainConfig) -> None:
    """Refuse a pinned evaluation set that is missing or labels other classes than the training dataset, before
    anything trains (one line: ``InputError`` / ``DatasetError``)."""
    if cfg.eval_dataset is not None:
        resolve_eval_dataset(cfg, resolve_dataset(cfg.store, cfg.dataset_name, cfg.dataset_version).classes)


def evaluation_setting(result: TrainResult, cfg: TrainConfig) -> EvalSetting:
    """How the run is scored after training: on the pinned set's val split when ``cfg.eval_dataset`` is set (its
    shards checked now), else on the training dataset's val shards that passed their check; the run's val views;
    where ``evaluation_scaling`` puts it."""
    import torch

    pinned = resolve_eval_dataset(cfg, result.dataset.classes)
    if pinned is None:
        dataset, check = result.dataset, result.data_checks.get(EVAL_SPLIT)
    else:
        dataset = pinned
        check = check_splits(pinned.path, [EVAL_SPLIT], skip_bad=cfg.skip_bad_shards)[EVAL_SPLIT]
    views = cfg.val_views or f"{cfg.data.num_clips}x{cfg.data.test_crops}"
    # a GPU run's GPUs may be on the Ray workers only: evaluate there when this process has none
    on_workers = cfg.scaling.use_gpu and not torch.cuda.is_available()
    return EvalSetting(dataset, EVAL_SPLIT, check, views, cfg.optim.batch_size, evaluation_scaling(cfg.scaling),
                       on_workers)


def score_state(state: dict[str, Any], data_config: DataConfig, setting: EvalSetting) -> dict[str, Any]:
    """Raw figures of a checkpoint state on ``setting``'s clips with its views (``data_config``: the model's own
    input pipeline), plus ``eval_identity``, the identity of the clips actually scored."""
    clips, crops = parse_views(setting.views)
    config = data_config.model_copy(update={"num_clips": clips, "test_crops": crops})
    raw = run_evaluation(state, setting.source(), setting.split, config, num_classes=len(setting.dataset.classes),
                         batch_size=setting.batch_size, scaling=setting.scaling, on_workers=setting.on_workers)
    failures = int(raw.get("decode_failures", 0) or 0)
    raw["eval_identity"] = eval_set_identity(setting.dataset.manifest_sha256, setting.split, setting.check, failures)
    return raw


def score_champion(champion: registry.RegistryVersion, setting: EvalSetting) -> registry.Score:
    """The champion's registered checkpoint (sha256-verified before loading) scored on the challenger's set.

    Raises ``RegistryError`` (the decision then keeps the champion) when it cannot be: a file that does not
    verify, other classes, a set that is gone or damaged."""
    payload = registry.load_checkpoint(champion)
    if list(payload.get("classes", [])) != list(setting.dataset.classes):
        raise registry.RegistryError(f"{champion.model} {champion.version} predicts other classes than "
                                     f"{setting.eval_set} labels")
    try:
        raw = score_state(payload, DataConfig.model_validate(payload["data_config"]), setting)
    except (DatasetError, DataIntegrityError) as err:
        raise registry.RegistryError(str(err)) from err
    gflops = raw.get("gflops_per_view_mean", raw.get("gflops_mean"))
    score = registry.Score(
        version=champion.version, top1=float(raw.get("top1", 0.0)),
        gflops_per_clip=float(gflops) if gflops is not None else None, eval_set=setting.eval_set,
        eval_set_sha256=raw["eval_identity"], eval_split=setting.split,
        how=f"re-scored on this set ({setting.views} views, {setting.precision}; "
            f"{float(champion.metrics.get('val_top1', 0.0)):.4f} on {champion.metrics.get('eval_set', '?')})",
    )
    log.info("%s %s re-scored on %s: val top-1 %.4f over %d clips", champion.model, champion.version,
             setting.eval_set, score.top1, int(raw.get("clips", 0)))
    return score


def decide_for_metrics(
    store: str,
    model: str,
    metrics: dict[str, Any],
    setting: Callable[[], EvalSetting] | None,
    policy: registry.PromotionPolicy,
) -> registry.ChampionDecision:
    """The champion decision for a challenger not registered yet, scored as ``metrics`` say; the champion is
    re-scored on ``setting()`` (built only then: a pinned set's shards are checked again) when it was scored
    elsewhere. A registry that cannot be read (a damaged alias)
    gives a decision not to promote, naming the problem, so the challenger is still registered."""
    challenger = registry.score_of(metrics)
    rescore = (lambda champion: score_champion(champion, setting())) if setting is not None else None
    try:
        return registry.decide_against_champion(store, model, challenger, policy=policy, rescore=rescore)
    except registry.RegistryError as err:
        return registry.ChampionDecision(False, f"registered but not promoted: {err}", challenger, None, policy)


def setting_of_version(store: str, candidate: registry.RegistryVersion, *, batch_size: int = 16) -> EvalSetting:
    """How a registered version was scored (its set, views and precision, as its metrics record), so that
    ``hvt registry promote`` scores the champion the same way. Starts a local Ray when none is running."""
    from hvt.train.ray_env import ensure_ray

    metrics = candidate.metrics
    parts = str(metrics.get("eval_set", "")).split("/")
    name = metrics.get("eval_dataset") or (parts[0] if len(parts) == 3 else None)
    version = metrics.get("eval_dataset_version") or (parts[1] if len(parts) == 3 else None)
    split = str(metrics.get("eval_split") or EVAL_SPLIT)
    if not name or not version:
        raise registry.RegistryError(f"{candidate.model} {candidate.version} records no evaluation set to score the "
                                     "champion on; pass --force to promote it anyway")
    try:
        dataset = resolve_dataset(store, name, version)
        check = check_splits(dataset.path, [split], skip_bad=bool(metrics.get("skipped_shards")))[split]
    except (DatasetError, DataIntegrityError) as err:
        raise registry.RegistryError(f"{candidate.model} {candidate.version}'s evaluation set: {err}") from err
    views = str(metrics.get("eval_views") or f"{int(metrics.get('views', 1) or 1)}x1")
    gpu = metrics.get("eval_precision") == "bf16-autocast"
    ensure_ray(None)
    return EvalSetting(dataset, split, check, views, batch_size, ScalingSpec(num_workers=1, use_gpu=gpu))


def promote_version(
    store: str, model: str, version: str, *, alias: str = registry.CHAMPION, force: bool = False,
    policy: registry.PromotionPolicy | None = None,
) -> str:
    """``hvt registry promote``: ``registry.promote`` with the champion re-scored on the candidate's set when
    needed (and only then: Ray starts only for that)."""
    candidate = registry.get_version(store, model, version)
    return registry.promote(store, model, version, alias=alias, force=force, policy=policy,
                            rescore=lambda champion: score_champion(champion, setting_of_version(store, candidate)))
