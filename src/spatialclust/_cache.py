"""On-disk cache of computed arrays (e.g. neural ion images), keyed by the data and the parameters.

Embedding thousands of ion images through a network is the slow step of the neural pipelines;
clustering is cheap and is re-run many times with other parameters. With a cache directory, an
embedding is computed once and then read back whenever the same images are embedded with the
same parameters and the same network weights. Entries are ``<cache_dir>/<name>-<sha256>.npy``,
written atomically; the key covers every input that changes the result, so an entry is never stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path
from ._logging import logger

__all__ = ["Fingerprint", "cached_array_path", "load_cached_array", "save_cached_array"]


class Fingerprint:
    """Incremental SHA-256 over arrays, tensors and JSON-serialisable values."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, value: Any) -> Fingerprint:
        """Add ``value`` (numpy array, torch tensor, or JSON-serialisable object) to the fingerprint."""
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
            value = value.detach().cpu().contiguous().numpy()
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            self._hash.update(f"ndarray:{arr.dtype.str}:{arr.shape}".encode())
            self._hash.update(arr.data)
        else:
            self._hash.update(json.dumps(value, sort_keys=True, default=str).encode())
        return self

    def hexdigest(self) -> str:
        """The key."""
        return self._hash.hexdigest()


def cached_array_path(cache_dir: str | os.PathLike, name: str, key: str) -> Path:
    """Path of the cache entry ``name`` with ``key``."""
    return Path(cache_dir) / f"{name}-{key}.npy"


def load_cached_array(cache_dir: str | os.PathLike | None, name: str, key: str) -> np.ndarray | None:
    """The cached array, or None if caching is off (``cache_dir=None``) or there is no entry."""
    if cache_dir is None:
        return None
    path = cached_array_path(cache_dir, name, key)
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        logger.warning("Ignoring unreadable cache entry %s (%s).", path, err)
        return None
    logger.info("Loaded %s from cache %s.", name, path)
    return array


def save_cached_array(cache_dir: str | os.PathLike | None, name: str, key: str, array: np.ndarray) -> Path | None:
    """Write ``array`` to the cache atomically; no-op when ``cache_dir`` is None."""
    if cache_dir is None:
        return None
    path = cached_array_path(cache_dir, name, key)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)
    logger.info("Cached %s at %s.", name, path)
    return path
