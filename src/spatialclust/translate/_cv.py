"""Spatially blocked cross-validation and leave-one-section-out folds.

Random spot-level folds leak information: a held-out spot's neighbours are in the training set and
neighbouring spots share most of their signal, so random-spot CV overestimates how well a model
predicts unseen tissue (Roberts et al. 2017, "Cross-validation strategies for data with temporal,
spatial, hierarchical, or phylogenetic structure", Ecography). Folds here hold out whole spatial
blocks (optionally with a buffer zone removed from training) or whole sections.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .._registry import invalid_option

__all__ = ["inner_folds", "min_train_test_distance", "spatial_blocks", "spatial_folds", "validation_split"]

_FOLD_METHODS = ("blocks", "sections")


def _groups(n: int, groups: np.ndarray | None) -> np.ndarray:
    return np.zeros(n, dtype=object).astype(str) if groups is None else np.asarray(groups).astype(str)


def spatial_blocks(coords: np.ndarray, *, block_size: float | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Label of the square spatial block (side ``block_size``) of every spot, per section.

    ``block_size`` defaults to a quarter of the larger side of each section's extent (about 16
    blocks per section).
    """
    coords = np.asarray(coords, dtype=float)
    groups = _groups(len(coords), groups)
    labels = np.empty(len(coords), dtype=object)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        xy = coords[idx]
        lo = xy.min(0)
        size = block_size if block_size is not None else max(float(np.ptp(xy, axis=0).max()) / 4, 1e-9)
        if not size > 0:
            raise ValueError(f"`block_size` must be > 0, got {block_size!r}.")
        cell = np.floor((xy - lo) / size).astype(int)
        labels[idx] = [f"{g}|{a}|{b}" for a, b in cell]
    return labels.astype(str)


def min_train_test_distance(coords: np.ndarray, train: np.ndarray, test: np.ndarray, *, groups: np.ndarray | None = None) -> float:
    """Smallest distance between a training and a test spot of the same section (inf if none share one)."""
    coords = np.asarray(coords, dtype=float)
    groups = _groups(len(coords), groups)
    best = np.inf
    for g in np.unique(groups[test]):
        tr = train[groups[train] == g]
        te = test[groups[test] == g]
        if len(tr) and len(te):
            best = min(best, float(cKDTree(coords[tr]).query(coords[te])[0].min()))
    return best


def _drop_buffer(coords, groups, train, test, buffer):
    if buffer <= 0:
        return train
    keep = np.ones(len(train), dtype=bool)
    for g in np.unique(groups[test]):
        in_g = groups[train] == g
        te = test[groups[test] == g]
        if in_g.any():
            dist, _ = cKDTree(coords[te]).query(coords[train[in_g]])
            keep[np.flatnonzero(in_g)[dist <= buffer]] = False
    return train[keep]


