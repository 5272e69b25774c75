"""Clustering of feature-image embeddings: registry, estimators, parameter helpers, AnnData wrapper.

Every clusterer is a scikit-learn style estimator: ``__init__`` stores parameters, the class
declares what they accept (``_parameter_constraints``, :mod:`spatialclust._validation`), ``fit(X)``
validates them and the data and sets ``labels_`` (int, ``-1`` = noise), ``fit_predict(X)`` returns them. All take a
``random_state``. They are registered by name:

=============== ================================================================================
``kmeans``      k-means with k-means++ seeding (Zhang et al. 2024, seed 000)
``umap_dbscan`` UMAP to 3 dimensions with cosine distance, then DBSCAN with a noise label (seed 000)
``hdbscan``     HDBSCAN (Campello et al. 2013; ``sklearn.cluster.HDBSCAN``)
``spectral``    spectral clustering on a 10-nearest-neighbour graph (seed 001)
``leiden``      Leiden community detection on a kNN graph (Traag et al. 2019)
=============== ================================================================================

Small data: a neighbourhood size the data cannot hold (``n_neighbors``, ``min_samples``,
``min_cluster_size`` of 15 for 10 images) is reduced to half the images, with a warning; a fixed
``n_clusters`` above the number of images has no sensible reduction and is refused, by
:func:`~spatialclust._validation.check_n_images` before any work in a pipeline.

Scale: no clusterer forms an ``(n, n)`` matrix. kNN graphs are sparse (:func:`knn_graph`), exact
up to :data:`spatialclust._neighbors.EXACT_KNN_MAX_IMAGES` images and NN-descent above; Laplacian
eigenvalues are sparse above :data:`DENSE_EIGEN_MAX_IMAGES`; ``kmeans`` is mini-batch from
:data:`MINIBATCH_KMEANS_MIN_IMAGES` (docs/methods.md, "Clustering at scale").
"""

from __future__ import annotations

import random
import warnings
from typing import Any, ClassVar

import anndata as ad
import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin

from .. import _keys
from .._logging import logger
from .._neighbors import nearest_neighbors
from .._registry import Registry
from .._validation import (
    MIN_IMAGES,
    RANDOM_STATE,
    Interval,
    ValidatedParams,
    check_count,
    check_features,
    neighbourhood_size,
)
from ._embed import _plain_params

clusterers: Registry[BaseEstimator] = Registry("clusterer")
"""Registry of clusterers (name -> estimator class)."""
register_clusterer = clusterers.register

#: Below this many images UMAP computes exact nearest neighbours (its ``_small_data`` path).
_UMAP_SMALL_DATA = 4096


def create_clusterer(name: str, **params: Any) -> BaseEstimator:
    """Build the clusterer registered under ``name`` with ``params`` (unknown names list the valid ones)."""
    return clusterers.create(name, **params)


def list_clusterers() -> list[str]:
    """Names of the registered clusterers, sorted."""
    return clusterers.names()


class DegenerateDataWarning(UserWarning):
    """A clustering finished but its result is degenerate (e.g. DBSCAN labelled every image noise)."""


# --------------------------------------------------------------------------------------------
# parameter helpers
# --------------------------------------------------------------------------------------------


def knee_point(values: np.ndarray) -> int:
    """Index of the knee of an increasing curve (Kneedle; Satopää et al. 2011).

    Both axes are scaled to [0, 1]; the knee is the point farthest below the chord joining the
    first and last points (for a convex, increasing curve such as a sorted k-distance plot).
    """
    y = np.asarray(values, dtype=np.float64)
    n = y.size
    if n < 3 or y[-1] == y[0]:
        return n - 1
    x = np.linspace(0.0, 1.0, n)
    yn = (y - y[0]) / (y[-1] - y[0])
    return int(np.argmax(x - yn))


def estimate_dbscan_eps(X: Any, *, min_samples: int = 5, metric: str = "euclidean") -> float:
    """DBSCAN ``eps`` from the knee of the sorted k-distance curve (Ester et al. 1996, Sec. 4.2).

    For every image the distance to its ``min_samples``-th nearest neighbour (the image itself
    counts, as in scikit-learn's DBSCAN) is computed; the sorted distances rise slowly inside
    clusters and steeply for noise, and the knee of that curve is returned.

    Parameters
    ----------
    X
        Feature matrix ``(n_images, n_dims)``.
    min_samples
        DBSCAN's ``min_samples`` (k of the k-distance); must be smaller than the number of images.
    metric
        Distance (any ``sklearn.neighbors.NearestNeighbors`` metric).

    Returns
    -------
    A positive ``eps``.
    """
    from sklearn.neighbors import NearestNeighbors

    arr = check_features(X)
    k = check_count(min_samples, "min_samples", n_images=arr.shape[0], low=2, below_n=True)
    dist, _ = NearestNeighbors(n_neighbors=k, metric=metric).fit(arr).kneighbors(arr)
    kdist = np.sort(dist[:, -1])
    eps = float(kdist[knee_point(kdist)])
    if eps <= 0:  # duplicates: fall back to the smallest positive k-distance
        positive = kdist[kdist > 0]
        eps = float(positive[0]) if positive.size else 1e-12
    return eps


