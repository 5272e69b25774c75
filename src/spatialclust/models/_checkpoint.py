"""Model checkpoints: safetensors weights + a JSON config, written atomically, never pickled.

A checkpoint is a DIRECTORY::

    checkpoint/
      model.safetensors       model weights (state dict)
      optimizer.safetensors   tensors of the optimizer state (only for resumable training checkpoints)
      config.json             kind, architecture, preprocessing, training state, optimizer layout,
                              spatialclust_version

Every model that trains (SimCLR, DARLC, DINO, ...) saves and loads through :func:`save_checkpoint`
and :func:`load_checkpoint`, so all checkpoints carry their architecture (casanovo style) and a
mismatching one is refused with an error naming the differing fields. Only safetensors and JSON
are read: loading a checkpoint never unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .._atomic import atomic_path

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_optimizer_state",
    "is_checkpoint",
    "check_checkpoint_path",
]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or incompatible with what the caller expects."""


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory holding a checkpoint config and weights."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """Check that :func:`save_checkpoint` may write ``path``; return it.

    A missing path or an empty directory may be written, and a checkpoint written by
    :func:`save_checkpoint` (its ``config.json`` is the marker) replaced. Anything else (a file, a
    link, a folder holding other files) is refused: saving a model never deletes data it did not write.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a checkpoint directory holding only checkpoint files.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return path
    refuse = f"Checkpoint path {str(path)!r} exists and is not a spatialclust checkpoint"
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"{refuse} (it is a file or a link); choose a new checkpoint directory.")
    entries = sorted(os.listdir(path))
    if not entries:
        return path
    foreign = [e for e in entries if e not in (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE)]
    try:
        marked = not foreign and "format_version" in _read_config(path)
    except CheckpointError:
        marked = False
    if not marked:
        shown = ", ".join(repr(e) for e in (foreign or entries)[:5])
        raise FileExistsError(
            f"{refuse} (it holds {shown}); a checkpoint replaces only a checkpoint written by spatialclust, so "
            "nothing was written. Choose a new checkpoint directory."
        )
    return path


def _jsonable(value: Any) -> Any:
    """Round-trip ``value`` through JSON (tuples -> lists, numpy scalars -> Python)."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"value of type {type(obj).__name__} is not JSON serialisable")

    return json.loads(json.dumps(value, default=default))


def _split_optimizer_state(optimizer_state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a ``torch.optim.Optimizer.state_dict()`` into safetensors tensors and a JSON layout."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, state in optimizer_state.get("state", {}).items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    layout = {"param_groups": optimizer_state.get("param_groups", []), "scalars": scalars}
    return tensors, _jsonable(layout)


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    kind: str,
    optimizer_state: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (an interrupted save leaves the old one intact).

    Parameters
    ----------
    path
        Checkpoint directory to create, or to replace when it holds a checkpoint written here
        (anything else is refused, see :func:`check_checkpoint_path`).
    state_dict
        Model weights, ``name -> tensor``.
    config
        JSON-serialisable description of the model, conventionally with the sections
        ``architecture`` (everything needed to rebuild the model, incl. the backbone name) and
        ``preprocessing`` (input size, mean, std, ...).
    kind
        What the checkpoint holds, e.g. ``"simclr"``; :func:`load_checkpoint` checks it.
    optimizer_state
        ``optimizer.state_dict()`` for resuming training; its tensors go to
        ``optimizer.safetensors`` and its layout (param groups, scalar entries) to ``config.json``.
    training
        JSON-serialisable training state (``epoch``, scheduler state, loss history, ...).

    Returns
    -------
    The checkpoint directory.
    """
    from safetensors.torch import save_file

    if not kind or not isinstance(kind, str):
        raise ValueError(f"`kind` must be a non-empty string, got {kind!r}.")
    reserved = {"kind", "spatialclust_version", "format_version", "training", "optimizer"} & set(config)
    if reserved:
        raise ValueError(f"`config` must not set the reserved keys {sorted(reserved)}; they are filled in by save_checkpoint.")
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state_dict.items()}
    document: dict[str, Any] = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "spatialclust_version": __version__,
        **_jsonable(dict(config)),
        "training": _jsonable(dict(training or {})),
    }
    optimizer_tensors: dict[str, Any] | None = None
    if optimizer_state is not None:
        optimizer_tensors, document["optimizer"] = _split_optimizer_state(optimizer_state)
    path = check_checkpoint_path(path)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / MODEL_FILE), metadata={"kind": kind})
        if optimizer_tensors is not None:
            save_file(optimizer_tensors, str(tmp / OPTIMIZER_FILE), metadata={"kind": kind})
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    return path


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint {str(path)!r} is not a directory; a checkpoint is a folder with {CONFIG_FILE} and {MODEL_FILE}.")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} has no {CONFIG_FILE}; it is incomplete or not a spatialclust checkpoint.")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"Checkpoint file {str(config_file)!r} is corrupt (not valid JSON): {err}") from err
    if not isinstance(config, dict) or "kind" not in config:
        raise CheckpointError(f"Checkpoint file {str(config_file)!r} is not a spatialclust checkpoint config (no `kind`).")
    return config


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split("+")[0].split(".")[:2])


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any], where: str = "") -> list[str]:
    """Dotted names of the fields of ``expected`` whose value differs in ``found``."""
    out: list[str] = []
    for key, value in expected.items():
        dotted = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping) and isinstance(found.get(key), Mapping):
            out.extend(_differences(value, found[key], dotted))
        elif key not in found:
            out.append(f"`{dotted}` (expected {value!r}, missing in the checkpoint)")
        elif found[key] != value:
            out.append(f"`{dotted}` (expected {value!r}, checkpoint has {found[key]!r})")
    return out


