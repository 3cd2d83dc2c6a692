"""The paper's path end to end at toy scale on CPU, as a user runs it (issue 12).

1. A DeiT-layout checkpoint written here at the micro width -> ``hvt train --pretrained ... --recipe
   paper-finetune`` for one epoch (validation on 2 views per video) -> registered -> ``hvt evaluate --views 2x3``
   -> ``hvt predict``. The fine-tuned patch embedding still correlates with the file's; without ``--pretrained``
   it does not. Re-running the finished run with the pretrained file gone resumes from its checkpoint (no worker
   group: nothing is left to train).
2. The golden fixture's released-layout state dict -> ``hvt registry import`` -> ``hvt evaluate`` -> ``hvt predict``.

One local Ray for the module (the commands run in this process through ``hvt.cli.main``).
"""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from deit_layout import deit_state_dict
from shared_data import shared_path

from hvt import registry
from hvt.cli import main
from hvt.data.testing import FakeSample, write_version
from hvt.imports import overrides_from_released_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

MODEL = "haltingvt-micro-g03-b10"  # width 96, 3 heads, 6 blocks (2 Glimpser)
REPORTED = ("views", "gflops_per_view_mean", "gflops_per_video_mean", "val_top1", "clips")


def hvt_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    # Ray's raylet may print warnings to this process's stdout: the command's JSON starts at a line's "{"
    start = 0 if out.out.startswith("{") else out.out.index("\n{") + 1
    return json.JSONDecoder().raw_decode(out.out, start)[0]


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


@pytest.fixture(scope="module")
def toy(tmp_path_factory, shared_ray):
    """A synthetic set (3 classes x 4 clips, 64x64) sharded into a store; a DeiT-S-layout file at micro width;
    a TrainConfig JSON with the demo's data settings (64-pixel crops)."""

    from pipelines.demo import demo_config

    root = tmp_path_factory.mktemp("e2e")
    store, synth = str(root / "store"), root / "synth"
    assert main(["synth", str(synth), "--classes", "3", "--per-class", "4", "--frames", "16", "--size", "64x64",
                 "--seed", "1"]) == 0
    assert main(["shard", "--annotations", str(synth / "annotations.csv"), "--videos", str(synth), "--store", store,
                 "--name", "toy", "--quiet"]) == 0
    deit = root / "deit_micro_patch16_224.pth"
    torch.save({"model": deit_state_dict(96, 6, num_heads=3, img_size=224, patch_size=16, seed=7)}, deit)
    config = demo_config(store).model_dump(mode="json", exclude={"store"})
    config.update(dataset_name="toy", val_views="2x1", optim={"batch_size": 4})  # optim: the recipe's, batch 4
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    return {"store": store, "synth": synth, "deit": deit, "config": str(config_path), "root": root}


