"""When ``champion`` moves: a written policy applied to two figures measured on the same clips.

A challenger replaces the champion only when both were scored on one evaluation set (same manifest sha256 and
split, see ``hvt.stages.eval_set_identity``). When the champion was scored on another set (new data arrived, or a
pinned set), its registered checkpoint is scored again on the challenger's set by a ``Rescore`` callback, which
``hvt.promotion`` builds with the evaluator; this module only decides, so it needs no torch or Ray.

The policy (``PromotionPolicy``, the ``promotion`` field of ``TrainConfig``): the challenger must be strictly
better in val top-1 and by at least ``min_gain_top1`` points (percentage points, 0-100 scale); with
``max_gflops_per_clip`` set, a model spending more than that per clip (one view) is never promoted, whatever its
accuracy: HaltingVT is about accuracy per unit of compute. ``promote(..., force=True)`` overrides both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hvt.registry.versions import CHAMPION, RegistryError, RegistryVersion, get_alias, get_version, set_alias

# top-1 is a share of clips; gains are compared in points after rounding away float noise (0.5 - 0.4 = 0.1000...2)
_POINTS_TOLERANCE = 1e-9


class PromotionPolicy(BaseModel):
    """The rules a challenger must pass to become the champion."""

    model_config = ConfigDict(extra="forbid")

    min_gain_top1: float = Field(
        default=0.0, ge=0,
        description="val top-1 percentage points the challenger must gain over the champion (it must also be "
        "strictly better); 0: any gain",
    )
    max_gflops_per_clip: float | None = Field(
        default=None, gt=0,
        description="GFLOPs per clip (one view, mean as spent) above which a model is never promoted; None: no budget",
    )

    def describe(self) -> str:
        budget = f", at most {self.max_gflops_per_clip:g} GFLOPs per clip" if self.max_gflops_per_clip else ""
        return f"policy: strictly better and at least {self.min_gain_top1:.2f} top-1 points{budget}"


@dataclass(frozen=True)
class Score:
    """One model's figures on one evaluation set."""

    version: str  # "vN"; "" for a challenger not registered yet
    top1: float
    gflops_per_clip: float | None
    eval_set: str  # "<dataset>/<version>/<split>"
    eval_set_sha256: str  # what makes two scores comparable (hvt.stages.eval_set_identity)
    eval_split: str
    how: str = "its own evaluation"  # or "re-scored on this set", "recorded when vN was registered"

    def same_set(self, other: Score) -> bool:
        return bool(self.eval_set_sha256) and (self.eval_set_sha256, self.eval_split) == (
            other.eval_set_sha256, other.eval_split)


Rescore = Callable[[RegistryVersion], Score]  # the champion's checkpoint scored on the challenger's set


@dataclass(frozen=True)
class ChampionDecision:
    """What the policy decided for a challenger, with both figures and a one-line reason naming them."""

    promote: bool
    reason: str
    challenger: Score
    champion: Score | None
    policy: PromotionPolicy

    def as_record(self) -> dict[str, Any]:
        """The decision as stored in a version's metrics (``metrics["promotion"]``) and shown by the CLI."""
        return {
            "decision": "promote" if self.promote else "keep champion",
            "promoted": self.promote,
            "reason": self.reason,
            "eval_set": self.challenger.eval_set,
            "eval_set_sha256": self.challenger.eval_set_sha256,
            "challenger": asdict(self.challenger),
            "champion": asdict(self.champion) if self.champion else None,
            "policy": self.policy.model_dump(mode="json"),
        }


def score_of(metrics: dict[str, Any], version: str = "") -> Score:
    """A version's own figures, from the metrics ``hvt.stages.evaluate_run`` records."""
    gflops = metrics.get("gflops_per_view_mean", metrics.get("gflops_mean"))
    return Score(
        version=version,
        top1=float(metrics.get("val_top1", 0.0) or 0.0),
        gflops_per_clip=float(gflops) if isinstance(gflops, (int, float)) else None,
        eval_set=str(metrics.get("eval_set", "an unrecorded set")),
        eval_set_sha256=str(metrics.get("eval_manifest_sha256", "")),
        eval_split=str(metrics.get("eval_split", "")),
    )


def policy_of(version: RegistryVersion) -> PromotionPolicy:
    """The policy a version was trained under (its config's ``promotion``); the default for older versions."""
    recorded = (version.lineage.get("config") or {}).get("promotion")
    return PromotionPolicy.model_validate(recorded) if isinstance(recorded, dict) else PromotionPolicy()


def _name(score: Score, role: str) -> str:
    return f"{role} {score.version}" if score.version else ("this version" if role == "challenger" else role)


