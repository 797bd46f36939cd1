"""The best checkpoint: the model's plain `state_dict` and its JSON sidecar.

`data/saimp_best.pth` holds only tensors (loadable with `torch.load(path,
weights_only=True)` anywhere), `data/saimp_best.json` what inference needs beside them
(see `sidecar.sidecar_for`). Both are written atomically (`atomic.atomic_write`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.modelling.checkpointing.atomic import (
    CheckpointError,
    atomic_save_json,
    atomic_save_torch,
    safe_load,
)


def sidecar_path(checkpoint: Path) -> Path:
    """`data/saimp_best.pth` -> `data/saimp_best.json`."""
    return Path(checkpoint).with_suffix(".json")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights on the CPU, with no `module.` prefix, ready for any device."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def save_best(model: nn.Module, path: Path, sidecar: dict[str, Any]) -> None:
    """Write the best weights, then their sidecar JSON (what inference needs)."""
    atomic_save_torch(plain_state_dict(model), path)
    atomic_save_json(sidecar, sidecar_path(path))


def as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """`obj` (read from `path`) if it is a plain `state_dict` of tensors, else an error."""
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path} is not a model state_dict (a mapping of names to tensors)")
    return obj


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a best-model file and check it is a plain `state_dict` of tensors."""
    return as_state_dict(safe_load(path), path)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes that DDP (`module.`) and `torch.compile` (`_orig_mod.`) add to a state_dict."""


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`module.encoder.weight` -> `encoder.weight`, when every key has such a prefix."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _names(keys: list[str], most: int = 4) -> str:
    shown = ", ".join(keys[:most])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > most else shown


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, or raise one `CheckpointError` line that says why not.

    Wrapper prefixes (`module.`, `_orig_mod.`) are stripped first. The error names the
    missing and unexpected keys and the first shape mismatch, where torch's own message
    spans many lines.
    """
    state = strip_wrapper_prefixes(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), first: {shapes[0]}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    model.load_state_dict(state)


def load_sidecar(checkpoint: Path) -> dict[str, Any]:
    path = sidecar_path(checkpoint)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} not found: the checkpoint's JSON sidecar holds the model config and "
            "normalisation; keep it beside the .pth file"
        ) from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
