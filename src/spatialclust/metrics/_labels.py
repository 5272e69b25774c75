"""Label validation and cluster counts (number of meaningful clusters, size of the noise cluster)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Label of the noise "cluster" (DBSCAN, HDBSCAN, UMAP-DBSCAN).
NOISE = -1


def check_labels(labels: Any, *, name: str = "labels", n: int | None = None) -> np.ndarray:
    """Labels as a 1-D int64 array; ``-1`` is noise, other negative values are rejected.

    Raises a ValueError naming ``name`` when the labels are not 1-D integers, are empty, contain
    negative values other than ``-1`` or (with ``n``) do not have ``n`` entries.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one label per image); received shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if n is not None and arr.size != n:
        raise ValueError(f"`{name}` has {arr.size} entries; expected {n} (one per image).")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"`{name}` must hold integer cluster labels; received non-integer values.")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"`{name}` must hold integer cluster labels; received dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if (arr < NOISE).any():
        raise ValueError(f"`{name}` contains negative labels other than -1 (noise): {sorted(set(arr[arr < NOISE].tolist()))[:5]}.")
    return arr


def encode_classes(truth: Any, *, name: str = "truth", n: int | None = None) -> np.ndarray:
    """Ground-truth classes of any hashable type as int codes 0..C-1 (no noise class)."""
    arr = np.asarray(truth)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one class per image); received shape {arr.shape}.")
    if n is not None and arr.size != n:
        raise ValueError(f"`{name}` has {arr.size} entries; expected {n} (one per image).")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty.")
    _, codes = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return codes.astype(np.int64)


def noise_size(labels: Any) -> int:
    """Number of images in the noise cluster (label ``-1``), as in Table 1 of Zhang et al. (2024, seed 000)."""
    return int((check_labels(labels) == NOISE).sum())


def n_meaningful_clusters(labels: Any, *, min_size: int = 2) -> int:
    """Number of meaningful clusters (Zhang et al. 2024, seed 000, "Number of Clusters").

    Meaningful clusters exclude the noise cluster defined by DBSCAN (label ``-1``) and clusters
    that contain a single image (``min_size=2``). The paper's third criterion, clusters holding
    only noisy images, needs visual inspection and is not applied.
    """
    arr = check_labels(labels)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"`min_size` must be a positive integer; received {min_size!r}.")
    _, counts = np.unique(arr[arr != NOISE], return_counts=True)
    return int((counts >= min_size).sum())


def n_clusters(labels: Any) -> int:
    """Number of clusters, noise excluded."""
    arr = check_labels(labels)
    return int(np.unique(arr[arr != NOISE]).size)
