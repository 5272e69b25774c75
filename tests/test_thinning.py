"""The abundance-thinned partner check (sc.metrics.thinned_partner_check)."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc


def test_binomial_thinning_of_counts():
    counts = np.random.default_rng(0).poisson(50.0, size=(20, 16, 16)).astype(np.float32)
    partners, fractions = sc.metrics.thin_counts(counts, fraction=(0.1, 0.5), seed=1)
    assert partners.shape == counts.shape and np.all(partners <= counts) and np.array_equal(partners, np.round(partners))
    assert np.all((fractions >= 0.1) & (fractions <= 0.5))
    np.testing.assert_allclose(partners.sum(axis=(1, 2)) / counts.sum(axis=(1, 2)), fractions, atol=0.03)
    again, _ = sc.metrics.thin_counts(counts, fraction=(0.1, 0.5), seed=1)
    np.testing.assert_array_equal(partners, again)


def test_non_integer_intensities_are_thinned_as_pseudo_counts_and_gamma_changes_contrast():
    rng = np.random.default_rng(0)
    quanta = rng.uniform(0.5, 40.0, size=(10, 1, 1))  # per image: the value of its weakest pixel
    multiples = rng.integers(1, 20, size=(10, 32, 32)) * (rng.random((10, 32, 32)) < 0.7)
    multiples[:, 0, 0] = 1  # every image holds its quantum
    intensities = quanta * multiples  # known pseudo-counts: the integer multiples of the quantum
    partners, fractions = sc.metrics.thin_counts(intensities, fraction=(0.3, 0.3), seed=0)
    kept = partners / quanta  # back in pseudo-counts: integers, never more than the original
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-3)
    assert np.all(np.round(kept) <= multiples)
    np.testing.assert_allclose(partners.sum() / intensities.sum(), 0.3, rtol=0.05)
    # the same draws as binomial thinning of the integer pseudo-counts themselves: unit-free
    counts, _ = sc.metrics.thin_counts(multiples.astype(np.float64), fraction=(0.3, 0.3), seed=0)
    np.testing.assert_allclose(partners, counts * quanta, rtol=1e-5)
    scaled, _ = sc.metrics.thin_counts(7.5 * intensities, fraction=(0.3, 0.3), seed=0)
    np.testing.assert_allclose(scaled, 7.5 * partners, rtol=1e-5)
    # min_counts = 4: the weakest pixel stands for 4 ions, so thinning takes relatively fewer of them to 0
    weak = intensities == quanta
    lost1 = np.mean(partners[weak] == 0)
    four, _ = sc.metrics.thin_counts(intensities, fraction=(0.3, 0.3), min_counts=4, seed=0)
    assert lost1 > 0.6 and np.mean(four[weak] == 0) < lost1 - 0.3  # (0.7 and 0.7^4 = 0.24 expected)
    with pytest.raises(ValueError, match="`min_counts` must be a positive"):
        sc.metrics.thin_counts(intensities, min_counts=0)
    flat, _ = sc.metrics.thin_counts(intensities, fraction=(0.3, 0.3), gamma=(0.2, 0.2), seed=0)
    assert np.allclose(flat.max(axis=(1, 2)), partners.max(axis=(1, 2)))
    assert flat.mean() > partners.mean()  # gamma < 1 lifts the low intensities


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(fraction=(0.0, 0.5)), "`fraction` must satisfy"), (dict(fraction=(0.5, 1.5)), "`fraction` must satisfy"),
     (dict(gamma=(2.0, 1.0)), "`gamma` must satisfy"), (dict(fraction="half"), "`fraction` must be a")],
)  # fmt: skip
def test_thinning_rejects_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.metrics.thin_counts(np.ones((3, 4, 4)), **kwargs)


def test_partner_recall_known_answers():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 16))
    recall, ranks = sc.metrics.partner_recall(features, features)  # identical partners
    assert recall == {1: 1.0, 10: 1.0} and np.all(ranks == 1)
    recall, _ = sc.metrics.partner_recall(features, rng.normal(size=(200, 16)))  # unrelated partners
    assert recall[1] < 0.03 and recall[10] < 0.06  # chance: 1/399 and 10/399
    with pytest.raises(ValueError, match="same|shape"):
        sc.metrics.partner_recall(features, features[:10])


def test_check_with_regular_images_beats_chance_and_random_features_do_not():
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=6, n_matrix_ions=2, seed=0)
    result = sc.metrics.thinned_partner_check(adata, layer=None, embedder="regular", n_clusters=4)
    assert result.n_images == adata.n_vars and result.recall[1] > 10 * result.chance_recall[1] and result.recall[10] > 0.9
    assert result.co_clustered > 2 * result.chance_co_clustered and result.n_clusters == 4
    rng = np.random.default_rng(0)
    random = sc.metrics.thinned_partner_check(
        adata, layer=None, embedder=lambda images: rng.normal(size=(len(images), 8)), n_clusters=4
    )
    assert random.recall[10] < 0.35 and random.co_clustered < 0.6
    assert set(random.to_dict()) >= {"partner_recall@1", "partner_recall@10", "partner_co_clustered"}


@pytest.mark.parametrize("refit", [True, False])
def test_check_with_the_randomized_svd_projects_partners_on_the_fitted_basis(refit):
    """Regular images with `n_components`: the thinned partners are projected on the singular vectors
    fitted on the originals (before, every `transform` computed its own SVD, in another basis: here
    recall@1 0.18 against 0.5 for the full images)."""
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=6, n_matrix_ions=2, seed=0)
    full = sc.metrics.thinned_partner_check(adata, layer=None, embedder="regular", clusterer=None)
    embedder = sc.tl.create_embedder("regular", n_components=8)
    if not refit:  # as in a pipeline run: the embedder fitted on the dataset itself
        embedder.fit(sc.pp.feature_images(adata), mask=sc.pp.tissue_mask_image(adata))
    svd = sc.metrics.thinned_partner_check(adata, layer=None, embedder=embedder, clusterer=None, refit=refit)
    assert svd.recall[10] > 0.9 and svd.recall[1] >= full.recall[1] - 0.1


def test_check_reads_raw_counts_and_names_a_missing_layer():
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=2, ions_per_pattern=4, n_matrix_ions=0, seed=1)
    with pytest.raises(ValueError, match="`layer`='raw' is not in `adata.layers`"):
        sc.metrics.thinned_partner_check(adata)
    sc.pp.preprocess_ion_images(adata)
    result = sc.metrics.thinned_partner_check(adata, clusterer=None, seed=3)
    assert np.isnan(result.co_clustered) and result.recall[10] > 0.5
    with pytest.raises(TypeError, match="`embedder` must be"):
        sc.metrics.thinned_partner_check(adata, embedder=3)
