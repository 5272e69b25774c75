"""k-nearest-neighbour classification accuracy of a representation (leave-one-out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._neighbors import nearest_neighbors
from .._validation import check_features
from ._labels import encode_classes

__all__ = ["knn_accuracy"]


def knn_accuracy(X: Any, labels: Any, *, k: int = 5, metric: str = "euclidean") -> float:
    """Leave-one-out k-NN classification accuracy of ``labels`` in the representation ``X``.

    Every sample is classified by the majority label of its ``k`` nearest other samples (ties go to
    the class of the nearest of the tied neighbours); the fraction classified correctly is
    returned. A representation in which cells of one class are neighbours scores high; it is the
    quantity NCA maximises (Goldberger et al. 2004) and complements cluster purity (Palli 2023).

    Parameters
    ----------
    X
        ``(n, d)`` representation.
    labels
        ``n`` class labels of any hashable type (no missing values: subset to labelled samples first).
    k
        Number of neighbours, ``1 <= k < n``.
    metric
        Any distance of scikit-learn's ``NearestNeighbors`` that pynndescent also knows
        (``"euclidean"``, ``"cosine"``, ...). Neighbours are exact up to
        :data:`spatialclust._neighbors.EXACT_KNN_MAX_IMAGES` samples, approximate (NN-descent) above.
    """
    arr = check_features(X)
    n = arr.shape[0]
    codes = encode_classes(labels, name="labels", n=n)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"`k` must be an integer in [1, n_samples - 1] = [1, {n - 1}]; received {k!r}.")
    idx, _ = nearest_neighbors(arr, int(k), metric=metric)
    neighbour_codes = codes[idx]  # (n, k), nearest first
    n_classes = int(codes.max()) + 1
    votes = np.zeros((n, n_classes))
    np.add.at(votes, (np.repeat(np.arange(n), k), neighbour_codes.ravel()), 1.0)
    # tie-break: a bonus 1e-3 * 2^-rank (< one vote in total) so that among tied classes the one
    # holding the nearest neighbour wins (the bonus of rank r exceeds those of all later ranks)
    np.add.at(votes, (np.repeat(np.arange(n), k), neighbour_codes.ravel()), np.tile(1e-3 * 0.5 ** np.arange(k), n))
    return float((votes.argmax(axis=1) == codes).mean())
