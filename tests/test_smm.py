"""Student's t mixture model (MAP-EM) and the `smm` clusterer (DARLC, seed 003)."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust.models import StudentMixture


def heavy_tailed_blobs(n_per=120, k=3, dof=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 5.0]])[:k]
    X = np.concatenate([c + rng.standard_t(dof, (n_per, 3)) for c in centres])
    return X, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("distribution", ["t", "gaussian"])
def test_map_em_never_decreases_the_log_posterior(distribution):
    X, _ = heavy_tailed_blobs()
    model = StudentMixture(3, distribution=distribution, max_iter=40, tol=0.0, random_state=0).fit(X)
    objective = np.asarray(model.objective_)
    assert len(objective) == 40
    assert np.all(np.diff(objective) >= -1e-6 * np.abs(objective[:-1])), np.diff(objective).min()
    assert objective[-1] > objective[0]


def test_smm_recovers_clusters_and_heavy_tails():
    X, y = heavy_tailed_blobs()
    model = StudentMixture(3, random_state=0).fit(X)
    assert sc.metrics.ari(y, model.labels_) > 0.95
    assert np.all(model.dof_ < 10)  # t(3) data: small degrees of freedom
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.isclose(model.weights_.sum(), 1.0)
    gaussian_data = np.random.default_rng(1).standard_normal((400, 2))
    assert StudentMixture(1, random_state=0).fit(gaussian_data).dof_[0] > 15  # light tails: large nu


def test_smm_is_more_robust_to_outliers_than_gmm():
    """Same start, same data with 5 % gross outliers: the t mixture's means stay on the true centres."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 4.0]])
    X = np.concatenate([c + rng.standard_normal((100, 3)) for c in centres] + [rng.uniform(-40, 40, (15, 3))])
    init = np.concatenate([np.repeat(np.arange(3), 100), rng.integers(0, 3, 15)])
    errors = {}
    for distribution in ("t", "gaussian"):
        model = StudentMixture(3, distribution=distribution, init=init).fit(X)
        errors[distribution] = np.abs(model.means_ - centres).max()
    assert errors["t"] < 0.5 < errors["gaussian"]


def test_smm_bad_input():
    X, _ = heavy_tailed_blobs(n_per=5)
    with pytest.raises(ValueError, match="n_components"):
        StudentMixture(100).fit(X)
    with pytest.raises(ValueError, match="distribution"):
        StudentMixture(2, distribution="cauchy").fit(X)
    with pytest.raises(ValueError, match="NaN"):
        StudentMixture(2).fit(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="weight_concentration_prior"):
        StudentMixture(2, weight_concentration_prior=0.5).fit(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        StudentMixture(2).predict(X)


def test_smm_clusterer_registered_and_reduces_wide_embeddings():
    X, y = heavy_tailed_blobs()
    labels = sc.tl.create_clusterer("smm", n_clusters=3).fit(X).labels_
    assert sc.metrics.ari(y, labels) > 0.95
    wide = np.concatenate([X, np.random.default_rng(0).normal(0, 0.1, (len(X), 60))], axis=1)
    est = sc.tl.create_clusterer("smm", n_clusters="auto", max_clusters=8).fit(wide)
    assert est.mixture_.means_.shape[1] == 32
    assert est.n_clusters_ == 3
    with pytest.raises(ValueError, match="n_clusters"):
        sc.tl.create_clusterer("smm", n_clusters="many").fit(X)