def test_finetune_from_deit_then_multi_view_evaluate_register_predict(toy, capsys, one_torch_thread, monkeypatch):
    store, deit = toy["store"], toy["deit"]
    train = ["train", "--config", toy["config"], "--store", store, "--model", MODEL, "--recipe", "paper-finetune",
             "--epochs", "1"]
    tuned = hvt_json(capsys, *train, "--pretrained", str(deit))
    assert tuned["metrics"]["views"] == 2  # training validation on 2 clips per video
    version = tuned["registry"]["version"]
    entry = registry.get_version(store, MODEL, version)
    assert entry.lineage["config"]["model"]["pretrained"] == str(deit)
    assert entry.lineage["config"]["optim"]["lr"] == 1e-5  # the recipe's learning rate
    pretrained = torch.load(deit, weights_only=True)["model"]["patch_embed.proj.weight"]
    tuned_weights = registry.load_checkpoint(entry)["model"]["patch_embed.proj.weight"]
    tuned_corr = corr(tuned_weights, pretrained)
    with capsys.disabled():
        print(f"\npatch embedding vs pretrained file: correlation {tuned_corr:.4f} with --pretrained")
    assert tuned_corr > 0.9

    # multi-view test of the registered version: 2 clips x 3 crops per video, scores averaged
    ev = hvt_json(capsys, "evaluate", MODEL, "--ref", version, "--store", store, "--dataset", "toy", "--views", "2x3")
    with capsys.disabled():
        print(f"hvt evaluate --views 2x3 --json: {json.dumps({k: ev[k] for k in REPORTED})}")
    assert ev["views"] == 6 and ev["clips"] == 3
    assert ev["gflops_per_video_mean"] == pytest.approx(6 * ev["gflops_per_view_mean"], rel=1e-2)

    video = next((toy["synth"] / "videos").glob("*.mp4"))
    pred = hvt_json(capsys, "predict", str(video), "--model", version, "--store", store, "--registry-name", MODEL)
    classes = (toy["synth"] / "classes.txt").read_text().split("\n")
    assert (pred["model"], pred["version"]) == (MODEL, version)
    assert {p["label"] for p in pred["top5"]} == {c for c in classes if c} and pred["gflops"] > 0

    # the same run without --pretrained: its patch embedding has nothing to do with the file
    scratch = hvt_json(capsys, *train)
    scratch_weights = registry.load_checkpoint(registry.get_version(store, MODEL, scratch["registry"]["version"]))
    scratch_corr = corr(scratch_weights["model"]["patch_embed.proj.weight"], pretrained)
    with capsys.disabled():
        print(f"patch embedding vs pretrained file: correlation {scratch_corr:.4f} without --pretrained")
    assert abs(scratch_corr) < 0.2

    # re-running the finished fine-tuning run resumes from its checkpoint: the pretrained file is not read again,
    # and with nothing left to train no worker group is started (hvt.train.trainer.finished_run)
    os.rename(deit, str(deit) + ".gone")
    from hvt.train import trainer

    def no_worker_group(*args, **kwargs):
        raise AssertionError("re-running a finished run started a Ray Train worker group")

    monkeypatch.setattr(trainer, "build_trainer", no_worker_group)
    again = hvt_json(capsys, *train, "--pretrained", str(deit))
    assert again["run"] == tuned["run"] and again["registry"]["version"] == version


def test_released_checkpoint_import_evaluate_predict(toy, capsys, one_torch_thread):
    case = torch.load(shared_path("fidelity", "g05_b20_shifted_center.pt"), map_location="cpu", weights_only=True)
    root, store = toy["root"], toy["store"]
    weights = root / "released_g05.pth"
    torch.save(case["state_dict"], weights)
    # a 200-class list whose first classes are the synthetic ones, and an eval set labelled with it
    synth_classes = [c for c in (toy["synth"] / "classes.txt").read_text().split("\n") if c]
    classes = synth_classes + [f"other {i}" for i in range(200 - len(synth_classes))]
    class_file = root / "classes200.txt"
    class_file.write_text("\n".join(classes) + "\n")
    with open(toy["synth"] / "annotations.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val"]
    samples = []
    for row in rows:
        (path,) = (toy["synth"] / "videos").glob(f"{row['youtube_id']}_*.mp4")
        samples.append(FakeSample(row["youtube_id"], path.read_bytes(), classes.index(row["label"])))
    write_version(os.path.join(store, "datasets", "toy200", "v1"), {"val": [samples]}, classes)

    overrides = overrides_from_released_config(case["config"])
    flags = []
    for key, value in overrides.items():
        flags += ["--model-override", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    imported = hvt_json(capsys, "registry", "import", "released-g05", "--weights", str(weights), "--variant",
                        "haltingvt-s-g05-b20", "--classes", str(class_file), "--store", store, *flags)
    assert imported["lineage"]["imported"] and imported["lineage"]["halted_token_mode"] == "official"
    ev = hvt_json(capsys, "evaluate", "released-g05", "--store", store, "--dataset", "toy200")
    assert ev["version"] == imported["version"] and ev["clips"] == len(samples) and ev["views"] == 1
    assert 0.0 <= ev["val_top1"] <= 1.0 and ev["gflops_per_video_mean"] > 0
    (video,) = (toy["synth"] / "videos").glob(f"{rows[0]['youtube_id']}_*.mp4")
    pred = hvt_json(capsys, "predict", str(video), "--store", store, "--registry-name", "released-g05")
    assert pred["model"] == "released-g05" and len(pred["top5"]) == 5
    assert all(p["label"] in classes for p in pred["top5"])
