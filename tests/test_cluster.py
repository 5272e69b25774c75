"""Clusterers: registry, every clusterer on well-separated blobs, helpers, sc.tl.cluster, bad input."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import spatialclust as sc
from spatialclust import _keys
from spatialclust.tl._cluster import DegenerateDataWarning, KMeansClusterer, knee_point

N_PER_BLOB = 14
TRUTH = np.repeat([0, 1, 2], N_PER_BLOB)


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """42 points in 20-D around 3 distant, non-collinear centres (cosine- and Euclidean-separable)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 3.0, (3, 20))
    return np.concatenate([c + rng.normal(0.0, 0.2, (N_PER_BLOB, 20)) for c in centres])


@pytest.fixture(scope="module")
def umap_fit(blobs):
    """The only full UMAP fit of the suite (numba compiles once; small n_epochs)."""
    return sc.tl.create_clusterer("umap_dbscan", n_neighbors=8, min_samples=4, n_epochs=50).fit(blobs)


@pytest.fixture
def adata(blobs):
    images = np.zeros((blobs.shape[0], 4, 5), dtype=np.float32)
    ad = sc.io.images_to_adata(images)
    ad.varm["X_regular"] = blobs.astype(np.float32)
    return ad


def test_registry():
    assert set(sc.tl.list_clusterers()) >= {"kmeans", "umap_dbscan", "hdbscan", "spectral", "leiden"}
    for name in ("kmeans", "umap_dbscan", "hdbscan", "spectral", "leiden"):
        est = sc.tl.create_clusterer(name, random_state=3)
        assert est.get_params()["random_state"] == 3
    with pytest.raises(ValueError, match=r"Invalid option `nope` for `method`. Valid options are: .*`kmeans`"):
        sc.tl.create_clusterer("nope")


@pytest.mark.parametrize("name", sc.tl.list_clusterers())
def test_every_registered_clusterer_follows_the_contract(name):
    """Clusterers registered by any module: sklearn estimator, ``random_state``, ``fit``/``fit_predict``."""
    from sklearn.base import BaseEstimator, clone

    est = sc.tl.create_clusterer(name, random_state=7)
    assert isinstance(est, BaseEstimator)
    assert clone(est).get_params()["random_state"] == 7
    assert callable(est.fit) and callable(est.fit_predict)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kmeans", {"n_clusters": 3}),
        ("kmeans", {"n_clusters": "auto"}),
        ("hdbscan", {"min_cluster_size": 5}),
        ("spectral", {}),
        ("leiden", {"resolution": 1.0}),
    ],
)
def test_clusterer_recovers_blobs(blobs, name, params):
    est = sc.tl.create_clusterer(name, **params)
    labels = est.fit_predict(blobs)
    assert labels.dtype == np.int64 and labels.shape == (blobs.shape[0],)
    assert adjusted_rand_score(TRUTH, labels) == 1.0
    # seeded: the same result again
    np.testing.assert_array_equal(sc.tl.create_clusterer(name, **params).fit_predict(blobs), labels)


def test_spectral_estimates_n_clusters(blobs):
    est = sc.tl.create_clusterer("spectral").fit(blobs)
    assert est.n_clusters_ == 3
    assert est.affinity_matrix_.shape == (42, 42)
    # 10-NN graph, symmetrised: every image has at least 10 neighbours
    assert (np.asarray(est.affinity_matrix_.sum(axis=1)).ravel() >= 10).all()


@pytest.mark.slow  # UMAP's numba kernels compile on first use: 15-35 s on the shared 2-core machine
def test_umap_dbscan_recovers_blobs(umap_fit):
    labels = umap_fit.labels_
    assert umap_fit.embedding_.shape == (42, 3)
    assert umap_fit.eps_ > 0 and umap_fit.min_samples_ == 4
    assert sc.tl.create_clusterer("umap_dbscan").get_params()["min_samples"] is None  # -> 2 * 3 dimensions
    clustered = labels != -1
    assert clustered.sum() >= 40  # at most a couple of border points called noise
    assert adjusted_rand_score(TRUTH[clustered], labels[clustered]) == 1.0
    assert np.unique(labels[clustered]).size == 3


