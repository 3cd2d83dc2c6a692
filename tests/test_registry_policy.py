"""The promotion policy on its own (no Ray, no torch model): minimum top-1 gain, GFLOPs budget, sets that must
match, the champion re-scored through a callback, `promote` and `hvt registry promote` with and without --force."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from hvt import registry
from hvt.config import TrainConfig
from hvt.registry import PromotionPolicy, Score


def _score(top1: float, *, version: str = "", sha: str = "set-2", gflops: float | None = 0.1) -> Score:
    return Score(version=version, top1=top1, gflops_per_clip=gflops, eval_set=f"toy/{sha}/val", eval_set_sha256=sha,
                 eval_split="val")


def test_a_gain_must_be_strict_and_reach_the_minimum_in_points():
    champion = _score(0.60, version="v1")
    tie = registry.decide(_score(0.60), champion, PromotionPolicy())
    assert not tie.promote and "val_top1 0.6000 does not beat champion v1's 0.6000" in tie.reason
    small = registry.decide(_score(0.61), champion, PromotionPolicy(min_gain_top1=2.0))
    assert not small.promote and "+1.00 points" in small.reason and "at least 2.00" in small.reason
    enough = registry.decide(_score(0.62), champion, PromotionPolicy(min_gain_top1=2.0))  # exactly 2 points
    assert enough.promote and "val_top1 0.6200 > champion v1's 0.6000 on toy/set-2/val" in enough.reason
    assert registry.decide(_score(0.61), champion, PromotionPolicy()).promote  # default: any strict gain


def test_a_model_over_the_gflops_budget_is_never_promoted():
    budget = PromotionPolicy(max_gflops_per_clip=0.05)
    over = registry.decide(_score(0.95, gflops=0.08), _score(0.30, version="v1"), budget)
    assert not over.promote
    assert "0.0800 GFLOPs per clip is over the budget of 0.05" in over.reason and "0.9500" in over.reason
    assert "champion v1's 0.3000" in over.reason  # both figures named even when the budget decides
    first = registry.decide(_score(0.95, gflops=0.08), None, budget)  # not even as the first version
    assert not first.promote and "over the budget" in first.reason
    unknown = registry.decide(_score(0.95, gflops=None), None, budget)
    assert not unknown.promote and "no GFLOPs figure" in unknown.reason
    assert registry.decide(_score(0.95, gflops=0.04), _score(0.30, version="v1"), budget).promote


def test_scores_from_different_sets_are_not_compared():
    decision = registry.decide(_score(0.9), _score(0.1, version="v1", sha="set-1"), PromotionPolicy())
    assert not decision.promote and "not comparable" in decision.reason
    record = decision.as_record()
    assert record["decision"] == "keep champion" and record["champion"]["eval_set_sha256"] == "set-1"


def _register(store: str, top1: float, *, sha: str, promotion: dict | None = None, policy: dict | None = None,
              gflops: float = 0.1) -> registry.RegistryVersion:
    metrics = {"val_top1": top1, "eval_manifest_sha256": sha, "eval_split": "val", "eval_set": f"toy/{sha}/val",
               "gflops_per_view_mean": gflops}
    if promotion is not None:
        metrics["promotion"] = promotion
    return registry.register_version(
        store, "tiny", files={"model.pt": f"weights {top1} {sha}".encode()}, metrics=metrics,
        lineage={"config": {"promotion": policy}} if policy else {}, created_at="2026-12-01T00:00:00+00:00",
    )


def test_the_champion_is_rescored_on_the_challengers_set_through_the_callback(tmp_path):
    store = str(tmp_path)
    _register(store, 0.70, sha="set-1")
    registry.set_alias(store, "tiny", "v1")
    asked: list[str] = []

    def rescore(champion: registry.RegistryVersion) -> Score:
        asked.append(champion.version)
        return Score("v1", 0.40, 0.1, "toy/set-2/val", "set-2", "val", how="re-scored on this set")

    better = registry.decide_against_champion(store, "tiny", _score(0.55), policy=PromotionPolicy(), rescore=rescore)
    assert asked == ["v1"] and better.promote
    assert "val_top1 0.5500 > champion v1's 0.4000 on toy/set-2/val, re-scored on this set" in better.reason
    worse = registry.decide_against_champion(store, "tiny", _score(0.35), policy=PromotionPolicy(), rescore=rescore)
    assert not worse.promote and "0.3500 does not beat champion v1's 0.4000" in worse.reason
    # without re-scoring the champion's own 0.70 (another set) is never compared with 0.55
    assert "not comparable" in registry.decide_against_champion(store, "tiny", _score(0.55),
                                                                policy=PromotionPolicy()).reason

    def broken(champion: registry.RegistryVersion) -> Score:
        raise registry.RegistryError("tiny v1/model.pt: sha256 0123… does not match")

    kept = registry.decide_against_champion(store, "tiny", _score(0.99), policy=PromotionPolicy(), rescore=broken)
    assert not kept.promote and "could not be scored" in kept.reason and "sha256" in kept.reason


def test_promote_follows_the_policy_unless_forced(tmp_path):
    store = str(tmp_path)
    _register(store, 0.50, sha="set-1")
    registry.set_alias(store, "tiny", "v1")
    recorded = {"champion": {"version": "v1", "top1": 0.40, "gflops_per_clip": 0.1, "eval_set": "toy/set-2/val",
                             "eval_set_sha256": "set-2", "eval_split": "val", "how": "re-scored on this set"}}
    # v2: trained under a 5-point minimum gain; its registration recorded v1 re-scored on set-2 (0.40)
    _register(store, 0.43, sha="set-2", promotion=recorded, policy={"min_gain_top1": 5.0})
    with pytest.raises(registry.RegistryError, match=r"0\.4300 does not beat champion v1's 0\.4000.*--force"):
        registry.promote(store, "tiny", "v2")  # the recorded figure is reused: no callback needed
    assert registry.get_alias(store, "tiny") == "v1"
    assert "+3.00 points" in registry.promote(store, "tiny", "v2", policy=PromotionPolicy(min_gain_top1=3.0))
    assert registry.get_alias(store, "tiny") == "v2"
    # v3 spends more than the budget given: refused; forced, it moves and says so
    _register(store, 0.90, sha="set-2", gflops=0.5)
    with pytest.raises(registry.RegistryError, match="over the budget"):
        registry.promote(store, "tiny", "v3", policy=PromotionPolicy(max_gflops_per_clip=0.2))
    forced = registry.promote(store, "tiny", "v3", force=True, policy=PromotionPolicy(max_gflops_per_clip=0.2))
    assert forced.startswith("forced by hand (") and registry.get_alias(store, "tiny") == "v3"


def _hvt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_promote_takes_the_policy_flags_and_prints_both_figures(tmp_path):
    store = str(tmp_path)
    _register(store, 0.40, sha="set-2")
    registry.set_alias(store, "tiny", "v1")
    _register(store, 0.45, sha="set-2")
    refused = _hvt("registry", "promote", "tiny", "v2", "--store", store, "--min-gain-top1", "10")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "0.4500 does not beat champion v1's 0.4000" in refused.stderr and "--force" in refused.stderr
    bad = _hvt("registry", "promote", "tiny", "v2", "--store", store, "--max-gflops-per-clip", "0")
    assert bad.returncode == 2 and "--max-gflops-per-clip 0: give a positive number" in bad.stderr
    moved = _hvt("registry", "promote", "tiny", "v2", "--store", store)
    assert moved.returncode == 0, moved.stderr
    assert "champion -> v2" in moved.stdout and "0.4500 > champion v1's 0.4000" in moved.stdout


def test_pinned_set_and_policy_leave_the_run_name_alone_and_bad_values_are_one_line(tmp_path):
    from hvt.commands.train import add_train_config_arguments, train_config_from_args
    from hvt.errors import InputError

    plain = TrainConfig(store=str(tmp_path))
    pinned = TrainConfig(store=str(tmp_path), eval_dataset="toy@v-1", promotion={"min_gain_top1": 1.0})
    assert plain.fingerprint() == pinned.fingerprint()  # a re-run with another pinned set resumes the same run
    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    cfg = train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--eval-dataset", "toy@v-1",
                                                    "--min-gain-top1", "0.5", "--max-gflops-per-clip", "0.2"]))
    assert cfg.eval_dataset == "toy@v-1"
    assert cfg.promotion == PromotionPolicy(min_gain_top1=0.5, max_gflops_per_clip=0.2)
    with pytest.raises(InputError, match=r"--eval-dataset 'toy/v1': expected NAME or NAME@VERSION"):
        train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--eval-dataset", "toy/v1"]))
    with pytest.raises(InputError, match="--min-gain-top1 -1: give a non-negative number"):
        train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--min-gain-top1", "-1"]))
