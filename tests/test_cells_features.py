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
    f = classical_features(padded, sizes=np.array([[6, 6]]), channels=["a", "b", "c"], threshold=0.5, background="none").iloc[0]
    assert f["mean_intensity_a"] == pytest.approx(base.mean())
    assert f["max_intensity_c"] == pytest.approx((-base).max())  # padding zeros do not count
    assert f["correlation_a_b"] == pytest.approx(1.0) and f["correlation_a_c"] == pytest.approx(-1.0)
    assert list(classical_features(padded, threshold="otsu").columns)[:6] == [
        "max_intensity_ch0", "mean_intensity_ch0", "total_intensity_ch0", "size_ch0", "eccentricity_ch0", "radial_moment_ch0"]
    with pytest.raises(ValueError, match="Invalid option `mean` for `threshold`"):
        classical_features(padded, threshold="mean")


def test_border_background_bright_field_cell_equals_its_dark_inversion():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:40].astype(float)
    disc = (yy - 20) ** 2 + (xx - 18) ** 2 <= 12**2
    ring = disc & ((yy - 20) ** 2 + (xx - 18) ** 2 >= 9**2)
    dark = np.where(disc, 0.3 + 0.5 * rng.random((40, 40)), 0.0) + 0.6 * ring  # bright object, dark background
    bright = 680.0 - dark  # the same cell as a brightfield image: darker than its bright background
    padded = np.zeros((2, 1, 44, 44))
    padded[0, 0, :40, :40], padded[1, 0, :40, :40] = dark, bright
    sizes = np.array([[40, 40], [40, 40]])
    # the border of the true area (not the zero padding) gives the background level
    np.testing.assert_allclose(sc.tl.border_background(padded, np.pad(np.ones((2, 40, 40), bool), ((0, 0), (0, 4), (0, 4)))),
                               [[0.0], [680.0]])
    for feature_set in ("ics", "cellprofiler"):
        # each on its own: the dark-background cell is left as it is, the bright-background one is folded
        dark_table, bright_table = (classical_features(padded[[i]], sizes=sizes[[i]], feature_set=feature_set, background="border")
                                    for i in (0, 1))
        np.testing.assert_allclose(bright_table.to_numpy(), dark_table.to_numpy(), rtol=1e-6, atol=1e-6)
        raw = classical_features(padded, sizes=sizes, feature_set=feature_set, background="none")
        np.testing.assert_allclose(raw.iloc[[0]].to_numpy(), dark_table.to_numpy())
    table = bright_table
    # without background handling the bright-field cell's intensities are those of the background
    assert raw.iloc[1]["mean_ch0"] > 100 * table.iloc[0]["mean_ch0"]
    with pytest.raises(ValueError, match="Invalid option `rolling` for `background`"):
        classical_features(padded, background="rolling")
    params = sc.tl.cell_features(sc.datasets.simulate_cells(6, seed=0), background="border").uns["cell_features"]["params"]
    assert params["background"] == "border"


def test_cell_features_and_pca_on_simulated_cells():
    cells = sc.datasets.simulate_cells(40, seed=1)
    adata = sc.tl.cell_features(cells)
    assert adata.shape == (40, 3 * 6 + 3) and np.isfinite(adata.X).all()
    assert set(adata.var["channel"]) == {"membrane", "nucleus", "objects", "membrane_nucleus", "membrane_objects", "nucleus_objects"}
    # phenotypes show up in the features they should: more objects -> larger radial moment of the object channel
    table = adata.to_df().assign(objects=cells.obs["objects"].astype(str).to_numpy())
    means = table.groupby("objects")["radial_moment_objects"].mean()
    assert means["many"] > means["1"]
    nucleus = sc.tl.cell_features(cells, channels=["nucleus"])  # one channel: the same features of that channel
    assert list(nucleus.var_names) == [n for n in adata.var_names if n.endswith("_nucleus") and not n.startswith("correlation")]
    np.testing.assert_allclose(nucleus.X, adata[:, nucleus.var_names].X)
    assert nucleus.uns["cell_features"]["params"]["channels"] == ["nucleus"]
    with pytest.raises(ValueError, match="Invalid option \\['dna'\\] for `channels`. Valid options are: membrane, nucleus, objects"):
        sc.tl.cell_features(cells, channels=["dna"])
    sc.tl.cell_pca(adata, n_comps=5, umap=False)
    assert adata.obsm["X_pca"].shape == (40, 5) and "raw" in adata.layers
    np.testing.assert_allclose(adata.X.mean(axis=0), 0, atol=1e-4)


