"""Spatial context of the translator: a k-nearest-neighbour spot graph within sections, the
neighbourhood-averaged expression it gives as extra input, and Moran's I of residual maps.

A spot's metabolites depend on its tissue neighbourhood, not only on its own (noisy, sparse)
expression: the neighbourhood mean is a denoised estimate of the local expression state, the way
spatial smoothing is used in spatial transcriptomics (e.g. the neighbourhood aggregation of
BANKSY, Singhal et al. 2024, Nat. Genet.). Sections are never linked by the graph.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

__all__ = ["morans_i", "neighbourhood_mean", "spatial_features", "spot_graph"]


def _check_coords(coords, n: int) -> np.ndarray:
    if coords is None:
        raise ValueError("Spatial context needs the spot coordinates (`coords`, (n_spots, 2)); got None.")
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[0] != n or coords.shape[1] < 2:
        raise ValueError(f"`coords` must have shape ({n}, 2), got {coords.shape}.")
    return coords[:, :2]


def spot_graph(coords, *, groups=None, n_neighbors: int = 6, include_self: bool = False) -> sparse.csr_matrix:
    """Row-normalised k-nearest-neighbour graph of the spots, within each section.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    groups
        Section of every spot (spots of different sections are never neighbours).
    n_neighbors
        Neighbours per spot (6: the first ring of a hexagonal Visium grid; fewer when a section has
        fewer spots).
    include_self
        Also weight the spot itself (one share, like each neighbour).

    Returns
    -------
    ``(n_spots, n_spots)`` CSR matrix whose rows sum to 1 (a spot alone in its section: 0 row,
    unless ``include_self``).
    """
    if int(n_neighbors) != n_neighbors or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be an integer >= 1, got {n_neighbors!r}.")
    n = len(coords) if coords is not None else 0
    coords = _check_coords(coords, n)
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    rows, cols = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = min(int(n_neighbors), len(idx) - 1)
        if include_self:
            rows.append(idx)
            cols.append(idx)
        if k < 1:
            continue
        _, nn = cKDTree(coords[idx]).query(coords[idx], k=k + 1)
        rows.append(np.repeat(idx, k))
        cols.append(idx[nn[:, 1:]].ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    degree = np.asarray(graph.sum(1)).ravel()
    return sparse.diags(np.where(degree > 0, 1.0 / np.maximum(degree, 1e-12), 0.0)) @ graph


def neighbourhood_mean(X, coords, *, groups=None, n_neighbors: int = 6) -> np.ndarray:
    """Mean of ``X`` over each spot and its ``n_neighbors`` nearest spots (same section)."""
    X = np.asarray(X, dtype=float)
    return np.asarray(spot_graph(coords, groups=groups, n_neighbors=n_neighbors, include_self=True) @ X)


def spatial_features(X, coords, *, groups=None, n_neighbors: int = 6, coordinates: bool = False) -> np.ndarray:
    """``X`` with its neighbourhood mean appended (and, with ``coordinates``, the per-section
    standardised coordinates): the spatial-context input of :class:`TwoStageTranslator`.

    Coordinates are standardised within each section, so they mean "where in this section" and never
    carry the section identity (a leave-one-section-out model cannot use it).
    """
    X = np.asarray(X, dtype=float)
    coords = _check_coords(coords, len(X))
    parts = [X, neighbourhood_mean(X, coords, groups=groups, n_neighbors=n_neighbors)]
    if coordinates:
        groups_ = np.zeros(len(X), dtype=int) if groups is None else np.asarray(groups)
        scaled = np.zeros_like(coords)
        for g in np.unique(groups_):
            idx = groups_ == g
            scaled[idx] = (coords[idx] - coords[idx].mean(0)) / coords[idx].std(0).clip(1e-12)
        parts.append(scaled)
    return np.hstack(parts)


def morans_i(values, coords, *, groups=None, n_neighbors: int = 6) -> np.ndarray:
    """Moran's I of every column of ``values`` on the k-nearest-neighbour spot graph.

    ``I = (n / sum(w)) * sum_ij w_ij z_i z_j / sum_i z_i^2`` with ``z`` the column centred (per
    section, so a section-level offset is not counted as spatial structure) and ``w`` the
    row-normalised graph of :func:`spot_graph`. Applied to residuals (measured - predicted): ~0 when
    the errors are spatially random, > 0 when the model misses a spatially structured signal. A
    constant column gives NaN.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    coords = _check_coords(coords, len(values))
    groups_ = np.zeros(len(values), dtype=int) if groups is None else np.asarray(groups)
    z = values.copy()
    for g in np.unique(groups_):
        idx = groups_ == g
        z[idx] -= z[idx].mean(0)
    graph = spot_graph(coords, groups=groups_, n_neighbors=n_neighbors)
    num = np.einsum("ij,ij->j", z, np.asarray(graph @ z))
    den = (z**2).sum(0)
    scale = len(values) / max(float(graph.sum()), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * len(values), scale * num / np.where(den > 0, den, 1.0), np.nan)
