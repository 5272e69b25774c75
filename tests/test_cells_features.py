"""Classical ICS image features, hand-checked on synthetic shapes; scaling + PCA; bad PCA size."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust.tl import classical_features


def _one(image: np.ndarray, **kwargs) -> dict:
    return classical_features(image[None, None].astype(np.float64), **kwargs).iloc[0].to_dict()


def test_single_pixel_and_two_pixels():
    img = np.zeros((9, 9))
    img[4, 4] = 1.0
    f = _one(img, threshold=0.5)
    assert f["max_intensity_ch0"] == 1.0 and f["total_intensity_ch0"] == 1.0
    assert f["mean_intensity_ch0"] == pytest.approx(1 / 81)
    assert f["size_ch0"] == 1 and f["eccentricity_ch0"] == 0.0 and f["radial_moment_ch0"] == 0.0
    two = np.zeros((9, 9))
    two[4, 2] = two[4, 6] = 1.0
    f = _one(two, threshold=0.5)
    # centroid (4, 4); both pixels 2 px away: mean squared distance 4; a line: eccentricity 1
    assert f["size_ch0"] == 2 and f["radial_moment_ch0"] == pytest.approx(4.0)
    assert f["eccentricity_ch0"] == pytest.approx(1.0)


def test_disc_and_ellipse_eccentricity():
    yy, xx = np.mgrid[0:41, 0:41] - 20.0
    disc = (xx**2 + yy**2 <= 10**2).astype(float)
    f = _one(disc, threshold=0.5)
    assert f["eccentricity_ch0"] < 0.05
    assert f["size_ch0"] == disc.sum()
    # uniform disc: mean squared radius r^2 / 2 = 50
    assert f["radial_moment_ch0"] == pytest.approx(50.0, rel=0.03)
    ellipse = ((xx / 16) ** 2 + (yy / 8) ** 2 <= 1).astype(float)
    f = _one(ellipse, threshold=0.5)
    assert f["eccentricity_ch0"] == pytest.approx(np.sqrt(1 - (8 / 16) ** 2), abs=0.02)
    # uniform ellipse: (a^2 + b^2) / 4
    assert f["radial_moment_ch0"] == pytest.approx((16**2 + 8**2) / 4, rel=0.03)


def test_padding_is_ignored_and_correlation():
    base = np.random.default_rng(0).random((6, 6))
    padded = np.zeros((1, 3, 10, 10))
    padded[0, 0, :6, :6] = base
    padded[0, 1, :6, :6] = 2 * base + 1
    padded[0, 2, :6, :6] = -base
    f = classical_features(padded, sizes=np.array([[6, 6]]), channels=["a", "b", "c"], threshold=0.5).iloc[0]
    assert f["mean_intensity_a"] == pytest.approx(base.mean())
    assert f["max_intensity_c"] == pytest.approx((-base).max())  # padding zeros do not count
    assert f["correlation_a_b"] == pytest.approx(1.0) and f["correlation_a_c"] == pytest.approx(-1.0)
    assert list(classical_features(padded, threshold="otsu").columns)[:6] == [
        "max_intensity_ch0", "mean_intensity_ch0", "total_intensity_ch0", "size_ch0", "eccentricity_ch0", "radial_moment_ch0"]
    with pytest.raises(ValueError, match="Invalid option `mean` for `threshold`"):
        classical_features(padded, threshold="mean")


def test_cell_features_and_pca_on_simulated_cells():
    cells = sc.datasets.simulate_cells(40, seed=1)
    adata = sc.tl.cell_features(cells)
    assert adata.shape == (40, 3 * 6 + 3) and np.isfinite(adata.X).all()
    assert set(adata.var["channel"]) == {"membrane", "nucleus", "objects", "membrane_nucleus", "membrane_objects", "nucleus_objects"}
    # phenotypes show up in the features they should: more objects -> larger radial moment of the object channel
    table = adata.to_df().assign(objects=cells.obs["objects"].astype(str).to_numpy())
    means = table.groupby("objects")["radial_moment_objects"].mean()
    assert means["many"] > means["1"]
    sc.tl.cell_pca(adata, n_comps=5, umap=False)
    assert adata.obsm["X_pca"].shape == (40, 5) and "raw" in adata.layers
    np.testing.assert_allclose(adata.X.mean(axis=0), 0, atol=1e-4)


def test_bad_input_more_pca_components_than_features():
    adata = sc.tl.cell_features(sc.datasets.simulate_cells(30, seed=0))
    with pytest.raises(ValueError, match="`n_comps`=22 is larger than the number of features \\(21\\)"):
        sc.tl.cell_pca(adata, n_comps=22, umap=False)
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        sc.tl.cell_pca(adata[:5].copy(), n_comps=6, umap=False)
