"""Nearest neighbours of every image, exact for small data and approximate (NN-descent) at scale.

One implementation serves the kNN graphs of clustering (spectral, Leiden, the eigengap estimate)
and the neighbourhood metrics (k-NN purity, k-NN accuracy). Nothing here allocates an
``(n, n)`` matrix: the exact path is scikit-learn's ``NearestNeighbors`` (brute force in chunks
of ``working_memory``, or a tree), the approximate path is NN-descent (Dong, Moses & Li 2011) as
implemented by ``pynndescent``, the library behind UMAP's neighbour search.

Which path runs is decided by the number of images (:data:`EXACT_KNN_MAX_IMAGES`), measured on
the data of ``benchmarks/bench_cluster_scale.py`` (shared 2-core machine, one thread, 64 PCA
features of simulated ion images): exact search takes 0.6 s for 10^4 images and 42 s for 10^5
(it grows as ``n^2``); NN-descent takes about 2 s for 10^5 images plus a one-off 30 s (quiet
machine) to compile its numba kernels in a new process, and finds 99 % of the exact 10 nearest
neighbours (10^4 images; 66 % on isotropic Gaussian blobs in 64 dimensions, a worst case).
"""

from __future__ import annotations

import numpy as np

from ._compat import require
from ._logging import logger

#: Up to this many images nearest neighbours are exact (results identical to scikit-learn);
#: above it they are approximate (NN-descent), whose cost grows about as ``n log n`` instead of ``n^2``.
EXACT_KNN_MAX_IMAGES = 50_000


def nearest_neighbors(
    X: np.ndarray, n_neighbors: int, *, metric: str = "euclidean", random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` nearest other rows of every row of ``X``, nearest first.

    Exact (``sklearn.neighbors.NearestNeighbors``, the row itself excluded as in its
    ``kneighbors()``) for at most :data:`EXACT_KNN_MAX_IMAGES` rows; approximate above
    (``pynndescent.NNDescent`` with ``n_neighbors + 1`` neighbours, the row itself removed).

    Parameters
    ----------
    X
        ``(n, d)`` features, validated by the caller; ``n_neighbors < n``.
    n_neighbors
        Number of neighbours ``k``.
    metric
        Distance understood by both scikit-learn and pynndescent (``"euclidean"``, ``"cosine"``,
        ``"correlation"``, ``"manhattan"``, ...).
    random_state
        Seed of NN-descent's random projection trees and initial graph (unused when exact).

    Returns
    -------
    ``(indices, distances)``, both ``(n, n_neighbors)``.
    """
    n = X.shape[0]
    k = int(n_neighbors)
    if n <= EXACT_KNN_MAX_IMAGES:
        return _exact(X, k, metric)
    pynndescent = require("pynndescent", purpose="approximate nearest neighbours of more than "
                          f"{EXACT_KNN_MAX_IMAGES} images")
    logger.info("Approximate %d nearest neighbours of %d images (NN-descent, %s distance).", k, n, metric)
    index = pynndescent.NNDescent(X, n_neighbors=k + 1, metric=metric, random_state=random_state, low_memory=True)
    idx, dist = index.neighbor_graph
    if (idx < 0).any():  # NN-descent could not fill every neighbourhood (e.g. many identical rows)
        logger.warning("NN-descent left some of the %d neighbourhoods incomplete; computing exact neighbours.", n)
        return _exact(X, k, metric)
    # drop the row itself (normally the first column; with duplicates it may be elsewhere or absent,
    # then the farthest candidate goes)
    drop = idx == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    return idx[keep].reshape(n, k).astype(np.int64), dist[keep].reshape(n, k)


def _exact(X: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k, metric=metric).fit(X).kneighbors()
    return idx, dist
