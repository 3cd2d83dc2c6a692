"""`--model NAME[@REF]` on `hvt evaluate` and `hvt predict`, the older spellings folded in, one-line errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hvt import cli, registry
from hvt.commands.model_arg import resolve_model
from hvt.errors import InputError
from hvt.registry.refs import ModelRef


def _register(store: str, name: str) -> None:
    registry.register_version(store, name, files={"model.pt": b"weights"}, metrics={}, lineage={},
                              created_at="2026-12-06T00:00:00+00:00")


@pytest.fixture
def store(tmp_path) -> str:
    path = str(tmp_path / "store")
    _register(path, "haltingvt-micro-g07-b10")
    return path


def test_every_spelling_resolves_to_one_reference(store):
    name = "haltingvt-micro-g07-b10"
    assert resolve_model(None, store) == ModelRef(name, "champion")
    assert resolve_model("v1", store) == ModelRef(name, "v1")
    assert resolve_model(name, store) == ModelRef(name, "champion")
    assert resolve_model(f"{name}@latest", store) == ModelRef(name, "latest")
    assert resolve_model("runs/a/model.pt", store) == ModelRef(path="runs/a/model.pt")
    # older forms: evaluate's positional MODEL + --ref, predict's --registry-name NAME + --model REF
    assert resolve_model(None, store, legacy_name="other", legacy_ref="v2") == ModelRef("other", "v2")
    assert resolve_model(None, store, legacy_name="other") == ModelRef("other", "champion")
    assert resolve_model("v3", store, legacy_name="other") == ModelRef("other", "v3")
    assert resolve_model(name, store, legacy_ref="v1") == ModelRef(name, "v1")


def test_conflicts_and_paths_where_none_is_taken_are_one_line_errors(store):
    with pytest.raises(InputError, match="--model a@v1 names a model and so does 'b'"):
        resolve_model("a@v1", store, legacy_name="b")
    with pytest.raises(InputError, match="--model a@v1 has a REF and --ref v2"):
        resolve_model("a@v1", store, legacy_ref="v2")
    with pytest.raises(InputError, match="^--model x/model.pt: this command takes a registered model"):
        resolve_model("x/model.pt", store, paths=False)
    _register(store, "jointvt-micro")
    with pytest.raises(registry.RegistryError, match=r"--model champion: .* holds 2 models .*name one"):
        resolve_model(None, store)


def _evaluate(monkeypatch, store: str, *argv: str) -> SimpleNamespace:
    import hvt.stages

    seen = SimpleNamespace()

    def fake(store_url, model_name, ref, **kwargs):
        seen.model, seen.ref = model_name, ref
        return {"model": model_name, "version": ref, "eval_set": "x", "val_top1": 1.0, "val_top5": 1.0}

    monkeypatch.setattr(hvt.stages, "evaluate_registered", fake)
    seen.rc = cli.main(["evaluate", *argv, "--store", store, "--dataset", "d"])
    return seen


def test_evaluate_takes_model_name_at_ref_and_the_older_positional_form(monkeypatch, store, capsys):
    name = "haltingvt-micro-g07-b10"
    new = _evaluate(monkeypatch, store, "--model", f"{name}@v1")
    assert (new.rc, new.model, new.ref) == (0, name, "v1")
    old = _evaluate(monkeypatch, store, name, "--ref", "v1")
    assert (old.rc, old.model, old.ref) == (0, name, "v1")
    only = _evaluate(monkeypatch, store)
    assert (only.model, only.ref) == (name, "champion")
    twice = _evaluate(monkeypatch, store, name, "--model", name)
    assert twice.rc == 2 and "name the model once" in capsys.readouterr().err


def test_predict_takes_model_name_at_ref_and_the_older_registry_name(monkeypatch, store, capsys):
    import hvt.predict

    calls = []

    def fake(video, *, model="champion", store=None, registry_name=None):
        calls.append((model, registry_name))
        return SimpleNamespace(as_dict=lambda: {"model": registry_name})

    monkeypatch.setattr(hvt.predict, "predict_video", fake)
    name = "haltingvt-micro-g07-b10"
    for argv in (["--model", f"{name}@v1"], ["--model", "v1", "--registry-name", name], ["--model", "v1"]):
        assert cli.main(["predict", "clip.mp4", *argv, "--store", store, "--json"]) == 0
    assert calls == [("v1", name)] * 3
    assert cli.main(["predict", "clip.mp4", "--model", "w/model.pt", "--json"]) == 0
    assert calls[-1] == ("w/model.pt", None)
    assert cli.main(["predict", "clip.mp4", "--model", "a@b@c", "--store", store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hvt predict: error: --model 'a@b@c': expected NAME[@REF]" in err[0]
