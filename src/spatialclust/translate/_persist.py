"""Save and load a fitted :class:`TwoStageTranslator` as a checkpoint (safetensors + config.json).

Every fitted array (input scaling, linear coefficients, cluster centroids, network weights) goes to
``model.safetensors``; parameters, names and small fitted values to ``config.json`` through the shared
:func:`spatialclust.models.save_checkpoint`. Nothing is pickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._models import create_intensity_model, create_presence_model
from ._signatures import SignatureMask
from ._two_stage import TwoStageTranslator

__all__ = ["load_translator", "save_translator"]

KIND = "st_msi_translator"
_PARTS = ("presence_model_", "intensity_model_", "unmasked_model_", "signatures_")
#: Top-level fitted arrays of the translator (stored as JSON lists, restored as arrays).
_ARRAYS = ("thresholds_", "absent_level_", "calibration_slope_", "calibration_intercept_")


def _split(estimator, prefix: str, tensors: dict[str, Any]) -> dict[str, Any]:
    """Put the fitted arrays of ``estimator`` into ``tensors``; return its JSON-able fitted values."""
    import torch

    values: dict[str, Any] = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if name == "module_":
            for key, tensor in value.state_dict().items():
                tensors[f"{prefix}.module.{key}"] = tensor
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            tensors[f"{prefix}.{name}"] = torch.as_tensor(np.ascontiguousarray(value))
        elif isinstance(value, np.ndarray):
            values[name] = {"__array__": value.tolist()}
        elif isinstance(value, dict):
            values[name] = {"__dict__": [[k, v] for k, v in value.items()]}
        else:
            values[name] = value
    return values


def _restore(estimator, prefix: str, values: dict[str, Any], tensors: dict[str, Any]):
    for name, value in values.items():
        if isinstance(value, dict) and "__array__" in value:
            value = np.asarray(value["__array__"])
        elif isinstance(value, dict) and "__dict__" in value:
            value = {k: v for k, v in value["__dict__"]}
        setattr(estimator, name, value)
    for key, tensor in tensors.items():
        if key.startswith(f"{prefix}.") and ".module." not in key:
            setattr(estimator, key[len(prefix) + 1 :], tensor.numpy())
    module_state = {k[len(prefix) + 8 :]: v for k, v in tensors.items() if k.startswith(f"{prefix}.module.")}
    if module_state:
        module = estimator.build(int(estimator.n_features_in_), int(estimator.n_outputs_))
        module.load_state_dict(module_state)
        estimator.module_ = module.eval()
    return estimator


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def save_translator(model: TwoStageTranslator, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write a fitted translator to the checkpoint directory ``path`` (atomically).

    Parameters
    ----------
    model
        Fitted :class:`TwoStageTranslator` whose stage models are given by name.
    path
        Checkpoint directory.
    metadata
        JSON-serialisable extras (preprocessing, metabolite m/z, training data) returned by
        :func:`load_translator`.
    """
    from ..models import save_checkpoint  # imports torch: only when saving

    if not hasattr(model, "intensity_model_"):
        raise ValueError("`model` is not fitted; call fit before saving it.")
    if not (isinstance(model.presence_model, str) and isinstance(model.intensity_model, str)):
        raise ValueError("Only translators whose `presence_model` and `intensity_model` are given by name can be saved.")
    tensors: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    for part in _PARTS:
        estimator = getattr(model, part)
        if estimator is not None:
            fitted[part] = {"params": estimator.get_params(), "values": _split(estimator, part, tensors)}
    top = {k: v for k, v in vars(model).items() if k.endswith("_") and k not in _PARTS}
    top = {k: _jsonable(v) for k, v in top.items()}
    config = {"architecture": {"params": model.get_params(), "fitted": fitted, "translator": top}, "metadata": metadata or {}}
    return save_checkpoint(path, tensors, config, kind=KIND)


def load_translator(path: str | os.PathLike) -> tuple[TwoStageTranslator, dict[str, Any]]:
    """Load a translator saved by :func:`save_translator`; returns ``(model, metadata)``."""
    from ..models import load_checkpoint  # imports torch: only when loading

    tensors, config = load_checkpoint(path, kind=KIND)
    arch = config["architecture"]
    model = TwoStageTranslator(**arch["params"])
    for key, value in arch["translator"].items():
        if key in _ARRAYS and value is not None:
            value = np.asarray(value, dtype=float)
        elif key == "inner_mse_" and value is not None:
            value = {k: np.asarray(v, dtype=float) for k, v in value.items()}
        setattr(model, key, value)
    for part in _PARTS:
        if part not in arch["fitted"]:
            setattr(model, part, None)
            continue
        params = arch["fitted"][part]["params"]
        if part == "signatures_":
            estimator = SignatureMask(**params)
        elif part == "presence_model_":
            estimator = create_presence_model(model.presence_model)
            estimator.set_params(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        else:  # intensity_model_ and unmasked_model_: the same stage-2 model, fitted on present / all spots
            estimator = create_intensity_model(model.intensity_model)
            estimator.set_params(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        setattr(model, part, _restore(estimator, part, arch["fitted"][part]["values"], tensors))
    if model.signatures_ is not None:
        model.signatures_.signatures_ = {str(k): list(v) for k, v in model.signatures_.signatures_.items()}
    return model, config.get("metadata", {})