def _load_safetensors(file: Path, device: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise CheckpointError(f"Checkpoint file {str(file)!r} is missing.")
    try:
        return load_file(str(file), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"Checkpoint file {str(file)!r} is corrupt or not a safetensors file: {err}") from err


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    expected: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path
        Checkpoint directory.
    kind
        Required kind (e.g. ``"simclr"``).
    expected
        Fields the checkpoint config must match, nested like the config, e.g.
        ``{"architecture": {"backbone": "efficientnet_lite0"}}``. Only the given fields are compared.
    device
        Device the tensors are loaded onto.

    Returns
    -------
    ``(state_dict, config)``; ``config`` is the full JSON document (with ``training``).

    Raises
    ------
    CheckpointError
        Missing/corrupt files, a different ``kind``, a ``spatialclust_version`` whose major.minor
        differs from the installed one, or fields differing from ``expected`` (all named).
    """
    path = Path(path)
    config = _read_config(path)
    if config["kind"] != kind:
        raise CheckpointError(f"Checkpoint {str(path)!r} holds a {config['kind']!r} model, expected a {kind!r} model.")
    saved_version = str(config.get("spatialclust_version", "unknown"))
    if _major_minor(saved_version) != _major_minor(__version__):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was written by spatialclust {saved_version}, which is incompatible with the "
            f"installed spatialclust {__version__} (major.minor differ); retrain the model or install spatialclust "
            f"{'.'.join(_major_minor(saved_version))}.x."
        )
    if expected:
        differing = _differences(_jsonable(dict(expected)), config)
        if differing:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} does not match the requested model: " + "; ".join(differing) + "."
            )
    state_dict = _load_safetensors(path / MODEL_FILE, device)
    return state_dict, config


def load_optimizer_state(path: str | os.PathLike, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()`` saved with the checkpoint, for ``optimizer.load_state_dict``.

    Parameters
    ----------
    path
        Checkpoint directory.
    config
        Its config as returned by :func:`load_checkpoint` (read again when omitted).
    """
    path = Path(path)
    config = dict(config) if config is not None else _read_config(path)
    layout = config.get("optimizer")
    if layout is None:
        raise CheckpointError(f"Checkpoint {str(path)!r} holds no optimizer state; it cannot be used to resume training.")
    tensors = _load_safetensors(path / OPTIMIZER_FILE, "cpu")
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = tensor
    for param_id, values in layout.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": layout["param_groups"]}
