"""One way to name a model on every command: ``--model NAME[@REF]``, ``--model REF`` or ``--model PATH``.

- ``NAME@REF``: registered model ``NAME`` at ``REF`` (``champion`` or another alias, ``latest``, ``vN``);
- ``NAME``: that model's ``champion``, when ``NAME`` is a registered model in the store;
- ``REF`` alone: the store's only model at ``REF`` (an error naming the models when there are several);
- ``PATH``: a ``model.pt`` (or a training checkpoint's ``train_state.pt``), local or an fsspec URL: anything with a
  ``/``, ending ``.pt``/``.pth``, or an existing file.

Nothing here imports torch: the CLI resolves a reference before loading anything heavy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from hvt.registry.versions import CHAMPION, RegistryError, get_alias, list_models, registry_root

_NAME = r"[A-Za-z0-9][\w.-]*"
_REF = r"(?:v\d+|latest|[A-Za-z][\w-]*)"
_SPEC = re.compile(rf"^(?P<name>{_NAME})?(?:@(?P<ref>{_REF}))?$")
_BUILTIN_REF = re.compile(r"^(?:v\d+|latest|champion)$")


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``--model`` value: a registry ``name`` at ``ref``, or a ``path`` (then name and ref are None)."""

    name: str | None = None
    ref: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return self.path if self.path else f"{self.name}@{self.ref}"


def looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith((".pt", ".pth")) or os.path.exists(text)


def parse_model_ref(text: str, store: str | None = None) -> ModelRef:
    """Resolve ``text`` (see the module doc) against the registry in ``store``.

    ``store`` may be None only for ``NAME@REF`` and paths. Raises :class:`RegistryError` with a one-line message
    naming ``text`` and what to pass instead: malformed, no models registered, or ``REF`` alone with several models.
    """
    text = text.strip()
    if not text:
        raise RegistryError("--model '': pass NAME[@REF] (e.g. haltingvt-micro-g07-b10@champion), REF or a model.pt path")
    if looks_like_path(text):
        return ModelRef(path=text)
    match = _SPEC.match(text)
    if not match:
        raise RegistryError(
            f"--model {text!r}: expected NAME[@REF] (e.g. haltingvt-micro-g07-b10@v3), REF (champion, latest, vN) "
            "or a model.pt path"
        )
    name, ref = match.group("name"), match.group("ref")
    if name and ref:
        return ModelRef(name=name, ref=ref)
    if store is None:
        raise RegistryError(f"--model {text}: no store to look it up in; pass --store or NAME@REF")
    models = list_models(store)
    if not models:
        raise RegistryError(
            f"--model {text}: no registered models in {registry_root(store)}; train one (`hvt train`) or pass a "
            "model.pt path"
        )
    if name and not ref:
        if name in models:
            return ModelRef(name=name, ref=CHAMPION)
        if not (_BUILTIN_REF.match(name) or any(get_alias(store, model, name) for model in models)):
            close = [model for model in models if model.startswith(name)]
            hint = f"did you mean {close[0]}? " if len(close) == 1 else ""
            raise RegistryError(
                f"--model {text}: no registered model, version or alias named {name} in {registry_root(store)}; "
                f"{hint}registered: {', '.join(models)} (e.g. --model {(close or models)[0]}@champion)"
            )
        ref, name = name, None  # a bare REF of the store's only model
    if len(models) > 1:
        raise RegistryError(
            f"--model {text}: {registry_root(store)} holds {len(models)} models ({', '.join(models)}); name one, "
            f"e.g. --model {models[0]}@{ref}"
        )
    return ModelRef(name=models[0], ref=ref)
