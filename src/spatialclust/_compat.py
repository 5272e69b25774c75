"""Optional-dependency and device helpers."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, package: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ImportError saying what to install.

    Parameters
    ----------
    module
        Importable module name, e.g. ``"pyimzml.ImzMLParser"``.
    package
        PyPI package providing it (defaults to the top-level module name).
    purpose
        What it is needed for, shown in the error.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pkg = package or module.split(".")[0]
        why = f" for {purpose}" if purpose else ""
        raise ImportError(f"`{pkg}` is required{why}. Install it with `pip install {pkg}`.") from err


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` if available, else ``"mps"``, else ``"cpu"``; other values pass through."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"`device`={device!r} requested but CUDA is not available; use 'auto' or 'cpu'.")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) PyTorch."""
    import random
    import sys

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
