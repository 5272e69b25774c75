"""The realistic regime of simulate_msi: each realism knob changes what it should."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc

SMALL = dict(shape=(32, 32), n_patterns=4, n_ions=24, n_matrix_ions=4)


def _images(adata):
    return sc.pp.feature_images(adata)


def test_invalid_realism_lists_the_options():
    with pytest.raises(ValueError, match="Invalid option `noisy` for `realism`.*`ideal`, `real`"):
        sc.datasets.simulate_msi(realism="noisy")


def test_real_regime_defaults_give_13_unequal_classes():
    adata = sc.datasets.simulate_msi(realism="real", seed=0)
    params = adata.uns["simulation"]["params"]
    assert params["realism"] == "real" and params["shape"] == [96, 96] and params["n_ions"] == 280
    sizes = adata.var.loc[adata.var["isotope_of"] == "", "pattern"].value_counts()
    assert len(sizes) == 13 and sizes.drop("matrix").sum() == 280 and sizes.min() >= 3 and sizes.max() > 2 * sizes.min()
    assert 350 <= adata.n_vars <= 420


def test_explicit_arguments_override_the_regime():
    adata = sc.datasets.simulate_msi(realism="real", shape=(40, 48), n_patterns=3, ions_per_pattern=5, n_matrix_ions=0, seed=1)
    assert adata.uns["grid"]["shape"] == [40, 48]
    assert set(adata.var.loc[adata.var["isotope_of"] == "", "pattern"].value_counts()) == {5}
    with pytest.raises(ValueError, match="either `ions_per_pattern`.*or `n_ions`"):
        sc.datasets.simulate_msi(ions_per_pattern=5, n_ions=30)
    with pytest.raises(ValueError, match="`n_ions` must be at least 3 per pattern"):
        sc.datasets.simulate_msi(n_patterns=6, n_ions=10)
    with pytest.raises(ValueError, match="`hot_pixel_gain` must be"):
        sc.datasets.simulate_msi(hot_pixel_gain=(0.5, 2.0))


def test_isotope_ratio_range_sets_partner_abundance_and_carbon_number():
    adata = sc.datasets.simulate_msi(realism="real", **SMALL, isotope_fraction=0.5, seed=2)
    ratios = adata.uns["simulation"]["isotope_ratios"]
    assert ratios.size > 0 and ratios.min() >= 0.095 and ratios.max() <= 0.505
    ideal = sc.datasets.simulate_msi(**SMALL, isotope_fraction=0.5, mz_range=(900.0, 1000.0), seed=2)
    assert ideal.uns["simulation"]["isotope_ratios"].min() > 0.6  # ~70 carbons at m/z 900-1000


def test_warp_deforms_the_patterns_but_not_the_tissue():
    def patterns(warp):
        adata = sc.datasets.simulate_msi(realism="real", **SMALL, warp=warp, seed=3)
        return adata.obs["tissue"].to_numpy(), adata.uns["simulation"]["pattern_images"]

    tissue, flat = patterns(0.0)
    similarity = {}
    for warp in (0.01, 0.1):
        warped_tissue, warped = patterns(warp)
        np.testing.assert_array_equal(tissue, warped_tissue)
        similarity[warp] = np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(flat, warped)])
    assert 0.9 < similarity[0.01] < 1.0 and similarity[0.1] < similarity[0.01] - 0.2


def test_hot_pixel_gain_raises_the_outliers():
    def max_over_p99(adata):
        images = _images(adata).reshape(adata.n_vars, -1)
        return np.median(images.max(axis=1) / np.maximum(np.percentile(images, 99, axis=1), 1e-9))

    mild = sc.datasets.simulate_msi(**SMALL, mean_counts=500.0, hot_pixel_fraction=0.005, hot_pixel_gain=(1.5, 2.0), seed=4)
    hot = sc.datasets.simulate_msi(**SMALL, mean_counts=500.0, hot_pixel_fraction=0.005, hot_pixel_gain=(30.0, 50.0), seed=4)
    assert max_over_p99(hot) > 3 * max_over_p99(mild)


def test_abundance_sigma_spreads_the_abundances():
    narrow = sc.datasets.simulate_msi(**SMALL, abundance_sigma=0.1, seed=5).uns["simulation"]["abundance"]
    wide = sc.datasets.simulate_msi(**SMALL, abundance_sigma=1.2, seed=5).uns["simulation"]["abundance"]
    decades = lambda a: np.log10(np.percentile(a, 95) / np.percentile(a, 5))  # noqa: E731
    assert decades(narrow) < 0.5 < 1.5 < decades(wide)


def _same_pattern_correlation(adata) -> float:
    images = _images(adata).reshape(adata.n_vars, -1)
    patterns = adata.var["pattern"].to_numpy()
    mono = (adata.var["isotope_of"] == "").to_numpy() & adata.var["on_tissue"].to_numpy()
    corr = np.corrcoef(images[mono])
    same = patterns[mono][:, None] == patterns[mono][None, :]
    np.fill_diagonal(same, False)
    return float(corr[same].mean())


@pytest.mark.parametrize(
    "knob, low, high",
    [("own_suppression", 0.0, 1.0), ("contrast_range", (1.0, 1.0), (0.3, 3.0)), ("mixing", 0.0, 0.8)],
)
def test_distortion_knobs_make_same_pattern_ions_less_alike(knob, low, high):
    common = dict(SMALL, mean_counts=2000.0, abundance_sigma=0.1, hot_pixel_fraction=0.0, max_baseline=0.0,
                  suppression=0.0, own_suppression=0.0, mixing=0.0, contrast_range=(1.0, 1.0), seed=6)  # fmt: skip
    clean = sc.datasets.simulate_msi(**{**common, knob: low})
    distorted = sc.datasets.simulate_msi(**{**common, knob: high})
    assert _same_pattern_correlation(distorted) < _same_pattern_correlation(clean) - 0.02


def test_mean_counts_sets_the_counting_noise():
    def zero_fraction(adata):
        return float(np.mean(_images(adata)[:, adata.uns["simulation"]["pattern_images"].max(axis=0) > 0] == 0))

    assert zero_fraction(sc.datasets.simulate_msi(**SMALL, mean_counts=2.0, seed=7)) > 3 * zero_fraction(
        sc.datasets.simulate_msi(**SMALL, mean_counts=200.0, seed=7)
    )
