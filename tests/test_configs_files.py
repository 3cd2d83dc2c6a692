"""configs/: the files equal what the code defines; `hvt train --config FILE` trains exactly that config;
`--print-config` prints a config that `--config` reads back to the same config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvt import cli
from hvt.config import OptimConfig, TrainConfig
from pipelines.configs import CONFIGS_DIR, config_text, generated_configs, stale_files, write_configs

DEMO_FINGERPRINT = "4b22f91655"  # tests/test_train_warm_start.py holds the same golden for demo_config


def _printed(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_committed_configs_are_what_the_code_generates():
    assert stale_files(CONFIGS_DIR) == [], "run `python -m pipelines.configs write`"
    names = set(generated_configs())
    assert {"demo.json", "paper-haltingvt-s-g03-b5.json", "paper-haltingvt-s-g03-b10.json",
            "paper-haltingvt-s-g05-b20.json", "paper-haltingvt-s-g07-b20.json"} <= names


def test_a_file_that_drifts_from_the_code_is_named(tmp_path):
    write_configs(tmp_path)
    assert stale_files(tmp_path) == []
    demo = json.loads((tmp_path / "demo.json").read_text())
    demo["optim"]["lr"] = 1e-3
    (tmp_path / "demo.json").write_text(json.dumps(demo, indent=2) + "\n")
    (tmp_path / "mine.json").write_text("{}")
    (tmp_path / "paper-jointvt-s.json").unlink()
    assert stale_files(tmp_path) == ["demo.json", "mine.json", "paper-jointvt-s.json"]


def test_hvt_train_with_the_demo_file_trains_make_demos_run(tmp_path, capsys):
    """Same config, so the same fingerprint and run name as `make demo` (which trains demo_config)."""
    from pipelines.demo import demo_config

    store = str(tmp_path / "store")
    printed = _printed(capsys, "train", "--config", str(CONFIGS_DIR / "demo.json"), "--store", store,
                       "--print-config")
    config = TrainConfig.model_validate_json(printed)
    assert config == demo_config(store)
    # printed in the files' own form: the demo file with the store filled in
    assert printed == (CONFIGS_DIR / "demo.json").read_text().replace('"store": ""', f'"store": "{store}"', 1)
    assert config.fingerprint() == demo_config(store).fingerprint() == DEMO_FINGERPRINT
    assert config.resolved_run_name("v-1") == demo_config(store).resolved_run_name("v-1")


@pytest.mark.parametrize("extra", [(), ("--recipe", "paper-finetune", "--epochs", "3", "--sampling", "4x2x1",
                                        "--crop-size", "112", "--static-class-loss-weight", "0.5")])
def test_print_config_round_trips_through_config(tmp_path, capsys, extra):
    store = ("--store", str(tmp_path / "store"))
    first = _printed(capsys, "train", *store, *extra, "--print-config", "--json")  # --json: the same JSON
    path = tmp_path / "printed.json"
    path.write_text(first)
    again = _printed(capsys, "train", "--config", str(path), *store, "--print-config")
    assert again == first
    assert TrainConfig.model_validate_json(again) == TrainConfig.model_validate_json(first)
    if extra:
        config = TrainConfig.model_validate_json(first)
        assert (config.optim.epochs, config.optim.lr, config.data.sampling) == (3, 1e-5, "4x2x1")
        assert config.optim.static_class_loss_weight == 0.5


def test_the_paper_configs_are_the_papers_recipe():
    from hvt.model.zoo import PAPER_VARIANTS

    for variant in PAPER_VARIANTS:
        config = TrainConfig.model_validate_json((CONFIGS_DIR / f"paper-{variant}.json").read_text())
        assert config.model.name == variant and "deit_small" in (config.model.pretrained or "")
        assert config.optim == OptimConfig.paper_finetune()
        assert (config.data.sampling, config.data.crop_size, config.dataset_name) == ("8x32x1", 224, "mini-kinetics")


def test_shard_print_config_round_trips(tmp_path, capsys):
    args = ["shard", "--annotations", "a.csv", "--videos", "videos/", "--name", "ds", "--shard-size", "50",
            "--short-side", "128", "--transcode"]
    first = _printed(capsys, *args, "--print-config")
    path = tmp_path / "shard.json"
    path.write_text(first)
    again = _printed(capsys, "shard", "--config", str(path), "--print-config")
    assert again == first
    printed = json.loads(first)
    assert (printed["shard_size"], printed["transcode"]["short_side"], printed["transcode_policy"]) == (50, 128, "always")
    # a flag still wins over the file
    assert json.loads(_printed(capsys, "shard", "--config", str(path), "--shard-size", "7", "--print-config"))[
        "shard_size"] == 7


def test_shard_without_its_inputs_says_which_are_missing(capsys):
    assert cli.main(["shard", "--name", "ds"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hvt shard: error: --annotations, --videos: required; give them as flags or in --config"


def test_config_text_is_the_whole_config():
    config = TrainConfig()
    assert TrainConfig.model_validate_json(config_text(config)) == config
    assert Path(CONFIGS_DIR).name == "configs"


def test_training_names_its_run_after_the_dataset_version_it_resolved(tmp_path, monkeypatch):
    """`hvt train` (newest version) and the flows (which pin the version first) name one run alike, so
    `hvt train --config configs/demo.json` in a `make demo` store finds the demo's run."""
    from hvt.ingest.versions import DatasetRef
    from hvt.train import trainer
    from pipelines.demo import demo_config

    store = str(tmp_path)
    seen: list[TrainConfig] = []

    class Stop(Exception):
        pass

    def stop_at_check(cfg: TrainConfig, dataset: DatasetRef) -> None:
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(trainer, "resolve_dataset", lambda store_url, name, version: DatasetRef(
        name, "v-newest", f"{store_url}/datasets/{name}/v-newest", {"classes": ["a", "b"]}, "0" * 64))
    monkeypatch.setattr(trainer, "check_pretrained", stop_at_check)
    with pytest.raises(Stop):
        trainer.run_training(demo_config(store))
    pinned_by_the_flow = demo_config(store).model_copy(update={"dataset_version": "v-newest"})
    assert seen[0].dataset_version == "v-newest"
    assert seen[0].resolved_run_name("v-newest") == pinned_by_the_flow.resolved_run_name("v-newest")


@pytest.mark.parametrize(("text", "message"), [("[1, 2]", "expected a JSON object, e.g. what `hvt train --print-config` prints"),
                                               ('{"optim": 5}', "'optim' must be a JSON object"),
                                               ("{", "not valid JSON")])
def test_a_config_file_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"hvt train: error: --config {path}: ") and message in err