@pytest.mark.slow  # shares the UMAP compilation with the test above
def test_umap_dbscan_all_noise_warns_and_reports(blobs, umap_fit, adata):
    est = sc.tl.create_clusterer("umap_dbscan", n_neighbors=8, min_samples=4, n_epochs=50, eps=1e-9)
    with pytest.warns(DegenerateDataWarning, match="labelled all 42 images noise"):
        labels = est.fit_predict(blobs)
    assert (labels == -1).all()
    with pytest.warns(DegenerateDataWarning):
        sc.tl.cluster(adata, "umap_dbscan", n_neighbors=8, min_samples=4, n_epochs=50, eps=1e-9)
    assert adata.uns["cluster"]["n_clusters"] == 0
    assert adata.uns["cluster"]["n_noise"] == 42
    assert adata.uns["cluster"]["fitted"] == {"eps": 1e-9, "min_samples": 4}
    assert adata.varm["cluster_umap"].shape == (42, 3)


def test_knee_point_hand_case():
    # flat then steep: the knee is the last point before the jump
    assert knee_point(np.array([1.0, 1.1, 1.2, 1.3, 5.0, 10.0])) == 3
    assert knee_point(np.array([2.0, 2.0, 2.0])) == 2


def test_default_min_samples():
    assert sc.tl.default_min_samples(3) == 6
    with pytest.raises(ValueError, match="`n_dims` must be a positive integer"):
        sc.tl.default_min_samples(0)


def test_estimate_dbscan_eps_separates_clusters_from_noise():
    rng = np.random.default_rng(1)
    dense = np.concatenate([rng.normal(c, 0.05, (20, 2)) for c in ((0, 0), (5, 5))])
    outliers = np.array([[10.0, -10.0], [-10.0, 10.0], [20.0, 0.0]])
    X = np.concatenate([dense, outliers])
    eps = sc.tl.estimate_dbscan_eps(X, min_samples=4)
    assert 0.05 < eps < 3.0  # above the within-cluster spacing, far below the outlier distances
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=4).fit_predict(X)
    assert (labels[-3:] == -1).all() and np.unique(labels[:-3]).size == 2


def test_estimate_n_clusters_min_clusters_when_there_is_no_structure():
    rng = np.random.default_rng(0)
    A = rng.uniform(0.9, 1.0, size=(30, 30))
    A = (A + A.T) / 2  # one homogeneous group: the largest gap is at k = 1
    assert sc.tl.estimate_n_clusters(A, affinity="precomputed", max_clusters=8) == 1
    with pytest.warns(UserWarning, match="no clear cluster structure"):
        k = sc.tl.estimate_n_clusters(A, affinity="precomputed", max_clusters=8, min_clusters=2)
    assert 2 <= k <= 8
    with pytest.raises(ValueError, match="min_clusters"):
        sc.tl.estimate_n_clusters(A, affinity="precomputed", max_clusters=8, min_clusters=9)


def test_estimate_n_clusters_features_and_affinity(blobs):
    assert sc.tl.estimate_n_clusters(blobs, max_clusters=10) == 3
    # a precomputed affinity with 4 disconnected blocks has 4 zero eigenvalues, then a gap
    A = np.kron(np.eye(4), np.ones((5, 5)))
    np.fill_diagonal(A, 0)
    assert sc.tl.estimate_n_clusters(A, affinity="precomputed", max_clusters=8) == 4
    with pytest.raises(ValueError, match="symmetric"):
        sc.tl.estimate_n_clusters(np.triu(A), affinity="precomputed")
    with pytest.raises(ValueError, match="Invalid option `rbf` for `affinity`"):
        sc.tl.estimate_n_clusters(blobs, affinity="rbf")


def test_cluster_writes_var_and_uns(adata, tmp_path):
    sc.tl.cluster(adata, "kmeans", n_clusters=3, key_added="km")
    assert adata.var["km"].dtype == np.int64
    assert adjusted_rand_score(TRUTH, adata.var["km"]) == 1.0
    info = adata.uns["km"]
    assert info["method"] == "kmeans" and info["use_rep"] == "X_regular"
    assert info["n_clusters"] == 3 and info["n_noise"] == 0
    assert info[_keys.PARAMS]["n_clusters"] == 3 and info[_keys.PARAMS]["random_state"] == 0
    assert info["fitted"] == {"n_clusters": 3}
    sc.tl.cluster(adata, "spectral", key_added="sp")
    assert adata.uns["sp"][_keys.PARAMS]["n_clusters"] == "auto" and adata.uns["sp"]["fitted"] == {"n_clusters": 3}
    sc.tl.cluster(adata, "hdbscan", key_added="hd")  # min_samples=None is stored h5ad-safe
    adata.write_h5ad(tmp_path / "clustered.h5ad")
    back = anndata.read_h5ad(tmp_path / "clustered.h5ad")
    assert back.uns["hd"][_keys.PARAMS]["min_samples"] == "None" and back.uns["sp"]["fitted"]["n_clusters"] == 3
    np.testing.assert_array_equal(back.var["km"], adata.var["km"])
    out = sc.tl.cluster(adata, KMeansClusterer(n_clusters=2), key_added="k2", copy=True)
    assert "k2" in out.var and "k2" not in adata.var
    assert out.uns["k2"]["method"] == "kmeans"


