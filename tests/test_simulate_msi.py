"""Tests of the MSI simulator ``sc.datasets.simulate_msi`` and its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust import _keys as K
from spatialclust.datasets._msi import C13_SHIFT, isotope_ratio

SMALL = dict(shape=(32, 32), n_patterns=4, ions_per_pattern=6, n_matrix_ions=4)


@pytest.fixture(scope="module")
def small():
    return sc.datasets.simulate_msi(**SMALL, seed=3)


def test_default_dataset_layout_and_speed():
    import time

    start = time.perf_counter()
    adata = sc.datasets.simulate_msi()
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0 * 3  # < 2 s alone; margin for the loaded shared test machine
    assert adata.uns[K.GRID] == {"shape": [64, 64], "pixel_size": 20.0}
    assert 100 <= adata.n_vars <= 150 and adata.n_obs == 64 * 64
    assert adata.X.dtype == np.float32 and adata.X.min() >= 0
    np.testing.assert_array_equal(adata.X, np.round(adata.X))  # counts
    assert set(adata.var[K.PATTERN]) == set(sc.datasets.pattern_names(6)) | {"matrix"}
    assert (adata.var[K.ON_TISSUE] == (adata.var[K.PATTERN] != "matrix")).all()
    assert adata.var[K.MZ].is_monotonic_increasing
    assert adata.var[K.MZ].between(300, 1000).all()
    np.testing.assert_allclose(adata.obs[K.TIC], adata.X.sum(axis=1))
    assert adata.obs[K.TISSUE].dtype == bool and 0.2 < adata.obs[K.TISSUE].mean() < 0.8


def test_pattern_names():
    assert sc.datasets.pattern_names(8) == ["region", "layer", "gradient", "spots", "ring", "blob", "region-2", "layer-2"]


def test_determinism():
    a = sc.datasets.simulate_msi(**SMALL, seed=7)
    b = sc.datasets.simulate_msi(**SMALL, seed=7)
    c = sc.datasets.simulate_msi(**SMALL, seed=8)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.var.equals(b.var) and a.obs.equals(b.obs)
    np.testing.assert_array_equal(a.uns[K.SIMULATION]["isotope_pairs"], b.uns[K.SIMULATION]["isotope_pairs"])
    assert a.X.shape != c.X.shape or not np.array_equal(a.X, c.X)
    assert not np.allclose(a.var[K.MZ].to_numpy()[:5], c.var[K.MZ].to_numpy()[:5])


def test_isotope_ground_truth(small):
    var = small.var
    pairs = small.uns[K.SIMULATION]["isotope_pairs"]
    assert len(pairs) == round(0.4 * (4 * 6 + 4))
    for mono, iso in pairs:
        assert var.loc[iso, K.ISOTOPE_OF] == mono and var.loc[mono, K.ISOTOPE_OF] == ""
        assert var.loc[iso, K.MZ] - var.loc[mono, K.MZ] == pytest.approx(C13_SHIFT, abs=1e-9)
        assert var.loc[iso, K.PATTERN] == var.loc[mono, K.PATTERN]
        assert var.loc[iso, K.N_CARBON] == var.loc[mono, K.N_CARBON]
    # no accidental isotope spacing: only planted pairs are within 0.01 of 1.00336 Da
    mz = var[K.MZ].to_numpy()
    gaps = np.abs(mz[None, :] - mz[:, None] - C13_SHIFT)
    i, j = np.nonzero(gaps < 0.01)
    found = {(var.index[a], var.index[b]) for a, b in zip(i, j)}
    assert found == {tuple(p) for p in pairs}
    # carbon number follows the mass
    assert np.all(np.abs(var[K.N_CARBON] / var[K.MZ] - 1 / 14) < 0.02)


def test_isotope_images_correlate_and_ratio_grows_with_carbon():
    adata = sc.datasets.simulate_msi(seed=0)
    images = sc.pp.feature_images(adata).reshape(adata.n_vars, -1)
    index = {name: i for i, name in enumerate(adata.var_names)}
    pairs = adata.uns[K.SIMULATION]["isotope_pairs"]
    m, i = np.array([[index[a], index[b]] for a, b in pairs]).T
    corr = np.array([np.corrcoef(images[a], images[b])[0, 1] for a, b in zip(m, i)])
    assert corr.min() > 0.5 and np.median(corr) > 0.8
    # observed M+1 / M ratio of the totals follows the binomial 13C expectation
    observed = images[i].sum(axis=1) / images[m].sum(axis=1)
    n_carbon = adata.var[K.N_CARBON].to_numpy()[m]
    np.testing.assert_allclose(observed, isotope_ratio(n_carbon), rtol=0.1)
    assert np.corrcoef(n_carbon, observed)[0, 1] > 0.9
    # the isotope metric of the package finds most planted pairs after the shared preprocessing
    sc.pp.preprocess_ion_images(adata)
    found = sc.metrics.isotope_pairs(adata.var[K.MZ].to_numpy(), sc.pp.feature_images(adata))
    names = {(adata.var_names[a], adata.var_names[b]) for a, b in found}
    assert names <= {tuple(p) for p in pairs} and len(names) >= 0.6 * len(pairs)


def test_isotope_ratio_binomial():
    p = 0.0107
    n = 50
    expected = n * p * (1 - p) ** (n - 1) / (1 - p) ** n
    assert isotope_ratio(n) == pytest.approx(expected)


def test_patterns_are_spatially_distinct(small):
    patterns = small.uns[K.SIMULATION]["pattern_images"]
    tissue = sc.pp.tissue_mask_image(small)
    assert patterns.shape == (4, 32, 32) and (patterns[:, ~tissue] == 0).all()
    corr = np.corrcoef(patterns.reshape(4, -1))
    assert (corr[np.triu_indices(4, 1)] < 0.9).all()
    # matrix ions are brighter off tissue, tissue ions on tissue
    images = sc.pp.feature_images(small)
    on = small.var[K.ON_TISSUE].to_numpy()
    assert (images[on][:, tissue].mean(axis=1) > images[on][:, ~tissue].mean(axis=1)).all()
    assert (images[~on][:, ~tissue].mean(axis=1) > images[~on][:, tissue].mean(axis=1)).all()


def test_options_and_bad_input():
    adata = sc.datasets.simulate_msi(**SMALL, isotopes=False, seed=0)
    assert (adata.var[K.ISOTOPE_OF] == "").all() and len(adata.uns[K.SIMULATION]["isotope_pairs"]) == 0
    assert adata.n_vars == 4 * 6 + 4
    with pytest.raises(ValueError, match="`n_patterns`"):
        sc.datasets.simulate_msi(n_patterns=0)
    with pytest.raises(ValueError, match="`shape`"):
        sc.datasets.simulate_msi(shape=(4, 64))
    with pytest.raises(ValueError, match="`mz_range`"):
        sc.datasets.simulate_msi(**SMALL, mz_range=(300.0, 301.0))
    with pytest.raises(ValueError, match="Could not place"):
        sc.datasets.simulate_msi(**SMALL, mz_range=(300.0, 305.0))


def test_writes_to_imzml_and_reads_back(small, tmp_path):
    path = tmp_path / "sim.imzML"
    sc.io.write_imzml(small, path)
    back = sc.io.read_imzml(path, peaks=small.var[K.MZ].to_numpy(), tolerance=0.001)
    assert back.shape == small.shape
    np.testing.assert_allclose(sc.pp.feature_images(back), sc.pp.feature_images(small), rtol=1e-6)


def test_round_trips_through_h5ad(tmp_path):
    import anndata as ad

    adata = sc.datasets.simulate_msi(**SMALL, seed=1)
    adata.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    np.testing.assert_array_equal(back.X, adata.X)
    assert back.var.equals(adata.var)
    np.testing.assert_array_equal(back.uns[K.SIMULATION]["isotope_pairs"], adata.uns[K.SIMULATION]["isotope_pairs"])
