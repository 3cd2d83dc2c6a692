"""Lazy package exports (PEP 562): ``from hvt.data import DataConfig`` without importing Ray, torch or decord
until a name that needs them is used. Keeps ``hvt --help`` and every command's ``--help`` fast.

A package lists its public names in ``_LAZY_EXPORTS = {"Name": "submodule", ...}`` and sets
``__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)``. ``tests/test_architecture.py`` reads
that dict, so a name imported from the package counts as an import of its submodule in the cycle check.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``(__getattr__, __dir__, __all__)`` for ``package`` resolving each name from its submodule.

    Raises:
        AttributeError: for a name the package does not export (as a normal module attribute lookup would).
    """

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