# ---- bad input -------------------------------------------------------------------------------


def test_k_larger_than_number_of_images(blobs):
    with pytest.raises(ValueError, match=r"`n_clusters`=50 is larger than allowed.*number of images \(42\)"):
        sc.tl.create_clusterer("kmeans", n_clusters=50).fit(blobs)
    for name in ("kmeans", "smm", "spectral"):  # no sensible adaptation: refused before any work
        with pytest.raises(ValueError, match=r"`n_clusters`=50 is more than the 42 images"):
            sc.tl.check_n_images(sc.tl.create_clusterer(name, n_clusters=50), 42)
        sc.tl.check_n_images(sc.tl.create_clusterer(name, n_clusters="auto"), 42)
    with pytest.raises(ValueError, match=r"needs at least 5 images; the data have 4"):
        sc.tl.check_n_images(sc.tl.create_clusterer("umap_dbscan"), 4)
    with pytest.raises(ValueError, match=r"needs at least 3 images; the data have 2"):
        sc.tl.check_n_images(sc.tl.create_clusterer("leiden"), 2)


@pytest.mark.parametrize(
    "name, params, fitted",
    [("spectral", {"n_neighbors": 42, "n_clusters": 4}, "n_neighbors=20"),
     ("leiden", {"n_neighbors": 100}, "n_neighbors=20"),
     ("hdbscan", {"min_cluster_size": 43, "min_samples": 2}, "min_cluster_size=21"),
     ("umap_dbscan", {"n_neighbors": 42, "min_samples": 4, "n_epochs": 50}, "n_neighbors=20"),
     ("kmeans", {"n_clusters": "auto"}, None)],
)
def test_neighbourhoods_larger_than_the_data_are_adapted(blobs, name, params, fitted, caplog):
    """issue 13, item 9: a neighbourhood the data cannot hold becomes half the images (logged), not an error."""
    if name == "hdbscan" and "min_cluster_size" in params:
        # three blobs of 14 images: no cluster of 21; the run goes on and says so
        with pytest.warns(sc.tl.DegenerateDataWarning, match="all 42 images noise"):
            labels = sc.tl.create_clusterer(name, **params).fit(blobs).labels_
    else:
        labels = sc.tl.create_clusterer(name, **params).fit(blobs).labels_
        assert np.unique(labels[labels >= 0]).size > 1  # the adapted neighbourhood still separates the blobs
    assert labels.shape == (42,)
    if fitted is not None:
        assert f"does not fit 42 images; using {fitted}" in caplog.text


@pytest.mark.parametrize("name", ["kmeans", "umap_dbscan", "hdbscan", "spectral", "leiden"])
def test_fewer_than_three_images(name):
    with pytest.raises(ValueError, match="has 2 images; clustering needs at least 3"):
        sc.tl.create_clusterer(name).fit(np.array([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize("name", ["kmeans", "umap_dbscan", "hdbscan", "spectral", "leiden"])
def test_all_images_identical(name):
    with pytest.raises(ValueError, match="All 10 images in `X` are identical"):
        sc.tl.create_clusterer(name).fit(np.ones((10, 5)))


def test_embedding_key_missing(adata):
    with pytest.raises(KeyError, match=r"`use_rep`='X_neural' is not in `adata.varm`. Available embeddings: `X_regular`"):
        sc.tl.cluster(adata, "kmeans", use_rep="X_neural")


def test_invalid_parameters(blobs):
    with pytest.raises(ValueError, match="`n_clusters` must be a positive integer or 'auto'"):
        sc.tl.create_clusterer("kmeans", n_clusters="many").fit(blobs)
    with pytest.raises(ValueError, match="`resolution` must be a positive number"):
        sc.tl.create_clusterer("leiden", resolution=0).fit(blobs)
    with pytest.raises(ValueError, match="`random_state` must be an int or None"):
        sc.tl.create_clusterer("kmeans", random_state="x").fit(blobs)
    with pytest.raises(ValueError, match="NaN"):
        sc.tl.create_clusterer("kmeans").fit(np.full((5, 2), np.nan))
