"""Spectral angle mapper (SAM) per cluster (Kruse et al., 1993), as used by DARLC (seed 003, §4.2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._labels import check_labels


def spectral_angle_mapper(X: Any, labels: Any) -> dict[int, float]:
    """Mean spectral angle (radians) between every member of a cluster and the cluster's mean.

    Lower values mean more similar members. ``X`` holds one row per image (e.g. the flattened
    on-tissue pixels); noise (-1) is ignored. An all-zero row has an undefined angle and is skipped.

    Returns
    -------
    ``{cluster label: mean angle}``.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"`X` must be 2-D (n_images, n_values); received shape {arr.shape}.")
    lab = check_labels(labels, n=arr.shape[0])
    out: dict[int, float] = {}
    for k in np.unique(lab[lab >= 0]):
        members = arr[lab == k]
        centre = members.mean(axis=0)
        norms = np.linalg.norm(members, axis=1) * np.linalg.norm(centre)
        ok = norms > 0
        if not ok.any():
            continue
        cos = np.clip(members[ok] @ centre / norms[ok], -1.0, 1.0)
        out[int(k)] = float(np.mean(np.arccos(cos)))
    return out


def cluster_quality_groups(sam: dict[int, float], *, threshold: float | None = None) -> dict[int, str]:
    """Split clusters into ``"high"`` (SAM <= threshold) and ``"medium"`` quality (DARLC §4.2).

    ``threshold`` defaults to the median SAM over clusters.
    """
    if not sam:
        return {}
    cut = float(np.median(list(sam.values()))) if threshold is None else float(threshold)
    return {k: ("high" if v <= cut else "medium") for k, v in sam.items()}