def test_bad_input_more_pca_components_than_features():
    adata = sc.tl.cell_features(sc.datasets.simulate_cells(30, seed=0))
    with pytest.raises(ValueError, match="`n_comps`=22 is larger than the number of features \\(21\\)"):
        sc.tl.cell_pca(adata, n_comps=22, umap=False)
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        sc.tl.cell_pca(adata[:5].copy(), n_comps=6, umap=False)


def test_cellprofiler_features_on_known_shapes():
    yy, xx = np.mgrid[0:40, 0:40].astype(float)
    cell = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2).astype(float)
    two = cell * 0.2 + 1.0 * (((yy - 20) ** 2 + (xx - 12) ** 2 <= 3**2) | ((yy - 20) ** 2 + (xx - 28) ** 2 <= 3**2))
    stripes = cell * (0.5 + 0.5 * (xx % 2))
    images = np.stack([np.stack([cell, two, stripes]), np.stack([cell, cell * 0.5, cell * 0.5])])
    table = classical_features(images, channels=["a", "b", "c"], threshold=0.1, feature_set="cellprofiler")
    assert np.isfinite(table.to_numpy()).all() and len(table.columns) == 21 + 3 * 44 + 7
    first, second = table.iloc[0], table.iloc[1]
    # the cell mask is the disc: area ~ pi r^2, round
    assert first["area_cell"] == pytest.approx(np.pi * 15**2, rel=0.03) and first["form_factor_cell"] > 0.85
    assert first["integrated_intensity_a"] == pytest.approx(cell.sum())
    # two bright spots 16 px apart in a disc of radius 15: 2 objects at distance 16 / 15
    assert first["n_objects_b"] == 2 and first["object_distance_b"] == pytest.approx(16 / 15, rel=0.05)
    assert first["n_objects_a"] == 1 and first["object_distance_a"] == 0.0
    # a uniform disc has half its intensity in the outer ring (area of radii 0.75-1: 44 %)
    assert first["radial_fraction_4of4_a"] == pytest.approx(1 - 0.75**2, abs=0.04)
    # stripes are texture: high GLCM contrast at distance 1, none on the uniform disc
    assert first["glcm_contrast_d1_c"] > 10 * max(second["glcm_contrast_d1_c"], 1e-3)
    assert second["glcm_homogeneity_d1_c"] == pytest.approx(1.0)
    # texture and intensity-distribution shape do not change with brightness
    assert second["glcm_energy_d1_b"] == pytest.approx(second["glcm_energy_d1_a"])
    assert second["integrated_intensity_b"] == pytest.approx(0.5 * second["integrated_intensity_a"])
    dark = classical_features(np.stack([cell, cell * 0])[None], threshold=0.1, feature_set="cellprofiler")  # no signal in ch1
    assert np.isfinite(dark.to_numpy()).all() and (dark.filter(like="hu_").filter(like="_ch1").to_numpy() == 0).all()
    with pytest.raises(ValueError, match="Invalid option `zernike` for `feature_set`"):
        classical_features(images, feature_set="zernike")
    cells = sc.tl.cell_features(sc.datasets.simulate_cells(14, regime="cell_cycle", seed=0), feature_set="cellprofiler")
    assert cells.n_vars == 21 + 3 * 44 + 7 and np.isfinite(cells.X).all()
    assert {"glcm_contrast_d3", "radial_fraction_1of4", "hu_1"} <= set(cells.var["feature"])
    assert cells.var.loc["area_cell", "channel"] == "cell" and cells.uns["cell_features"]["params"]["feature_set"] == "cellprofiler"
