"""The one rule for ../shared: skipped on a developer's checkout without it, a failure under CI."""

from __future__ import annotations

import pytest
import shared_data


@pytest.mark.parametrize("ci", ["true", "1", "YES"])
def test_missing_shared_material_fails_under_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setattr(shared_data, "SHARED", tmp_path / "no-shared")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI is set but the shared test material .*realdata"):
        shared_data.shared_path("realdata")


def test_missing_shared_material_skips_outside_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(shared_data, "SHARED", tmp_path / "no-shared")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="fidelity"):
        shared_data.shared_path("fidelity", "case.pt")


def test_present_material_is_returned(monkeypatch, tmp_path):
    (tmp_path / "inputs").mkdir()
    monkeypatch.setattr(shared_data, "SHARED", tmp_path)
    monkeypatch.setenv("CI", "true")
    assert shared_data.shared_path("inputs") == tmp_path / "inputs"
