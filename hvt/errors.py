"""Exceptions that mean "the input is wrong, here is what to do" — the CLI prints them without a traceback."""

from __future__ import annotations

from hvt.registry import RegistryError
from hvt.storage import StoreError


class InputError(ValueError):
    """A file, URL or argument given by the user cannot be used."""


def _collect() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [InputError, RegistryError, StoreError, FileNotFoundError]
    try:
        from hvt.train.trainer import TrainingError

        errors.append(TrainingError)
    except ImportError:
        pass
    for module, name in (("hvt.ingest", "ShardingError"), ("hvt.data", "VideoDecodeError"), ("hvt.model", "ModelError"),
                         ("hvt.model", "WeightsError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


USER_ERRORS = _collect()
