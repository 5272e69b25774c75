"""Metrics on a representation: Davies-Bouldin (Euclidean, Pearson), silhouette, k-NN purity.

Noise images (label ``-1``) are left out of Davies-Bouldin and silhouette (they belong to no
cluster); at least two clusters must remain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .._neighbors import nearest_neighbors
from .._registry import invalid_option
from .._validation import check_features
from ._labels import NOISE, check_labels


def _clustered(X: Any, labels: Any, *, metric_name: str) -> tuple[np.ndarray, np.ndarray]:
    arr = check_features(X)
    lab = check_labels(labels, n=arr.shape[0])
    keep = lab != NOISE
    arr, lab = arr[keep], lab[keep]
    n_clusters = np.unique(lab).size
    if n_clusters < 2:
        raise ValueError(
            f"{metric_name} needs at least 2 clusters (noise excluded); `labels` has {n_clusters}."
        )
    return arr, lab


def pearson_distance(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``1 - r`` between every row of ``A`` and every row of ``B`` (Pearson correlation ``r``).

    Raises a ValueError when a row is constant (correlation undefined).
    """
    def standardise(M: np.ndarray, name: str) -> np.ndarray:
        centred = M - M.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1, keepdims=True)
        if (norm <= 1e-12).any():
            raise ValueError(f"Pearson distance is undefined for constant vectors ({name} has {int((norm <= 1e-12).sum())}).")
        return centred / norm

    return np.clip(1.0 - standardise(A, "X") @ standardise(B, "a cluster centroid").T, 0.0, 2.0)


def davies_bouldin(X: Any, labels: Any, *, metric: str = "euclidean") -> float:
    """Davies-Bouldin index (Davies & Bouldin 1979) with Euclidean or Pearson distance (DBIE / DBIP, seed 003).

    ``DBI = (1/K) sum_i max_{j != i} (s_i + s_j) / d(c_i, c_j)``, with ``c_i`` the centroid (mean)
    of cluster ``i``, ``s_i`` the mean distance of its members to ``c_i`` and ``d`` the
    Euclidean distance or the Pearson distance ``d(x, y) = 1 - r(x, y)`` (Song et al. 2022, as used
    by DARLC, seed 003). Lower is better. Two clusters with the same centroid give a ratio of 0
    (scikit-learn's convention). Noise (-1) is excluded.
    """
    if metric not in ("euclidean", "pearson"):
        raise invalid_option(metric, "metric", ["euclidean", "pearson"])
    arr, lab = _clustered(X, labels, metric_name="Davies-Bouldin index")
    ids, codes = np.unique(lab, return_inverse=True)
    k = ids.size
    centroids = np.stack([arr[codes == i].mean(axis=0) for i in range(k)])
    if metric == "euclidean":
        scatter = np.array([np.linalg.norm(arr[codes == i] - centroids[i], axis=1).mean() for i in range(k)])
        sep = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    else:
        scatter = np.array([pearson_distance(arr[codes == i], centroids[i : i + 1]).mean() for i in range(k)])
        sep = pearson_distance(centroids, centroids)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (scatter[:, None] + scatter[None, :]) / sep
    ratio[~np.isfinite(ratio)] = 0.0
    np.fill_diagonal(ratio, -np.inf)
    return float(ratio.max(axis=1).mean())


#: Above this many images the silhouette is estimated on a random sample of this many images.
SILHOUETTE_MAX_IMAGES = 20_000


def silhouette(X: Any, labels: Any, *, metric: str = "euclidean", random_state: int | None = 0) -> float:
    """Mean silhouette coefficient ``(b - a) / max(a, b)`` (Rousseeuw 1987), noise excluded.

    ``a`` is the mean distance to the own cluster, ``b`` to the nearest other cluster; in [-1, 1],
    higher is better. ``metric`` is ``"euclidean"``, ``"cosine"`` or ``"pearson"`` (1 - r).

    Its cost grows as ``n^2`` (scikit-learn computes the distances in row blocks, never an
    ``(n, n)`` array); above :data:`SILHOUETTE_MAX_IMAGES` images it is the silhouette of that many
    images drawn at random (seed ``random_state``; scikit-learn's ``sample_size``).
    """
    from sklearn.metrics import silhouette_score

    metrics = {"euclidean": "euclidean", "cosine": "cosine", "pearson": "correlation"}
    if metric not in metrics:
        raise invalid_option(metric, "metric", list(metrics))
    arr, lab = _clustered(X, labels, metric_name="The silhouette")
    if np.unique(lab).size >= arr.shape[0]:
        raise ValueError(f"The silhouette needs fewer clusters than images; `labels` has {arr.shape[0]} clusters for {arr.shape[0]} images.")
    sample = SILHOUETTE_MAX_IMAGES if arr.shape[0] > SILHOUETTE_MAX_IMAGES else None
    return float(silhouette_score(arr, lab, metric=metrics[metric], sample_size=sample, random_state=random_state))


def knn_purity(X: Any, labels: Any, *, ks: Iterable[int] = range(1, 31), metric: str = "cosine") -> dict[int, float]:
    """Purity of k-nearest-neighbour neighbourhoods for every k in ``ks`` (Hu et al. 2022, seed 001, Fig. 2e).

    For every image (anchor) its ``k`` nearest neighbours in ``X`` (the anchor itself excluded)
    are found and the fraction of (anchor, neighbour) pairs with the same label is returned:
    ``P(k) = (1 / (N k)) sum_i sum_{j in kNN(i)} 1[y_j = y_i]``. Seed 001 uses cosine similarity of
    the representations and the manual annotation as labels. Anchors labelled ``-1`` are skipped;
    neighbours labelled ``-1`` never match.

    Neighbours are exact up to :data:`spatialclust._neighbors.EXACT_KNN_MAX_IMAGES` images and
    approximate (NN-descent) above.

    Returns
    -------
    ``{k: purity}``.
    """
    arr = check_features(X)
    n = arr.shape[0]
    lab = check_labels(labels, n=n)
    k_list = [int(k) for k in ks]
    if not k_list:
        raise ValueError("`ks` is empty.")
    bad = [k for k in k_list if k < 1 or k > n - 1]
    if bad:
        raise ValueError(f"`ks` must lie in [1, n_images - 1] = [1, {n - 1}]; received {bad}.")
    if metric == "cosine" and (np.linalg.norm(arr, axis=1) == 0).any():
        raise ValueError("`X` has all-zero rows, for which the cosine distance is undefined.")
    anchors = np.flatnonzero(lab != NOISE)
    if anchors.size == 0:
        raise ValueError("`labels` are all noise (-1): no anchor to score.")
    idx, _ = nearest_neighbors(arr, max(k_list), metric=metric)
    match = lab[idx[anchors]] == lab[anchors, None]
    cum = np.cumsum(match, axis=1)
    return {k: float(cum[:, k - 1].sum() / (anchors.size * k)) for k in k_list}
