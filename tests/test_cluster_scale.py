"""Clustering at scale: sparse kNN graphs, the approximate (NN-descent) path, sparse eigenvalues,
mini-batch k-means and a sampled silhouette, each checked against the exact path on tiny data
with a known answer (thresholds forced low)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_blobs
from sklearn.neighbors import kneighbors_graph

import spatialclust as sc
from spatialclust import _neighbors
from spatialclust.metrics import _internal
from spatialclust.tl import _cluster


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=240, n_features=8, centers=4, cluster_std=0.6, random_state=0)
    return X.astype(np.float32), y


def test_knn_graph_is_sparse_with_n_times_k_entries(blobs):
    X, _ = blobs
    K = _cluster.knn_graph(X, n_neighbors=7)
    assert sparse.issparse(K) and K.nnz == X.shape[0] * 7
    assert K.diagonal().sum() == 0  # no image is its own neighbour
    A = _cluster.knn_affinity(X, n_neighbors=7)
    assert sparse.issparse(A) and 240 * 7 <= A.nnz <= 2 * 240 * 7
    assert abs(A - A.T).max() == 0


def test_exact_path_equals_scikit_learn_kneighbors_graph(blobs):
    X, _ = blobs
    old = kneighbors_graph(X, n_neighbors=10, mode="connectivity", include_self=False)
    assert abs(_cluster.knn_graph(X, n_neighbors=10) - old).max() == 0


def test_sparse_laplacian_eigenvalues_match_dense(blobs, monkeypatch):
    X, _ = blobs
    A = _cluster.knn_affinity(X, n_neighbors=10)  # four well separated blobs: four components
    dense = _cluster.laplacian_eigenvalues(A, n_eigenvalues=12)
    monkeypatch.setattr(_cluster, "DENSE_EIGEN_MAX_IMAGES", 10)
    lanczos = _cluster.laplacian_eigenvalues(A, n_eigenvalues=12)
    np.testing.assert_allclose(lanczos, dense, atol=1e-8)
    assert np.abs(lanczos[:4]).max() < 1e-8 and lanczos[4] > 0.05
    assert sc.tl.estimate_n_clusters(X, max_clusters=10) == 4


def test_precomputed_sparse_affinity_gives_the_dense_answer(blobs):
    X, _ = blobs
    A = _cluster.knn_affinity(X, n_neighbors=10)
    assert sc.tl.estimate_n_clusters(A, affinity="precomputed", max_clusters=10) == \
        sc.tl.estimate_n_clusters(A.toarray(), affinity="precomputed", max_clusters=10) == 4
    asymmetric = A.tolil()
    asymmetric[0, 1] = 5.0
    with pytest.raises(ValueError, match="symmetric"):
        sc.tl.estimate_n_clusters(asymmetric.tocsr(), affinity="precomputed")


def test_minibatch_kmeans_path_finds_the_blobs(blobs, monkeypatch):
    X, y = blobs
    full = sc.tl.create_clusterer("kmeans", n_clusters=4).fit(X).labels_
    monkeypatch.setattr(_cluster, "MINIBATCH_KMEANS_MIN_IMAGES", 10)
    mini = sc.tl.create_clusterer("kmeans", n_clusters=4).fit(X)
    assert sc.metrics.ari(y, mini.labels_) == 1.0 == sc.metrics.ari(full, mini.labels_)
    assert mini.cluster_centers_.shape == (4, 8)


def test_spectral_large_path_lobpcg_finds_the_blobs(blobs, monkeypatch):
    X, y = blobs
    monkeypatch.setattr(_cluster, "DENSE_EIGEN_MAX_IMAGES", 10)
    est = sc.tl.create_clusterer("spectral").fit(X)  # n_clusters="auto" from the sparse eigengap
    assert est.n_clusters_ == 4 and sc.metrics.ari(y, est.labels_) == 1.0
    assert sparse.issparse(est.affinity_matrix_)


def test_igraph_leiden_above_threshold_finds_the_blobs(blobs, monkeypatch):
    X, y = blobs
    small = sc.tl.create_clusterer("leiden", resolution=0.5).fit(X)
    monkeypatch.setattr(_cluster, "LEIDENALG_MAX_IMAGES", 10)
    state = random.getstate()
    large = sc.tl.create_clusterer("leiden", resolution=0.5).fit(X)
    assert random.getstate() == state  # igraph's random generator restored, Python's untouched
    assert sc.metrics.ari(y, large.labels_) == 1.0 == sc.metrics.ari(small.labels_, large.labels_)
    assert large.modularity_ == pytest.approx(small.modularity_)
    again = sc.tl.create_clusterer("leiden", resolution=0.5).fit(X)
    np.testing.assert_array_equal(again.labels_, large.labels_)


def test_silhouette_sampled_above_threshold(blobs, monkeypatch):
    X, y = blobs
    full = sc.metrics.silhouette(X, y)
    monkeypatch.setattr(_internal, "SILHOUETTE_MAX_IMAGES", 120)
    sampled = sc.metrics.silhouette(X, y)
    assert sampled == sc.metrics.silhouette(X, y)  # seeded
    assert sampled != full and abs(sampled - full) < 0.05


@pytest.mark.slow  # compiles NN-descent's numba kernels once (30 s; minutes on a loaded machine)
@pytest.mark.timeout(900)
def test_approximate_path_agrees_with_exact(blobs, monkeypatch):
    X, y = blobs
    exact_idx, exact_dist = _neighbors.nearest_neighbors(X, 10)
    exact_leiden = sc.tl.create_clusterer("leiden", resolution=0.5).fit(X).labels_
    exact_purity = sc.metrics.knn_purity(X, y, ks=[5, 10])
    monkeypatch.setattr(_neighbors, "EXACT_KNN_MAX_IMAGES", 10)
    idx, dist = _neighbors.nearest_neighbors(X, 10)
    n = X.shape[0]
    assert idx.shape == dist.shape == (n, 10)
    assert not (idx == np.arange(n)[:, None]).any()  # the image itself removed
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # nearest first
    recall = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(idx, exact_idx, strict=True)])
    assert recall >= 0.95
    np.testing.assert_allclose(dist[:, 0], exact_dist[:, 0], rtol=1e-4, atol=1e-5)
    assert _cluster.knn_graph(X, n_neighbors=10).nnz == n * 10
    leiden = sc.tl.create_clusterer("leiden", resolution=0.5).fit(X).labels_
    assert sc.metrics.ari(y, leiden) == 1.0 == sc.metrics.ari(exact_leiden, leiden)
    purity = sc.metrics.knn_purity(X, y, ks=[5, 10])
    assert purity == pytest.approx(exact_purity, abs=0.01)
    assert sc.metrics.knn_accuracy(X, y, k=5) == 1.0
