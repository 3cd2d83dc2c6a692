"""Exceptions that mean "the input is wrong, here is what to do" — the CLI prints them without a traceback.

Kept free of heavy imports: the CLI's parser and every command's ``--help`` load this module.
"""

from __future__ import annotations

import sys


class InputError(ValueError):
    """A file, URL or argument given by the user cannot be used."""


# Error types raised by the library for bad input, by module; imported when a command has failed.
_USER_ERROR_TYPES = (
    ("hvt.registry", "RegistryError"),
    ("hvt.storage", "StoreError"),
    ("hvt.train.trainer", "TrainingError"),
    ("hvt.train.preflight", "PreflightError"),
    ("hvt.train.warm_start", "WarmStartError"),
    ("hvt.ingest.shard", "ShardingError"),
    ("hvt.ingest.versions", "DatasetError"),
    ("hvt.ingest.annotations", "AnnotationError"),
    ("hvt.data.video_reader", "VideoDecodeError"),
    ("hvt.model.weights", "WeightsError"),
    ("hvt.integrity", "DataIntegrityError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI reports as one line (exit code 2) instead of a traceback."""
    errors: list[type[BaseException]] = [InputError, FileNotFoundError]
    for module, name in _USER_ERROR_TYPES:
        # only modules already imported: an error type whose module never loaded cannot have been raised, and
        # importing them here would load torch and Ray just to print one line
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, name):
            errors.append(getattr(loaded, name))
    return tuple(errors)
