"""What a sweep searches: ``SweepConfig`` (one object from the CLI / Prefect to Ray Tune) and how a point of its
search space becomes one trial's ``TrainConfig``.

Search-space keys (``--grid KEY=V1,V2``):

- ``keep_rate``: the keep rate of the last Glimpser block (the paper's G0.3 / G0.5 / G0.7);
- ``beta``: the halting centre (B5 / B10 / B20; the model's ``halt_center``);
- ``ponder_weight``: the weight of the ponder loss (the model's ``ponder_weight``, 5e-4 in the paper);
- ``lr``: the peak learning rate.

No grid given: the paper's four variants, G0.3-B5, G0.3-B10, G0.5-B20, G0.7-B20 (``PAPER_POINTS``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hvt.config import TrainConfig
from hvt.errors import InputError

SEARCH_KEYS = ("keep_rate", "beta", "ponder_weight", "lr")
PAPER_POINTS: tuple[dict[str, float], ...] = (
    {"keep_rate": 0.3, "beta": 5.0},
    {"keep_rate": 0.3, "beta": 10.0},
    {"keep_rate": 0.5, "beta": 20.0},
    {"keep_rate": 0.7, "beta": 20.0},
)


class SweepConfig(BaseModel):
    """A sweep: the base training config every trial starts from, the search space, how trials are scheduled,
    and the budget that picks the candidate for champion."""

    model_config = ConfigDict(extra="forbid")

    base: TrainConfig = Field(default_factory=TrainConfig, description="what every trial trains, before its point")
    grid: dict[str, list[float]] = Field(
        default_factory=dict, description="search-space key -> values (keep_rate, beta, ponder_weight, lr); empty: "
        "the paper's four variants (G0.3-B5, G0.3-B10, G0.5-B20, G0.7-B20)"
    )
    search: Literal["grid", "random"] = Field(
        default="grid", description="grid: every combination once; random: num_samples draws from the combinations"
    )
    num_samples: int = Field(default=4, ge=1, description="trials drawn by the random search")
    max_concurrent: int = Field(
        default=1, ge=1, description="trials training at the same time (each trial reserves its workers and its "
        "Ray Data pipeline: on a 2-core local Ray two trials at once starve Ray Data, so raise it with the cluster)")
    early_stop: bool = Field(default=True, description="ASHA stops trials far behind the others at its rungs")
    grace_epochs: int = Field(default=1, ge=1, description="epochs every trial trains before ASHA may stop it")
    budget_gflops: float | None = Field(
        default=None, gt=0, description="the candidate for champion is the most accurate front point within this "
        "many GFLOPs per clip; None: the most accurate front point"
    )
    register_front: bool = Field(default=True, description="register every point of the Pareto front")
    name: str | None = Field(default=None, description="default: derived from the sweep's hash (a re-run resumes)")

    @model_validator(mode="after")
    def _check_grid(self) -> SweepConfig:
        for key, values in self.grid.items():
            if key not in SEARCH_KEYS:
                raise ValueError(f"grid key {key!r} is not searchable; use one of {', '.join(SEARCH_KEYS)}")
            if not values:
                raise ValueError(f"grid {key}: give at least one value")
        for point in self.points():  # a value the model refuses fails here, before Ray starts
            try:
                trial_config(self.base, point)
            except ValueError as err:
                raise ValueError(f"grid point {point}: {err}") from None
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ValueError(f"name={self.name!r}: use a plain name without '/' or a leading '.'")
        return self

    def points(self) -> list[dict[str, float]]:
        """Every point of the search space (the combinations of the grid, or the paper's four)."""
        if not self.grid:
            return [dict(p) for p in PAPER_POINTS]
        keys = sorted(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def fingerprint(self) -> str:
        """Short hash of what decides the trials (base config's own hash, space, search, scheduling)."""
        payload = {"base": self.base.fingerprint(), "points": self.points(), "search": self.search,
                   "num_samples": self.num_samples if self.search == "random" else None,
                   "early_stop": self.early_stop, "grace_epochs": self.grace_epochs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def resolved_name(self, dataset_version: str) -> str:
        if self.name:
            return self.name
        return f"sweep-{self.base.model.name}--{self.base.dataset_name}-{dataset_version}--{self.fingerprint()}"


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """``["keep_rate=0.3,0.7", "lr=1e-3"]`` -> ``{"keep_rate": [0.3, 0.7], "lr": [0.001]}``; one-line errors."""
    grid: dict[str, list[float]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not raw.strip():
            raise InputError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. keep_rate=0.3,0.5,0.7")
        if key not in SEARCH_KEYS:
            raise InputError(f"--grid {item!r}: {key!r} is not searchable; use one of {', '.join(SEARCH_KEYS)}")
        try:
            values = [float(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--grid {item!r}: the values must be numbers separated by commas") from None
        grid.setdefault(key, []).extend(values)
    return grid


def trial_config(base: TrainConfig, point: dict[str, Any]) -> TrainConfig:
    """``base`` with one point of the search space applied: the model overrides (keep rate of the last
    Glimpser block, halting centre, ponder weight) and the learning rate. Raises ``ValueError`` for a point the
    model refuses."""
    from hvt.model.zoo import get_config

    overrides = dict(base.model.overrides)
    if "keep_rate" in point:
        current = list(get_config(base.model.name, **base.model_overrides()).keep_rate)
        if not current:
            raise ValueError(f"keep_rate: model {base.model.name} has no Glimpser block to set a keep rate for")
        overrides["keep_rate"] = [*current[:-1], float(point["keep_rate"])]
    if "beta" in point:
        overrides["halt_center"] = float(point["beta"])
    if "ponder_weight" in point:
        overrides["ponder_weight"] = float(point["ponder_weight"])
    optim = base.optim.model_copy(update={"lr": float(point["lr"])}) if "lr" in point else base.optim
    update = {"model": base.model.model_copy(update={"overrides": overrides}), "optim": optim}
    return TrainConfig.model_validate({**base.model_dump(), **{k: v.model_dump() for k, v in update.items()}})
