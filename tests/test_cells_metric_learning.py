"""NCA, LMNN, MLKR and LFDA behind one interface: fit on labelled cells, transform all."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

import spatialclust as sc
from spatialclust.tl import MetricLearner


def _informative_plus_noise(n=60, seed=0):
    """Class signal in feature 0 only, buried under large-variance noise features."""
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n // 3)
    X = rng.normal(0, 3.0, (n, 4))
    X[:, 0] = np.repeat([0.0, 1.0, 2.0], n // 3) + rng.normal(0, 0.1, n)
    return X, y


@pytest.mark.parametrize(("method", "params"), [("nca", {}), ("lmnn", {"max_iter": 50, "params": {"learn_rate": 1e-3}}), ("mlkr", {"max_iter": 30}), ("lfda", {})])
def test_each_learner_improves_knn_accuracy(method, params):
    X, y = _informative_plus_noise()
    labels = y.astype(object)
    labels[::4] = None  # unlabelled cells are ignored by fit and transformed like the others
    learner = MetricLearner(method, random_state=0, **params).fit(X, labels)
    Z = learner.transform(X)
    assert Z.shape == (60, 4) and np.isfinite(Z).all()
    assert learner.components_.shape == (4, 4) and list(learner.classes_) == ["a", "b", "c"]
    before = sc.metrics.knn_accuracy(X, y, k=5)
    after = sc.metrics.knn_accuracy(Z, y, k=5)
    assert after > before + 0.2, (method, before, after)


@pytest.mark.parametrize("method", ["nca", "mlkr"])
def test_learners_do_not_depend_on_the_units_of_the_input(method):
    """Raw-pixel PCA has squared distances ~1e7, where NCA's softmax (and MLKR's kernel) saturates and
    NCA used to stop at its identity initialisation; the input is rescaled to unit mean variance."""
    X, y = _informative_plus_noise()
    small = MetricLearner(method, max_iter=30, random_state=0).fit(X, y)
    large = MetricLearner(method, max_iter=30, random_state=0).fit(3000.0 * X, y)
    np.testing.assert_allclose(large.transform(3000.0 * X), small.transform(X), rtol=1e-6, atol=1e-6)
    assert large.scale_ == pytest.approx(3000.0 * small.scale_)
    assert sc.metrics.knn_accuracy(large.transform(3000.0 * X), y, k=5) > sc.metrics.knn_accuracy(X, y, k=5) + 0.2


def test_metric_learning_on_anndata_with_labelled_subset():
    cells = sc.tl.cell_features(sc.datasets.simulate_cells(45, seed=2))
    sc.tl.cell_pca(cells, n_comps=6, umap=False)
    sc.tl.metric_learning(cells, "nca", train_fraction=0.5, random_state=0)
    assert cells.obsm["X_nca"].shape == (45, 6)
    train = cells.obs["X_nca_train"].to_numpy()
    assert 15 <= train.sum() <= 30
    info = cells.uns["X_nca"]
    assert info["method"] == "nca" and info["n_train"] == train.sum() and info["params"]["train_fraction"] == 0.5


def test_bad_input_single_class():
    X, _ = _informative_plus_noise()
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        MetricLearner("lfda").fit(X, ["a"] * 60)
    with pytest.raises(ValueError, match="`y` has 3 labels but `X` has 60 rows"):
        MetricLearner("nca").fit(X, ["a", "b", "a"])
    with pytest.raises(ValueError, match="Invalid option `pca` for `method`"):
        MetricLearner("pca").fit(X, ["a", "b"] * 30)
    with pytest.raises(ValueError, match="LMNN with n_neighbors=3 needs more than 3"):  # an explicit value is kept
        MetricLearner("lmnn", params={"n_neighbors": 3}).fit(X[:6], ["a", "a", "a", "b", "b", "b"])


def test_lmnn_default_neighbours_adapt_to_a_small_class(caplog):
    X, _ = _informative_plus_noise()
    learner = MetricLearner("lmnn", max_iter=20, params={"learn_rate": 1e-3}).fit(X[:6], ["a", "a", "a", "b", "b", "b"])
    assert "n_neighbors reduced from 3 to 2" in caplog.text and learner.estimator_.n_neighbors == 2


def test_a_class_with_one_labelled_cell_is_left_out_of_training(caplog):
    """A rare phenotype with one labelled cell (e.g. anaphase in a small sample) gives no
    within-class pair: it is left out of the fit with a warning, and every cell is still embedded."""
    X, y = _informative_plus_noise()
    labels = np.asarray(y, dtype=object)
    labels[0] = "rare"
    cells = anndata.AnnData(X=X.astype(np.float32))
    cells.obs["label"] = labels
    sc.tl.metric_learning(cells, "lfda", use_rep="X", random_state=0)
    assert "single labelled cell: rare" in caplog.text
    train = cells.obs["X_lfda_train"].to_numpy()
    assert not train[0] and train[1:].all() and cells.obsm["X_lfda"].shape == (60, 4)
    assert list(cells.uns["X_lfda"]["classes"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="class 'rare' has 1"):  # the estimator itself stays strict
        MetricLearner("lfda").fit(X, labels)


def test_self_labelled_metric_learns_from_the_clusters_of_a_second_view():
    """No labels: the Leiden clusters of a clean second view teach LFDA which feature carries the
    classes; the 5-NN accuracy of the features (scored against the hidden truth) rises."""
    X, y = _informative_plus_noise(n=90)
    rng = np.random.default_rng(1)
    view = np.repeat([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]], 30, axis=0) + rng.normal(0, 0.5, (90, 2))
    cells = anndata.AnnData(X=np.zeros((90, 1), np.float32), obsm={"X_pca": X, "X_view": view})
    sc.tl.self_labelled_metric(cells, use_rep="X_pca", label_rep="X_view", resolution=0.2, neighbors_method="gauss",
                               n_neighbors=10)
    Z = cells.obsm["X_self_lfda"]
    assert Z.shape == (90, 4) and "X_self_lfda_train" not in cells.obs
    pseudo = cells.obs["X_self_lfda_pseudo_labels"]
    assert pseudo.notna().sum() == 45 and cells.uns["X_self_lfda"]["n_pseudo_clusters"] == 3
    before, after = sc.metrics.knn_accuracy(X, y, k=5), sc.metrics.knn_accuracy(Z, y, k=5)
    assert after > before + 0.3, (before, after)


def test_bad_input_self_labelled_metric_without_clusters():
    X, _ = _informative_plus_noise()
    cells = anndata.AnnData(X=np.zeros((60, 1), np.float32), obsm={"X_pca": X, "X_view": np.zeros((60, 2))})
    with pytest.raises(ValueError, match="`confident_fraction` must be in"):
        sc.tl.self_labelled_metric(cells, label_rep="X_view", confident_fraction=0)
    with pytest.raises(KeyError, match="'X_missing' is not in adata.obsm"):
        sc.tl.self_labelled_metric(cells, label_rep="X_missing")
    cells.obsm["X_view"] = np.random.default_rng(0).normal(0, 1, (60, 2))  # one blob: one cluster at a low resolution
    with pytest.raises(sc.tl.NoPseudoLabelsError, match="gave 1 cluster"):
        sc.tl.self_labelled_metric(cells, label_rep="X_view", resolution=0.01, neighbors_method="gauss")
