"""`--model` references: NAME@REF, NAME, REF alone, a path; the errors name the input and what to pass."""

from __future__ import annotations

import pytest

from hvt import registry
from hvt.registry.refs import ModelRef, parse_model_ref


def _register(store: str, name: str) -> None:
    registry.register_version(store, name, files={"model.pt": b"weights"}, metrics={}, lineage={},
                              created_at="2026-12-06T00:00:00+00:00")


def test_forms_against_a_store_with_one_then_two_models(tmp_path) -> None:
    store = str(tmp_path)
    with pytest.raises(registry.RegistryError, match="no registered models in .*train one"):
        parse_model_ref("champion", store)
    _register(store, "haltingvt-micro-g07-b10")
    assert parse_model_ref("champion", store) == ModelRef("haltingvt-micro-g07-b10", "champion")
    assert parse_model_ref("v1", store) == ModelRef("haltingvt-micro-g07-b10", "v1")
    assert parse_model_ref("haltingvt-micro-g07-b10", store) == ModelRef("haltingvt-micro-g07-b10", "champion")
    assert parse_model_ref("haltingvt-micro-g07-b10@latest", store) == ModelRef("haltingvt-micro-g07-b10", "latest")
    assert parse_model_ref("runs/x/model.pt", store) == ModelRef(path="runs/x/model.pt")
    assert parse_model_ref("s3://bucket/m.pt", store).path == "s3://bucket/m.pt"

    _register(store, "jointvt-micro")
    with pytest.raises(registry.RegistryError, match=r"--model latest: .* holds 2 models \(haltingvt-micro-g07-b10, "
                                                     r"jointvt-micro\); name one, e\.g\. --model haltingvt-micro-g07-b10@latest"):
        parse_model_ref("latest", store)
    assert parse_model_ref("jointvt-micro", store) == ModelRef("jointvt-micro", "champion")
    assert parse_model_ref("jointvt-micro@v1") == ModelRef("jointvt-micro", "v1")  # no store needed


@pytest.mark.parametrize("text", ["a@b@c", "@", "x y", "name@v1.5", ""])
def test_malformed_references_say_what_to_pass(text: str, tmp_path) -> None:
    with pytest.raises(registry.RegistryError, match="--model .*(NAME\\[@REF\\])"):
        parse_model_ref(text, str(tmp_path))


def test_an_unknown_bare_name_is_named_as_such_not_taken_for_an_alias(tmp_path) -> None:
    """A variant that was never registered, or a model name cut short, is not read as an alias of the only model:
    the error names it, what is registered, and the close match."""
    store = str(tmp_path)
    _register(store, "haltingvt-micro-g03-b10")
    with pytest.raises(registry.RegistryError, match=r"--model haltingvt-s-g05-b20: no registered model, version or "
                                                     r"alias named haltingvt-s-g05-b20 .*registered: haltingvt-micro-g03-b10"):
        parse_model_ref("haltingvt-s-g05-b20", store)
    with pytest.raises(registry.RegistryError, match=r"did you mean haltingvt-micro-g03-b10\?"):
        parse_model_ref("haltingvt-micro", store)
    registry.set_alias(store, "haltingvt-micro-g03-b10", "v1", reason="test", alias="staging")
    assert parse_model_ref("staging", store) == ModelRef("haltingvt-micro-g03-b10", "staging")  # an alias it has
