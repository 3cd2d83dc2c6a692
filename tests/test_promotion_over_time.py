"""Champion against challenger over time, through the CLI (issue 24, test a).

Dataset v1, then new data: v2 (the same annotations plus rows). A champion trained on v1 is scored on v1's val
split; challengers trained on v2 are scored on v2's. Each decision re-scores the champion's registered checkpoint
on v2's val clips and compares the two figures: a clearly worse challenger (learning rate 1e-7: still its random
init) is not promoted, a clearly better one (more epochs on more data) is. Both reasons name both figures.

The clips are colour-coded (``tests/colour_clips.py``: a class is the colour of a noisy square over a noisy grey
background, H.264 mp4), so a micro HaltingVT learns them in an epoch or two on a CPU: the synthetic motion set needs
hundreds of steps. v1 holds every clip of the first two classes and a single val clip of the third, so the champion
never sees the third class in training and is right on about two thirds of v2's balanced val split; the better
challenger (two epochs where the champion had one) learns all three. Every run has one training worker and the
learning rate 1e-3 without warm-up, so an epoch is enough to learn two colours. One local Ray for the module (the
commands run in this process through ``hvt.cli.main``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from colour_clips import write_colour_set

from hvt import registry
from hvt.cli import main
from hvt.ingest.versions import list_dataset_versions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

MODEL = "haltingvt-micro-g07-b10"  # the demo's model
CHAMPION = ("--epochs", "1", "--lr", "1e-3")
BETTER = ("--epochs", "2", "--lr", "1e-3")  # more epochs than the champion, on more data


def hvt_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    start = 0 if out.out.startswith("{") else out.out.index("\n{") + 1  # Ray may print before the JSON
    return json.JSONDecoder().raw_decode(out.out, start)[0]


def hvt_text(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def write_annotations(path: Path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def over_time(tmp_path_factory, shared_ray):
    """Two versions of dataset 'toy' in one store (v1, then v2 = v1's annotations plus new rows) and a training
    config with the demo's settings, 4 clips per step on one worker."""

    from pipelines.demo import demo_config

    root = tmp_path_factory.mktemp("overtime")
    store = str(root / "store")
    annotations = write_colour_set(root, per_class=16, seed=3)
    videos = str(root / "videos")
    with open(annotations, newline="") as handle:
        rows = list(csv.DictReader(handle))
    third = "blue"
    v1_rows = [r for r in rows if r["label"] != third] + [r for r in rows if r["label"] == third and r["split"] == "val"][:1]
    versions = []
    for name, chosen in (("v1", v1_rows), ("v2", rows)):
        annotations = write_annotations(root / f"{name}.csv", chosen)
        assert main(["shard", "--annotations", annotations, "--videos", videos, "--store", store, "--name", "toy",
                     "--quiet"]) == 0
        versions.append(list_dataset_versions(store, "toy")[-1].version)
    assert versions[0] != versions[1]
    config = demo_config(store).model_dump(mode="json", exclude={"store"})
    config.update(dataset_name="toy")
    config["optim"]["batch_size"] = 4
    config["optim"]["warmup_epochs"] = 0
    config["scaling"]["num_workers"] = 1  # one worker: each run starts one training actor, not two
    config["data"]["decode_workers"] = 1
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    return {"store": store, "v1": versions[0], "v2": versions[1], "config": str(config_path)}


def test_champion_is_rescored_on_the_new_set_and_moves_only_for_a_better_model(over_time, capsys, one_torch_thread):
    store, v1, v2 = over_time["store"], over_time["v1"], over_time["v2"]
    train = ["train", "--config", over_time["config"], "--store", store]

    champion = hvt_json(capsys, *train, "--dataset-version", v1, *CHAMPION)
    assert champion["registry"]["promoted"] and champion["registry"]["version"] == "v1"
    assert champion["metrics"]["eval_set"] == f"toy/{v1}/val"

    worse = hvt_json(capsys, *train, "--dataset-version", v2, "--epochs", "1", "--lr", "1e-7")
    better = hvt_json(capsys, *train, "--dataset-version", v2, *BETTER)
    worse_record, better_record = worse["registry"]["promotion"], better["registry"]["promotion"]
    with capsys.disabled():
        for name, run in (("champion", champion), ("worse", worse), ("better", better)):
            print(f"\n{name}: {run['registry']['version']} val top-1 {run['metrics']['val_top1']:.3f} on "
                  f"{run['metrics']['eval_set']}: {run['registry']['reason']}")

    v2_sha = worse["metrics"]["eval_manifest_sha256"]
    for record in (worse_record, better_record):
        rescored = record["champion"]
        assert rescored["version"] == "v1" and rescored["eval_set_sha256"] == v2_sha == record["eval_set_sha256"]
        assert rescored["eval_set"] == f"toy/{v2}/val" and "re-scored on this set" in rescored["how"]
    # the same checkpoint on the same clips gives the same figure, both times
    assert worse_record["champion"]["top1"] == better_record["champion"]["top1"]
    old = worse_record["champion"]["top1"]
    assert 0.5 < old < 0.8  # the champion never learnt the third class: about two thirds of v2's val clips

    assert not worse["registry"]["promoted"]
    assert worse["metrics"]["val_top1"] < old - 0.1  # 0.333 vs 0.667 here
    assert (f"val_top1 {worse['metrics']['val_top1']:.4f} does not beat champion v1's {old:.4f} on toy/{v2}/val"
            in worse["registry"]["reason"])
    assert better["registry"]["promoted"] and better["registry"]["version"] == "v3"
    assert better["metrics"]["val_top1"] > old + 0.2
    assert (f"val_top1 {better['metrics']['val_top1']:.4f} > champion v1's {old:.4f} on toy/{v2}/val"
            in better["registry"]["reason"])
    assert registry.get_alias(store, MODEL) == "v3"

    # what the registry shows: the decision with both figures in the metadata, the report and the listing
    v3 = registry.get_version(store, MODEL, "v3")
    assert v3.metrics["promotion"]["reason"] == better["registry"]["reason"]
    report = registry.read_verified(v3, "report.md").decode()
    assert "## Champion decision" in report and f"| champion v1 | {old:.4f} |" in report
    assert better["registry"]["reason"] in report
    code, listing, _ = hvt_text(capsys, "registry", "list", "--store", store)
    assert code == 0
    assert f"keep {worse['metrics']['val_top1']:.3f} vs v1 {old:.3f}" in listing
    assert f"promote {better['metrics']['val_top1']:.3f} vs v1 {old:.3f}" in listing

    # the worse version stays out by hand too (v3 and v2 share v2's set: nothing is re-scored)
    code, _, err = hvt_text(capsys, "registry", "promote", MODEL, "v2", "--store", store)
    assert code == 2 and f"does not beat champion v3's {better['metrics']['val_top1']:.4f}" in err

    # by hand, when the champion was scored on another set and no figure was recorded against it, `hvt registry
    # promote` scores the champion's checkpoint on the candidate's set: forced onto the worse v2 (v2's set),
    # the champion gives way to v1 again once v2 is re-scored on v1's set, where v1 does far better
    code, out, err = hvt_text(capsys, "registry", "promote", MODEL, "v2", "--store", store, "--force")
    assert code == 0 and "forced by hand" in out, err
    code, out, err = hvt_text(capsys, "registry", "promote", MODEL, "v1", "--store", store)
    assert code == 0, err
    assert (f"val_top1 {champion['metrics']['val_top1']:.4f} > champion v2's" in out and f"on toy/{v1}/val, "
            "re-scored on this set" in out)
    # and v3's registration recorded v1's figure on v2's set: promoting v3 again reuses it, nothing is re-scored
    code, out, err = hvt_text(capsys, "registry", "promote", MODEL, "v3", "--store", store)
    assert code == 0 and f"champion v1's {old:.4f}" in out and "recorded at registration" in out, err
    assert registry.get_alias(store, MODEL) == "v3"

    # pinned set: the champion's finished run, scored on v2 as a candidate is, gives the figure its re-score gave
    pinned = hvt_json(capsys, *train, "--dataset-version", v1, *CHAMPION, "--eval-dataset", f"toy@{v2}",
                      "--no-register")
    assert pinned["run"] == champion["run"]  # the pinned set is not part of the run's name: nothing retrains
    assert pinned["metrics"]["eval_set"] == f"toy/{v2}/val" and pinned["metrics"]["eval_manifest_sha256"] == v2_sha
    assert pinned["metrics"]["val_top1"] == pytest.approx(old)
