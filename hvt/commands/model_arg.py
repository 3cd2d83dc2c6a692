"""`--model NAME[@REF]`: the one way commands that use a model (evaluate, predict) name it.

The forms are ``hvt.registry.refs``'s: ``NAME@REF``, ``NAME`` (its champion), ``REF`` alone (the store's only model)
or a ``model.pt`` ``PATH``. The older spellings (`hvt evaluate MODEL --ref REF`, `hvt predict --registry-name NAME
--model REF`) still work and are folded into one reference here.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hvt.registry.refs import ModelRef

MODEL_HELP = (
    "the model: NAME@REF (REF: vN, latest, champion or another alias), NAME (its champion), REF alone (the store's "
    "only model; an error names the models when there are several)"
)


def add_model_argument(parser: argparse.ArgumentParser, *, paths: bool, dest: str = "model") -> argparse.Action:
    """Add ``--model NAME[@REF]`` (and, with ``paths``, a model.pt PATH) to ``parser``; default: the champion of
    the store's only model."""
    text = MODEL_HELP + (" or a model.pt PATH (local or URL)" if paths else "")
    return parser.add_argument("--model", dest=dest, default=None, metavar="NAME[@REF]",
                               help=f"{text} (default: the champion of the store's only model)")


def resolve_model(
    text: str | None,
    store: str,
    *,
    legacy_name: str | None = None,
    legacy_ref: str | None = None,
    paths: bool = True,
) -> ModelRef:
    """The model ``--model text`` names in ``store``, with the deprecated separate name / ref folded in.

    ``legacy_name`` (`--registry-name`, `hvt evaluate`'s positional MODEL) with ``text`` as a REF; ``legacy_ref``
    (`--ref`) with ``text`` as a NAME. Raises ``InputError`` / ``RegistryError`` with one line naming the input."""
    from hvt.errors import InputError
    from hvt.registry.refs import looks_like_path, parse_model_ref

    if text and legacy_name and "@" in text:
        raise InputError(f"--model {text} names a model and so does {legacy_name!r}: give only --model NAME@REF")
    if text and legacy_ref and "@" in text:
        raise InputError(f"--model {text} has a REF and --ref {legacy_ref} gives another: give only --model NAME@REF")
    if legacy_name:
        if text and looks_like_path(text):
            raise InputError(f"--model {text} is a file, and {legacy_name!r} a registered name: give one of them")
        text = f"{legacy_name}@{text or legacy_ref or 'champion'}"
    elif legacy_ref:
        text = f"{text}@{legacy_ref}" if text else legacy_ref
    reference = parse_model_ref(text or "champion", store)
    if reference.path and not paths:
        raise InputError(
            f"--model {reference.path}: this command takes a registered model; register the file first "
            "(`hvt registry import NAME --weights FILE --variant VARIANT`), then pass --model NAME[@REF]"
        )
    return reference
