"""What a training checkpoint holds, and how it is written and read back.

One file, ``train_state.pt``, loadable with ``torch.load(weights_only=True)``: model and optimiser/scheduler state,
epoch and step counters, torch RNG state, the training config and the dataset manifest hash it was trained on.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch

STATE_FILE = "train_state.pt"


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(directory: str, payload: dict[str, Any]) -> str:
    path = os.path.join(directory, STATE_FILE)
    torch.save(payload, path)
    return path


def load_train_state(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint directory {directory!r} has no {STATE_FILE}")
    return torch.load(path, map_location="cpu", weights_only=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper (state dicts without the ``module.`` prefix)."""
    return model.module if hasattr(model, "module") else model
