"""Where the read-only test material of ``../shared`` lives, and the one rule for using it (no tests here).

``../shared`` (beside the checkout) holds real clips, golden outputs of the released code and tricky inputs; it is
never copied into the project. A test that needs it calls :func:`shared_path`: on a developer's checkout without
it the test is skipped, but under CI (``CI`` set to 1/true/yes, as ``.ci/run`` does) a missing folder fails the
test, so CI can never go green by skipping the checks against the truth.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALDATA = SHARED / "realdata"
FIDELITY = SHARED / "fidelity"
INPUTS = SHARED / "inputs"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def shared_path(*parts: str) -> Path:
    """``../shared/<parts...>`` when it exists; else skip the test (fail under CI) with what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if running_in_ci():
            pytest.fail(f"CI is set but the shared test material {path} is missing (CI must provide ../shared)")
        pytest.skip(f"shared test material {path} not present (it lives in ../shared beside the checkout)")
    return path