def decide(challenger: Score, champion: Score | None, policy: PromotionPolicy) -> ChampionDecision:
    """Apply ``policy`` to the challenger's and the champion's figures (``champion`` None: there is none yet)."""
    new = challenger.top1
    figures, versus = f"val_top1 {new:.4f} on {challenger.eval_set}", ""
    if champion is not None and champion.same_set(challenger):
        how = "" if champion.how == "its own evaluation" else f", {champion.how}"
        versus = f"{_name(champion, 'champion')}'s {champion.top1:.4f} on {challenger.eval_set}{how}"
        figures = f"val_top1 {new:.4f} vs {versus}"

    def made(promote: bool, reason: str) -> ChampionDecision:
        return ChampionDecision(promote, reason, challenger, champion, policy)

    budget = policy.max_gflops_per_clip
    if budget is not None:
        spent = challenger.gflops_per_clip
        if spent is None:
            return made(False, f"{figures}; no GFLOPs figure to hold against the budget of {budget:g} GFLOPs per "
                               "clip: not promoted")
        if spent > budget:
            return made(False, f"{figures}; {spent:.4f} GFLOPs per clip is over the budget of {budget:g}: never "
                               "promoted")
    if champion is None:
        return made(True, f"first version: no champion yet ({figures})")
    if not champion.same_set(challenger):
        return made(False, f"not comparable: {_name(champion, 'champion')} was scored on {champion.eval_set} "
                           f"({champion.eval_set_sha256[:12]}), this version on {challenger.eval_set} "
                           f"({challenger.eval_set_sha256[:12]}); not promoted")
    gain = round(100.0 * (new - champion.top1), 9)  # points
    if new > champion.top1 and gain + _POINTS_TOLERANCE >= policy.min_gain_top1:
        return made(True, f"val_top1 {new:.4f} > {versus} "
                          f"({gain:+.2f} points; {policy.describe()}): promoted")
    return made(False, f"val_top1 {new:.4f} does not beat {versus} "
                       f"({gain:+.2f} points; {policy.describe()}): not promoted")


def beats(
    candidate: dict[str, Any], champion: dict[str, Any], policy: PromotionPolicy | None = None
) -> tuple[bool, str]:
    """Whether metrics ``candidate`` beat ``champion``'s under ``policy`` (default: strictly better) on the same
    evaluation set; ``False`` with "not comparable" when the sets differ. Returns the decision and its reason."""
    decision = decide(score_of(candidate), score_of(champion), policy or PromotionPolicy())
    return decision.promote, decision.reason


def _champion_score(champion: RegistryVersion, challenger: Score, rescore: Rescore | None,
                    recorded: dict[str, Any] | None) -> Score:
    """The champion's figure on the challenger's set: its own when it was scored there, one recorded with the
    challenger's registration, or a fresh one from ``rescore``; else its own (which ``decide`` finds not
    comparable)."""
    own = score_of(champion.metrics, champion.version)
    if own.same_set(challenger):
        return own
    earlier = (recorded or {}).get("champion")
    if isinstance(earlier, dict) and earlier.get("version") == champion.version:
        score = Score(**{**earlier, "how": f"{earlier.get('how', 're-scored')}, recorded at registration"})
        if score.same_set(challenger):
            return score
    return rescore(champion) if rescore is not None else own


def decide_against_champion(
    store: str,
    model: str,
    challenger: Score,
    *,
    policy: PromotionPolicy,
    alias: str = CHAMPION,
    rescore: Rescore | None = None,
    recorded: dict[str, Any] | None = None,
) -> ChampionDecision:
    """Decide whether ``challenger`` replaces ``alias``'s version, scoring that version on the challenger's set
    with ``rescore`` when it was scored elsewhere (``recorded``: a decision stored with the challenger, whose
    champion figure is reused when it is about the same version and set). A champion that cannot be scored
    there (``RegistryError`` from ``rescore``: a changed file, other classes) keeps its place."""
    ref = get_alias(store, model, alias)
    if ref is None:
        return decide(challenger, None, policy)
    champion = get_version(store, model, ref)
    try:
        score = _champion_score(champion, challenger, rescore, recorded)
    except RegistryError as err:
        return ChampionDecision(
            False,
            f"val_top1 {challenger.top1:.4f} on {challenger.eval_set}, but {alias} {ref} could not be scored on "
            f"that set ({err}): not promoted; `hvt registry promote --force` overrides",
            challenger, None, policy,
        )
    return decide(challenger, score, policy)


def promote(
    store: str,
    model: str,
    version: str,
    *,
    alias: str = CHAMPION,
    force: bool = False,
    policy: PromotionPolicy | None = None,
    rescore: Rescore | None = None,
) -> str:
    """Point ``alias`` at ``version`` when it passes ``policy`` (default: the one it was trained under) against
    the alias's version on the same set (see ``decide_against_champion``), or unconditionally with ``force``
    (then nothing is re-scored). Returns the reason recorded with the alias; raises ``RegistryError`` when
    refused."""
    candidate = get_version(store, model, version)
    current_ref = get_alias(store, model, alias)
    if current_ref == candidate.version:
        return f"{alias} already is {candidate.version}"
    decision = decide_against_champion(
        store, model, score_of(candidate.metrics, candidate.version), policy=policy or policy_of(candidate),
        alias=alias, rescore=None if force else rescore, recorded=candidate.metrics.get("promotion"),
    )
    if not decision.promote and not force:
        target = f"replace {alias} {current_ref}" if current_ref else f"become {alias}"
        raise RegistryError(f"{model} {candidate.version} does not {target}: {decision.reason}. "
                            "Pass --force (force=True) to promote it anyway.")
    reason = f"forced by hand ({decision.reason})" if force else decision.reason
    set_alias(store, model, candidate.version, alias=alias, reason=reason)
    return reason
