"""Registry: immutable versions, checksums, aliases."""

from __future__ import annotations

import io
import json

import pytest
import torch

from hvt import registry


def _model_bytes(value: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.full((2,), value)}, "classes": ["a", "b"]}, buffer)
    return buffer.getvalue()


def _register(store: str, top1: float, eval_sha: str = "abc") -> registry.RegistryVersion:
    return registry.register_version(
        store,
        "tiny",
        files={"model.pt": _model_bytes(top1), "report.md": b"# report\n"},
        metrics={"val_top1": top1, "eval_manifest_sha256": eval_sha, "eval_split": "val"},
        lineage={"run_name": "r"},
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_versions_are_numbered_and_listed(tmp_path):
    store = str(tmp_path)
    first, second = _register(store, 0.5), _register(store, 0.7)
    assert (first.version, second.version) == ("v1", "v2")
    listed = registry.list_versions(store, "tiny")
    assert [v.version for v in listed] == ["v1", "v2"]
    assert listed[1].metrics["val_top1"] == 0.7
    assert registry.get_version(store, "tiny", "latest").version == "v2"


def test_checkpoint_loads_and_tamper_is_refused(tmp_path):
    store = str(tmp_path)
    version = _register(store, 0.5)
    payload = registry.load_checkpoint(version)
    assert torch.equal(payload["model"]["w"], torch.full((2,), 0.5))
    path = tmp_path / "registry" / "tiny" / "v1" / "model.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(registry.RegistryError, match="sha256"):
        registry.load_checkpoint(registry.get_version(store, "tiny", "v1"))


def test_version_record_is_never_overwritten(tmp_path):
    store = str(tmp_path)
    _register(store, 0.5)
    record = tmp_path / "registry" / "tiny" / "v1" / "version.json"
    before = record.read_bytes()
    # a writer that thinks v1 is free must not replace it
    assert registry.storage.create_exclusive(str(record), b"{}") is False
    assert record.read_bytes() == before
    assert json.loads(before)["version"] == "v1"


def test_alias_resolution_and_errors(tmp_path):
    store = str(tmp_path)
    _register(store, 0.5)
    _register(store, 0.6)
    with pytest.raises(registry.RegistryError, match="no alias 'champion'"):
        registry.get_version(store, "tiny", "champion")
    registry.set_alias(store, "tiny", "v2")
    assert registry.get_version(store, "tiny", "champion").version == "v2"
    with pytest.raises(registry.RegistryError, match="no version 'v9'"):
        registry.set_alias(store, "tiny", "v9")


def test_bad_model_name_is_rejected(tmp_path):
    with pytest.raises(registry.RegistryError, match="plain name"):
        registry.list_versions(str(tmp_path), "../escape")
