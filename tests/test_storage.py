"""Store URLs and atomic writes."""

from __future__ import annotations

import os

import pytest

from hvt import storage


def test_resolve_store_defaults_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("HVT_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert storage.resolve_store() == os.path.join(str(tmp_path), "hvt-store")
    monkeypatch.setenv("HVT_STORE", str(tmp_path / "s"))
    assert storage.resolve_store() == str(tmp_path / "s")
    assert storage.resolve_store("s3://bucket/prefix/") == "s3://bucket/prefix"


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(storage.StoreError, match="unknown protocol 'nope'"):
        storage.resolve_store("nope://x")


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a" / "file.bin"
    with pytest.raises(RuntimeError):
        with storage.atomic_open(str(target)) as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "a").iterdir()) == []
    storage.write_json(str(target), {"x": 1})
    assert storage.read_json(str(target)) == {"x": 1}


def test_join_keeps_url_scheme():
    assert storage.join("s3://b/p", "runs", "x") == "s3://b/p/runs/x"
    assert storage.join("/tmp/a", "b") == "/tmp/a/b"