def spatial_folds(
    coords: np.ndarray,
    *,
    method: str = "blocks",
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    block_size: float | None = None,
    buffer: float = 0.0,
    random_state: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs that never split neighbouring spots at random.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    method
        ``"blocks"``: spatial blocks of side ``block_size`` (see :func:`spatial_blocks`) are assigned
        to ``n_splits`` folds of balanced size (random block order from ``random_state``).
        ``"sections"``: leave one section (``groups``) out; needs >= 2 sections.
    groups
        Section label of every spot.
    n_splits
        Number of folds for ``"blocks"``.
    block_size
        Side of a block in coordinate units.
    buffer
        Training spots within this distance of a test spot (same section) are removed from the
        training set of that fold, so no training spot is a direct neighbour of a test spot.
    random_state
        Seed of the block-to-fold assignment.

    Returns
    -------
    List of ``(train_indices, test_indices)``.
    """
    coords = np.asarray(coords, dtype=float)
    n = len(coords)
    labels_groups = _groups(n, groups)
    if method not in _FOLD_METHODS:
        raise invalid_option(method, "method", _FOLD_METHODS)
    if buffer < 0:
        raise ValueError(f"`buffer` must be >= 0, got {buffer!r}.")
    if method == "sections":
        if groups is None:
            raise ValueError("Leave-one-section-out (`method='sections'`) needs the section of every spot (`groups`).")
        sections = np.unique(labels_groups)
        if len(sections) < 2:
            raise ValueError(
                f"Leave-one-section-out needs at least 2 sections, got {len(sections)} ({sections.tolist()}); "
                "use method='blocks' (spatially blocked folds) for a single section."
            )
        fold_of = {s: i for i, s in enumerate(sections)}
        fold = np.array([fold_of[s] for s in labels_groups])
        n_folds = len(sections)
    else:
        if int(n_splits) != n_splits or n_splits < 2:
            raise ValueError(f"`n_splits` must be an integer >= 2, got {n_splits!r}.")
        blocks = spatial_blocks(coords, block_size=block_size, groups=groups)
        names, inverse, sizes = np.unique(blocks, return_inverse=True, return_counts=True)
        if len(names) < n_splits:
            raise ValueError(
                f"Only {len(names)} spatial blocks for `n_splits`={n_splits} folds; use a smaller `block_size` or fewer folds."
            )
        rng = np.random.default_rng(random_state)
        order = rng.permutation(len(names))
        order = order[np.argsort(-sizes[order], kind="stable")]
        load = np.zeros(n_splits)
        block_fold = np.empty(len(names), dtype=int)
        for b in order:
            f = int(load.argmin())
            block_fold[b] = f
            load[f] += sizes[b]
        fold = block_fold[inverse]
        n_folds = n_splits
    folds = []
    for f in range(n_folds):
        test = np.flatnonzero(fold == f)
        train = _drop_buffer(coords, labels_groups, np.flatnonzero(fold != f), test, buffer)
        folds.append((train, test))
    return folds


def inner_folds(
    coords: np.ndarray | None, n: int, *, groups: np.ndarray | None = None, n_splits: int = 3, random_state: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner folds on training spots (model selection, calibration, per-metabolite choices).

    With >= 3 sections whole sections are held out (grouped into at most ``n_splits`` folds), so an
    inner estimate sees the same between-section shift as a leave-one-section-out evaluation;
    otherwise spatially blocked folds; without coordinates random folds over spots.
    """
    if int(n_splits) != n_splits or n_splits < 2:
        raise ValueError(f"`n_splits` must be an integer >= 2, got {n_splits!r}.")
    rng = np.random.default_rng(random_state)
    if coords is None:
        fold = rng.permutation(n) % int(n_splits)
    elif groups is not None and len(np.unique(groups)) >= 3:
        sections = rng.permutation(np.unique(np.asarray(groups).astype(str)))
        fold_of = {s: i % int(n_splits) for i, s in enumerate(sections)}
        fold = np.array([fold_of[s] for s in np.asarray(groups).astype(str)])
    else:
        return spatial_folds(coords, method="blocks", groups=groups, n_splits=n_splits, random_state=random_state)
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in np.unique(fold)]


def validation_split(
    coords: np.ndarray | None, n: int, *, groups: np.ndarray | None = None, fraction: float = 0.2, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Inner train/validation split for early stopping: whole spatial blocks when ``coords`` is given.

    Without coordinates the split is random over spots (logged by the caller).
    """
    rng = np.random.default_rng(random_state)
    if coords is None:
        perm = rng.permutation(n)
        n_val = max(1, int(round(fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    blocks = spatial_blocks(coords, groups=groups)
    names = rng.permutation(np.unique(blocks))
    val = np.zeros(n, dtype=bool)
    for b in names:
        if val.mean() >= fraction:
            break
        val |= blocks == b
    if val.all() or not val.any():
        perm = rng.permutation(n)
        val[:] = False
        val[perm[: max(1, int(round(fraction * n)))]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)