def default_min_samples(n_dims: int) -> int:
    """DBSCAN ``min_samples`` rule of thumb ``2 * n_dims`` (Sander et al. 1998; Schubert et al. 2017).

    For the 3-D UMAP coordinates of UMAP-DBSCAN this gives 6.
    """
    if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
        raise ValueError(f"`n_dims` must be a positive integer; received {n_dims!r}.")
    return 2 * int(n_dims)


def knn_graph(
    X: np.ndarray, *, n_neighbors: int = 10, metric: str = "euclidean", random_state: int | None = 0
) -> sparse.csr_matrix:
    """Directed 0/1 k-nearest-neighbour graph ``K`` (row ``i``: the ``n_neighbors`` nearest other
    images of image ``i``), sparse with exactly ``n * n_neighbors`` entries.

    Neighbours are exact up to :data:`spatialclust._neighbors.EXACT_KNN_MAX_IMAGES` images and
    approximate (NN-descent) above; see :func:`spatialclust._neighbors.nearest_neighbors`.
    """
    k = check_count(n_neighbors, "n_neighbors", n_images=X.shape[0], below_n=True)
    idx, _ = nearest_neighbors(X, k, metric=metric, random_state=random_state)
    n = X.shape[0]
    return sparse.csr_matrix((np.ones(n * k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def knn_affinity(
    X: np.ndarray, *, n_neighbors: int = 10, metric: str = "euclidean", random_state: int | None = 0
) -> sparse.csr_matrix:
    """Symmetric 0/1 k-nearest-neighbour connectivity graph (``A = max(K, K^T)``), no self loops.

    Sparse, with between ``n * n_neighbors`` and ``2 n * n_neighbors`` entries (:func:`knn_graph`).
    """
    knn = knn_graph(X, n_neighbors=n_neighbors, metric=metric, random_state=random_state)
    return knn.maximum(knn.T).tocsr()


#: Up to this many images the Laplacian spectrum is computed densely (LAPACK, exact); above it per
#: connected component by Lanczos iteration on the sparse graph (ARPACK), never as an ``(n, n)`` array.
DENSE_EIGEN_MAX_IMAGES = 1_000


def laplacian_eigenvalues(affinity: Any, *, n_eigenvalues: int) -> np.ndarray:
    """Smallest ``n_eigenvalues`` eigenvalues of the normalised Laplacian ``I - D^-1/2 A D^-1/2``.

    Dense (exact) for at most :data:`DENSE_EIGEN_MAX_IMAGES` images. Above, the spectrum is the
    union of the spectra of the graph's connected components (the Laplacian is block-diagonal):
    each component's eigenvalue 0 is simple, which Lanczos iteration needs (it finds one copy of a
    repeated eigenvalue, so one run on the whole graph would miss clusters), and each large
    component's smallest eigenvalues are ``1 - mu`` for the largest eigenvalues ``mu`` of its
    sparse ``D^-1/2 A D^-1/2`` (ARPACK).
    """
    A = sparse.csr_matrix(affinity, dtype=np.float64)
    n = A.shape[0]
    m = min(n_eigenvalues, n)
    if n <= DENSE_EIGEN_MAX_IMAGES:
        return _component_eigenvalues(A, m)
    from scipy.sparse.csgraph import connected_components

    n_components, component = connected_components(A, directed=False)
    logger.info("Laplacian eigenvalues of a %d-image graph (%d connected components), sparse.", n, n_components)
    order = np.argsort(component, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(component, minlength=n_components))])
    eigenvalues = []
    for c in range(n_components):
        nodes = order[bounds[c] : bounds[c + 1]]
        eigenvalues.append(_component_eigenvalues(A[nodes][:, nodes], min(m, nodes.size)))
    return np.sort(np.concatenate(eigenvalues))[:m]


def _component_eigenvalues(A: sparse.csr_matrix, m: int) -> np.ndarray:
    """Smallest ``m`` normalised-Laplacian eigenvalues of ``A``: dense up to
    :data:`DENSE_EIGEN_MAX_IMAGES` images, else ARPACK (exact only for a connected graph)."""
    n = A.shape[0]
    deg = np.asarray(A.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = 1.0 / np.sqrt(deg[deg > 0])
    Dm = sparse.diags(inv_sqrt)
    M = Dm @ A @ Dm
    M = (M + M.T) / 2
    if n <= DENSE_EIGEN_MAX_IMAGES or m >= n - 1:  # ARPACK needs fewer eigenvalues than n - 1
        from scipy.linalg import eigh

        return eigh(np.eye(n) - M.toarray(), eigvals_only=True, subset_by_index=[0, m - 1])
    from scipy.sparse.linalg import eigsh

    v0 = np.random.default_rng(0).uniform(-1.0, 1.0, n)  # ARPACK's default start is random: fix it
    mu = eigsh(M.tocsr(), k=m, which="LA", return_eigenvectors=False, tol=1e-8, v0=v0)
    return np.sort(1.0 - mu)


def record_clusters(adata: ad.AnnData, key: str, labels: Any, *, method: str, use_rep: str, params: dict[str, Any]) -> None:
    """Write a clustering as every tool does: ``var[key]`` (int, -1 = noise) and ``uns[key]``."""
    labels = np.asarray(labels, dtype=np.int64)
    adata.var[key] = labels
    adata.uns[key] = {"method": method, "use_rep": use_rep, _keys.PARAMS: params,
                      "n_clusters": int(np.unique(labels[labels >= 0]).size), "n_noise": int((labels == -1).sum())}


def estimate_n_clusters(
    X: Any,
    *,
    max_clusters: int = 20,
    min_clusters: int = 1,
    affinity: str = "nearest_neighbors",
    n_neighbors: int = 10,
) -> int:
    """Number of clusters from the eigengap of the normalised graph Laplacian (von Luxburg 2007, Sec. 8.3).

    The eigenvalues ``0 = λ_1 <= λ_2 <= ...`` of ``L = I - D^{-1/2} A D^{-1/2}`` are computed and
    ``k = argmax_{min_clusters <= k <= max_clusters} (λ_{k+1} - λ_k)`` is returned: a graph with
    ``k`` well-separated groups has ``k`` eigenvalues near 0 followed by a jump.

    Parameters
    ----------
    X
        Feature matrix ``(n_images, n_dims)``, or a symmetric non-negative similarity matrix
        ``(n, n)`` when ``affinity="precomputed"``.
    max_clusters
        Largest number of clusters considered (capped at ``n - 1``, not an error).
    min_clusters
        Smallest number considered (2 for a method that must split the data); a warning says when
        the largest gap overall lies below it, i.e. the graph shows no such cluster structure.
    affinity
        ``"nearest_neighbors"``: build a symmetric ``n_neighbors``-NN connectivity graph from ``X``
        (spectral clustering of seed 001 uses k = 10); ``"precomputed"``: ``X`` is the affinity.
    n_neighbors
        k of the kNN graph.

    Returns
    -------
    The estimated number of clusters, between ``min_clusters`` and ``max_clusters``.
    """
    if affinity == "precomputed":
        A = sparse.csr_matrix(X, dtype=np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"`X` must be a square affinity matrix when affinity='precomputed'; received shape {A.shape}.")
        if sparse.issparse(A):  # a sparse affinity stays sparse
            values = A.data
            # np.allclose's tolerances, with the largest value standing in for every one
            symmetric = abs(A - A.T).max() <= 1e-8 + 1e-5 * np.abs(values).max(initial=0.0)
        else:
            values = A
            symmetric = np.allclose(A, A.T, atol=1e-8)
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("The affinity matrix `X` must be finite and non-negative.")
        if not symmetric:
            raise ValueError("The affinity matrix `X` must be symmetric.")
        if A.shape[0] < MIN_IMAGES:
            raise ValueError(f"`X` has {A.shape[0]} images; at least {MIN_IMAGES} are needed.")
        if sparse.issparse(A):
            A = (A - sparse.diags(A.diagonal())).tocsr()
        else:
            A = A.copy()
            np.fill_diagonal(A, 0.0)
    elif affinity == "nearest_neighbors":
        A = knn_affinity(check_features(X), n_neighbors=n_neighbors)
    else:
        from .._registry import invalid_option

        raise invalid_option(affinity, "affinity", ["nearest_neighbors", "precomputed"])
    n = A.shape[0]
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, (int, np.integer)) or max_clusters < 1:
        raise ValueError(f"`max_clusters` must be a positive integer; received {max_clusters!r}.")
    kmax = min(int(max_clusters), n - 1)  # an upper bound, so capped rather than rejected
    if isinstance(min_clusters, bool) or not isinstance(min_clusters, (int, np.integer)) or not 1 <= min_clusters <= kmax:
        raise ValueError(f"`min_clusters` must be an integer in [1, {kmax}]; received {min_clusters!r}.")
    eig = laplacian_eigenvalues(A, n_eigenvalues=kmax + 1)
    gaps = np.diff(eig)[:kmax]
    best = int(np.argmax(gaps) + 1)
    if best < min_clusters:
        chosen = int(np.argmax(gaps[min_clusters - 1 :]) + min_clusters)
        warnings.warn(
            f"The eigengap is largest at {best} cluster(s), below `min_clusters`={min_clusters}: the similarity graph "
            f"shows no clear cluster structure; using the largest gap from {min_clusters} on ({chosen} clusters). "
            "Consider passing the number of clusters.", UserWarning, stacklevel=2,
        )
        return chosen
    return best


def _resolve_n_clusters(
    n_clusters: Any, X: np.ndarray, *, max_clusters: int, n_neighbors: int = 10, affinity: sparse.spmatrix | None = None
) -> int:
    """``n_clusters``, or for ``"auto"`` the eigengap estimate from the kNN graph of ``X`` (or from
    ``affinity``, that graph when the caller has built it already)."""
    if n_clusters == "auto":
        if affinity is not None:
            k = estimate_n_clusters(affinity, affinity="precomputed", max_clusters=max_clusters)
        else:
            n_neighbors = neighbourhood_size(n_neighbors, "n_neighbors", n_images=X.shape[0])
            k = estimate_n_clusters(X, max_clusters=max_clusters, n_neighbors=n_neighbors)
        logger.info("Estimated n_clusters=%d from the eigengap of the kNN graph Laplacian.", k)
        return k
    return check_count(n_clusters, "n_clusters", n_images=X.shape[0])


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------


class _Clusterer(ValidatedParams, ClusterMixin, BaseEstimator):
    """Shared ``fit_predict``; subclasses declare ``_parameter_constraints`` and implement ``fit``
    (which calls ``_validate_params()`` first) setting ``labels_``."""

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(X).labels_

    def _min_images(self) -> int:
        return MIN_IMAGES


#: From this many images on, ``kmeans`` runs mini-batch k-means (Sculley 2010; scikit-learn's
#: ``MiniBatchKMeans``), whose time per iteration does not grow with the number of images.
MINIBATCH_KMEANS_MIN_IMAGES = 200_000
_MINIBATCH_SIZE = 4096


@register_clusterer("kmeans")
class KMeansClusterer(_Clusterer):
    """k-means with k-means++ seeding on the image embeddings (Euclidean distance).

    As in Zhang et al. (2024, seed 000), who found 20 clusters best on both of their datasets;
    ``n_clusters="auto"`` estimates the number from the eigengap (:func:`estimate_n_clusters`).
    From :data:`MINIBATCH_KMEANS_MIN_IMAGES` images on, mini-batch k-means (Sculley 2010) replaces
    Lloyd's algorithm.

    Parameters
    ----------
    n_clusters
        Number of clusters, or ``"auto"``.
    n_init
        Number of k-means++ restarts (the best inertia is kept).
    max_iter
        Maximum Lloyd iterations per run.
    max_clusters
        Upper bound for ``"auto"``.
    random_state
        Seed of the k-means++ initialisation.

    Attributes
    ----------
    labels_
        Cluster of every image (never -1).
    cluster_centers_
        ``(n_clusters, n_dims)`` centroids.
    n_clusters_
        Number of clusters used.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(int, 1), "auto"], "n_init": [Interval(int, 1), "auto"], "max_iter": [Interval(int, 1)],
        "max_clusters": [Interval(int, 1)], "random_state": [RANDOM_STATE, None],
    }

    def __init__(self, n_clusters: int | str = 20, *, n_init: int = 10, max_iter: int = 300, max_clusters: int = 30, random_state: int | None = 0) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.max_clusters = max_clusters
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> KMeansClusterer:
        from sklearn.cluster import KMeans

        self._validate_params()
        arr = check_features(X)
        seed = self.random_state
        k = _resolve_n_clusters(self.n_clusters, arr, max_clusters=self.max_clusters)
        n_distinct = np.unique(arr, axis=0).shape[0]
        if k > n_distinct:
            raise ValueError(f"`n_clusters`={k} is larger than the number of distinct images ({n_distinct}).")
        if arr.shape[0] < MINIBATCH_KMEANS_MIN_IMAGES:
            km = KMeans(n_clusters=k, init="k-means++", n_init=self.n_init, max_iter=self.max_iter, random_state=seed)
        else:
            from sklearn.cluster import MiniBatchKMeans

            logger.info("Mini-batch k-means on %d images (batches of %d).", arr.shape[0], _MINIBATCH_SIZE)
            km = MiniBatchKMeans(n_clusters=k, init="k-means++", n_init=self.n_init, max_iter=self.max_iter,
                                 batch_size=_MINIBATCH_SIZE, random_state=seed)
        km.fit(arr)
        self.labels_ = km.labels_.astype(np.int64)
        self.cluster_centers_ = km.cluster_centers_
        self.inertia_ = float(km.inertia_)
        self.n_clusters_ = k
        return self


@register_clusterer("umap_dbscan")
class UMAPDBSCAN(_Clusterer):
    """UMAP to 3 dimensions with cosine distance, then DBSCAN ("U-D", Zhang et al. 2024, seed 000).

    Images in low-density regions of the 3-D UMAP embedding get the noise label ``-1``. The paper
    tuned UMAP/DBSCAN by hand per dataset; here ``eps=None`` (default) picks ``eps`` from the knee
    of the k-distance curve of the UMAP coordinates (:func:`estimate_dbscan_eps`). If DBSCAN
    labels every image noise, a :class:`DegenerateDataWarning` is issued and the all-noise labels are
    returned (not an error), so the run can still be reported.

    Parameters
    ----------
    n_components
        UMAP output dimensions (3 in the paper, which also allows a 3-D scatter plot).
    n_neighbors, min_dist, metric
        UMAP parameters (``metric="cosine"`` as in the paper).
    eps
        DBSCAN radius in UMAP space, or None for the k-distance knee.
    min_samples
        DBSCAN core-point threshold (the point itself counts), or None for
        ``2 * n_components`` (:func:`default_min_samples`; 6 in 3-D).
    n_epochs
        UMAP optimisation epochs (None: UMAP's default, 500 for small data).
    random_state
        Seed of UMAP.

    Attributes
    ----------
    labels_
        Cluster of every image, ``-1`` = noise.
    embedding_
        ``(n_images, n_components)`` UMAP coordinates.
    eps_
        The DBSCAN ``eps`` used.
    min_samples_
        The DBSCAN ``min_samples`` used.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_components": [Interval(int, 1)], "n_neighbors": [Interval(int, 2)], "min_dist": [Interval(float, 0)],
        "metric": [str], "eps": [Interval(float, 0, closed="neither"), None], "min_samples": [Interval(int, 1), None],
        "n_epochs": [Interval(int, 0), None], "random_state": [RANDOM_STATE, None],
    }

    def __init__(
        self,
        *,
        n_components: int = 3,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        metric: str = "cosine",
        eps: float | None = None,
        min_samples: int | None = None,
        n_epochs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.eps = eps
        self.min_samples = min_samples
        self.n_epochs = n_epochs
        self.random_state = random_state

    def _min_images(self) -> int:
        self._validate_params()
        return max(MIN_IMAGES, int(self.n_components) + 2)

    def fit(self, X: Any, y: Any = None) -> UMAPDBSCAN:
        from sklearn.cluster import DBSCAN

        from .._compat import require

        self._validate_params()
        arr = check_features(X)
        n = arr.shape[0]
        seed = self.random_state
        dims = int(self.n_components)
        if n < self._min_images():
            raise ValueError(
                f"UMAP to `n_components`={dims} dimensions needs at least {self._min_images()} images (for its "
                f"spectral initialisation); received {n}. Lower `n_components` or use another clusterer."
            )
        k = neighbourhood_size(self.n_neighbors, "n_neighbors", n_images=n, low=2)
        if self.min_samples is None:
            ms = default_min_samples(dims)
            if ms > max(2, n // 2):  # the rule of thumb would let no two groups of images be clusters
                logger.warning("The default `min_samples`=2 * n_components=%d is more than half of the %d images; "
                               "using min_samples=%d.", ms, n, max(2, n // 2))
                ms = max(2, n // 2)
        else:
            ms = neighbourhood_size(self.min_samples, "min_samples", n_images=n, counts_itself=True)
        if self.metric in ("cosine", "correlation") and (np.linalg.norm(arr, axis=1) == 0).any():
            raise ValueError(f"`X` has all-zero images, for which the {self.metric} distance is undefined; remove empty images first.")
        with warnings.catch_warnings():
            # umap-learn announces that its optional TensorFlow-based ParametricUMAP is unavailable
            warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
            umap = require("umap", package="umap-learn", purpose="UMAP-DBSCAN clustering")
        precomputed_knn: tuple = (None, None, None)
        if n < _UMAP_SMALL_DATA:
            # UMAP's own small-data path computes these exact neighbours too; scikit-learn does it
            # without compiling UMAP's parallel numba kernels (tens of seconds on first use).
            from sklearn.neighbors import NearestNeighbors

            dist, idx = NearestNeighbors(n_neighbors=k, metric=self.metric).fit(arr).kneighbors(arr)
            precomputed_knn = (idx, dist, None)
        reducer = umap.UMAP(
            n_components=dims, n_neighbors=k, min_dist=self.min_dist, metric=self.metric,
            n_epochs=self.n_epochs, random_state=seed, init="spectral", precomputed_knn=precomputed_knn,
        )
        with warnings.catch_warnings():
            # expected with our precomputed neighbours: we never call `reducer.transform` on new data
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\] \(knn_search_index\)", category=UserWarning)
            self.embedding_ = np.asarray(reducer.fit_transform(arr), dtype=np.float32)
        self.eps_ = float(self.eps) if self.eps is not None else estimate_dbscan_eps(self.embedding_, min_samples=max(ms, 2))
        self.min_samples_ = ms
        labels = DBSCAN(eps=self.eps_, min_samples=ms).fit_predict(self.embedding_)
        self.labels_ = labels.astype(np.int64)
        if (self.labels_ == -1).all():
            msg = (f"DBSCAN labelled all {n} images noise (eps={self.eps_:.4g}, min_samples={ms}); "
                   "increase `eps` or decrease `min_samples`.")
            logger.warning(msg)
            warnings.warn(msg, DegenerateDataWarning, stacklevel=2)
        return self


@register_clusterer("hdbscan")
class HDBSCANClusterer(_Clusterer):
    """HDBSCAN (Campello, Moulavi & Sander 2013) via ``sklearn.cluster.HDBSCAN``; noise = ``-1``.

    Parameters
    ----------
    min_cluster_size
        Smallest group of images that counts as a cluster.
    min_samples
        Density threshold (None: ``min_cluster_size``).
    metric
        Distance between embeddings.
    cluster_selection_epsilon
        Clusters closer than this are merged.
    random_state
        Accepted for a uniform interface; HDBSCAN is deterministic.

    Attributes
    ----------
    labels_
        Cluster of every image, ``-1`` = noise.
    probabilities_
        Strength of each image's cluster membership.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "min_cluster_size": [Interval(int, 2)], "min_samples": [Interval(int, 1), None], "metric": [str],
        "cluster_selection_epsilon": [Interval(float, 0)], "random_state": [RANDOM_STATE, None],
    }

    def __init__(self, *, min_cluster_size: int = 5, min_samples: int | None = None, metric: str = "euclidean", cluster_selection_epsilon: float = 0.0, random_state: int | None = 0) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.metric = metric
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> HDBSCANClusterer:
        from sklearn.cluster import HDBSCAN

        self._validate_params()
        arr = check_features(X)
        n = arr.shape[0]
        mcs = neighbourhood_size(self.min_cluster_size, "min_cluster_size", n_images=n, low=2, below_n=False,
                             counts_itself=True)
        ms = None if self.min_samples is None else neighbourhood_size(self.min_samples, "min_samples", n_images=n,
                                                                  counts_itself=True)
        model = HDBSCAN(min_cluster_size=mcs, min_samples=ms, metric=self.metric, cluster_selection_epsilon=self.cluster_selection_epsilon, copy=True).fit(arr)
        self.labels_ = model.labels_.astype(np.int64)
        self.probabilities_ = model.probabilities_
        if (self.labels_ == -1).all():
            msg = f"HDBSCAN labelled all {n} images noise; decrease `min_cluster_size`."
            logger.warning(msg)
            warnings.warn(msg, DegenerateDataWarning, stacklevel=2)
        return self


@register_clusterer("spectral")
class SpectralClusterer(_Clusterer):
    """Spectral clustering on a symmetric k-nearest-neighbour graph (k = 10, as in seed 001).

    Hu et al. (2024, seed 001) cluster their embeddings with spectral clustering on a 10-NN graph;
    the number of clusters defaults to the eigengap estimate of that graph's normalised Laplacian.

    Parameters
    ----------
    n_clusters
        Number of clusters or ``"auto"`` (eigengap, :func:`estimate_n_clusters`).
    n_neighbors
        k of the kNN graph.
    max_clusters
        Upper bound for ``"auto"``.
    assign_labels
        How labels are assigned in the spectral embedding (``"kmeans"``, ``"discretize"``,
        ``"cluster_qr"``; scikit-learn).
    random_state
        Seed of the eigensolver initialisation and of k-means.

    Attributes
    ----------
    labels_, n_clusters_, affinity_matrix_
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(int, 1), "auto"], "n_neighbors": [Interval(int, 1)], "max_clusters": [Interval(int, 1)],
        "assign_labels": ["kmeans", "discretize", "cluster_qr"], "random_state": [RANDOM_STATE, None],
    }

    def __init__(self, n_clusters: int | str = "auto", *, n_neighbors: int = 10, max_clusters: int = 30, assign_labels: str = "kmeans", random_state: int | None = 0) -> None:
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.max_clusters = max_clusters
        self.assign_labels = assign_labels
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SpectralClusterer:
        from sklearn.cluster import SpectralClustering

        self._validate_params()
        arr = check_features(X)
        seed = self.random_state
        n_neighbors = neighbourhood_size(self.n_neighbors, "n_neighbors", n_images=arr.shape[0])
        A = knn_affinity(arr, n_neighbors=n_neighbors, random_state=seed)
        k = _resolve_n_clusters(self.n_clusters, arr, max_clusters=self.max_clusters, affinity=A)
        # the sparse graph goes to the eigensolver as it is; from DENSE_EIGEN_MAX_IMAGES images on LOBPCG
        # (no factorisation) replaces ARPACK in shift-invert mode (a sparse LU of the Laplacian)
        solver = "arpack" if arr.shape[0] <= DENSE_EIGEN_MAX_IMAGES else "lobpcg"
        model = SpectralClustering(n_clusters=k, affinity="precomputed", eigen_solver=solver,
                                   assign_labels=self.assign_labels, random_state=seed)
        with warnings.catch_warnings():
            # a disconnected kNN graph is expected for well-separated clusters: it is what we want
            warnings.filterwarnings("ignore", message="Graph is not fully connected", category=UserWarning)
            self.labels_ = model.fit_predict(A).astype(np.int64)
        self.affinity_matrix_ = A
        self.n_clusters_ = k
        return self


#: Up to this many images ``leiden`` runs leidenalg; above, igraph's C implementation of Leiden.
LEIDENALG_MAX_IMAGES = 50_000


@register_clusterer("leiden")
class LeidenClusterer(_Clusterer):
    """Leiden community detection (Traag, Waltman & van Eck 2019) on a symmetric kNN graph.

    Optimises the modularity with a resolution parameter (``RBConfigurationVertexPartition`` of
    ``leidenalg``) on the unweighted, symmetrised k-nearest-neighbour graph of the embeddings.
    Above :data:`LEIDENALG_MAX_IMAGES` images igraph's ``community_leiden`` optimises the same
    objective (13x faster on 10^5 images until stable, same NMI; docs/benchmarks.md).

    Parameters
    ----------
    resolution
        Higher values give more, smaller clusters.
    n_neighbors
        k of the kNN graph.
    metric
        Distance used to find neighbours.
    n_iterations
        Leiden iterations (-1: until stable).
    random_state
        Seed of leidenalg.

    Attributes
    ----------
    labels_, modularity_
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "resolution": [Interval(float, 0, closed="neither")], "n_neighbors": [Interval(int, 1)], "metric": [str],
        "n_iterations": [Interval(int)], "random_state": [RANDOM_STATE, None],
    }

    def __init__(self, *, resolution: float = 1.0, n_neighbors: int = 10, metric: str = "euclidean", n_iterations: int = -1, random_state: int | None = 0) -> None:
        self.resolution = resolution
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.n_iterations = n_iterations
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> LeidenClusterer:
        from .._compat import require

        self._validate_params()
        arr = check_features(X)
        seed = self.random_state
        ig = require("igraph", package="igraph", purpose="Leiden clustering")
        la = require("leidenalg", package="leidenalg", purpose="Leiden clustering")
        n_neighbors = neighbourhood_size(self.n_neighbors, "n_neighbors", n_images=arr.shape[0])
        A = sparse.triu(knn_affinity(arr, n_neighbors=n_neighbors, metric=self.metric, random_state=seed), k=1).tocoo()
        graph = ig.Graph(n=arr.shape[0], edges=np.column_stack([A.row, A.col]).tolist(), directed=False)
        if arr.shape[0] <= LEIDENALG_MAX_IMAGES:
            part = la.find_partition(
                graph, la.RBConfigurationVertexPartition, resolution_parameter=float(self.resolution),
                n_iterations=self.n_iterations, seed=0 if seed is None else int(seed),
            )
            membership, modularity = part.membership, part.modularity
        else:  # the same objective in igraph's C implementation; igraph draws from a Python RNG
            ig.set_random_number_generator(random.Random(0 if seed is None else int(seed)))
            try:
                membership = graph.community_leiden(objective_function="modularity", resolution=float(self.resolution),
                                                    n_iterations=self.n_iterations).membership
            finally:
                ig.set_random_number_generator(random)
            modularity = graph.modularity(membership)
        self.labels_ = np.asarray(membership, dtype=np.int64)
        self.modularity_ = float(modularity)
        return self


# --------------------------------------------------------------------------------------------
# AnnData wrapper
# --------------------------------------------------------------------------------------------


def cluster(
    adata: ad.AnnData,
    method: str | BaseEstimator = "kmeans",
    *,
    use_rep: str = "X_regular",
    key_added: str = _keys.CLUSTER,
    random_state: int | None = 0,
    copy: bool = False,
    **params: Any,
) -> ad.AnnData | None:
    """Cluster the feature images of ``adata`` by their embedding ``varm[use_rep]``.

    Parameters
    ----------
    adata
        Dataset with an embedding in ``varm`` (see :func:`spatialclust.tl.embed`).
    method
        A registered clusterer (see :func:`list_clusterers`) or a clusterer instance
        (``params`` and ``random_state`` are then taken from the instance).
    use_rep
        ``varm`` key of the embedding.
    key_added
        ``var`` column of the labels.
    random_state
        Seed passed to the clusterer.
    copy
        Return a modified copy instead of writing to ``adata``.
    **params
        Parameters of the clusterer.

    Returns
    -------
    None, or the copy if ``copy=True``. Writes

    ``adata.var[key_added]``
        int cluster of every feature image, ``-1`` = noise.
    ``adata.uns[key_added]``
        ``{"method", "use_rep", "params", "n_clusters", "n_noise"}``; ``n_clusters`` excludes noise.
        Values the clusterer chose itself (``n_clusters="auto"``, ``eps=None``, ``min_samples=None``)
        are added under ``"fitted"`` (e.g. ``{"eps": 0.41, "min_samples": 6}``).
    ``adata.varm[f"{key_added}_umap"]``
        For ``umap_dbscan``: the 3-D UMAP coordinates (``embedding_``), for 3-D scatter plots.
    """
    if use_rep not in adata.varm:
        available = ", ".join(f"`{k}`" for k in adata.varm.keys()) or "none (run `sc.tl.embed` first)"
        raise KeyError(f"`use_rep`={use_rep!r} is not in `adata.varm`. Available embeddings: {available}.")
    if isinstance(method, str):
        est = create_clusterer(method, random_state=random_state, **params)
        name = method
    elif hasattr(method, "fit") and hasattr(method, "get_params"):
        if params:
            raise ValueError(f"`method` is a clusterer instance; pass its parameters to it, not to `cluster` (received {sorted(params)}).")
        est = method
        name = next((n for n in clusterers.names() if type(method) is clusterers.get(n)), type(method).__name__)
    else:
        raise TypeError(f"`method` must be a registered clusterer name or an estimator; received {type(method).__name__}.")

    adata = adata.copy() if copy else adata
    X = adata.varm[use_rep]
    logger.info("Clustering %d feature images (`%s`, %s) with `%s`.", adata.n_vars, use_rep, X.shape, name)
    record_clusters(adata, key_added, est.fit(X).labels_, method=name, use_rep=use_rep,
                    params=_plain_params(est.get_params(deep=False)))
    fitted = {name: _plain_params({name: getattr(est, attr)})[name]
              for name, attr in (("n_clusters", "n_clusters_"), ("eps", "eps_"), ("min_samples", "min_samples_"))
              if hasattr(est, attr)}
    if fitted:
        adata.uns[key_added]["fitted"] = fitted
    if getattr(est, "embedding_", None) is not None:
        adata.varm[f"{key_added}_umap"] = np.asarray(est.embedding_, dtype=np.float32)
    return adata if copy else None


# --------------------------------------------------------------------------------------------
# Student's t mixture (moved here from tl/_darlc.py, issue 16: registered with the other clusterers)
# --------------------------------------------------------------------------------------------


@register_clusterer("smm")
class SMMClusterer(_Clusterer):
    """Student's t mixture model (MAP-EM) on any embedding (DARLC's Module II mixture, seed 003).

    Embeddings with more than ``n_components_max`` dimensions are reduced by PCA first (a full
    covariance per component needs far more images than dimensions). The features are centred, not
    standardised: standardising inflates the many low-variance dimensions of a learned embedding to
    the size of the informative ones (simulated gene images, DARLC warm-up embedding: NMI 0.98
    centred vs 0.74 standardised; raw images 0.68 vs 0.56).

    Parameters
    ----------
    n_clusters
        Number of components, or ``"auto"`` (eigengap, :func:`spatialclust.tl.estimate_n_clusters`).
    distribution
        ``"t"`` (SMM) or ``"gaussian"`` (GMM).
    n_components_max
        PCA dimension cap (paper's projection: 32).
    max_clusters
        Upper bound for ``"auto"``.
    max_iter
        EM iterations.
    random_state
        Seed of the k-means initialisation and PCA.

    Attributes
    ----------
    labels_, n_clusters_, mixture_
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(int, 1), "auto"], "distribution": ["t", "gaussian"], "n_components_max": [Interval(int, 1)],
        "max_clusters": [Interval(int, 1)], "max_iter": [Interval(int, 1)], "random_state": [RANDOM_STATE, None],
    }

    def __init__(self, n_clusters: int | str = 20, *, distribution: str = "t", n_components_max: int = 32,
                 max_clusters: int = 30, max_iter: int = 100, random_state: int | None = 0) -> None:
        self.n_clusters = n_clusters
        self.distribution = distribution
        self.n_components_max = n_components_max
        self.max_clusters = max_clusters
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SMMClusterer:
        from ..models import StudentMixture

        self._validate_params()
        arr = check_features(X)
        seed = self.random_state
        k = _resolve_n_clusters(self.n_clusters, arr, max_clusters=self.max_clusters)
        if arr.shape[1] > self.n_components_max:
            from sklearn.decomposition import PCA

            arr = PCA(n_components=min(self.n_components_max, arr.shape[0] - 1), random_state=seed).fit_transform(arr)
        self.mixture_ = StudentMixture(k, distribution=self.distribution, max_iter=self.max_iter, random_state=seed).fit(arr)
        self.labels_ = self.mixture_.labels_.astype(np.int64)
        self.n_clusters_ = k
        return self
