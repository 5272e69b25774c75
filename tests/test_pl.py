"""Plots of a clustering: files written, figure content, cluster means, bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest

import spatialclust as sc

H = W = 24


def _patterned_adata(seed: int = 0) -> ad.AnnData:
    """20 ion images of 24x24 px in 4 spatial patterns; features 0-3 are a 13C isotope series."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    patterns = [xx < 12, yy < 12, (xx - 12) ** 2 + (yy - 12) ** 2 < 36, xx + yy < 20]
    images = np.array([patterns[i % 4] * rng.uniform(1, 3) + 0.3 * rng.random((H, W)) for i in range(20)])
    images[5, 3, 3] = 50.0  # a hot pixel: winsorising must keep it from dominating the mean
    adata = ad.AnnData(images.reshape(20, -1).T.astype(np.float32))
    adata.obsm["spatial"] = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.int64)
    adata.obs["tissue"] = ((xx > 0) & (yy > 0)).ravel()
    adata.uns["grid"] = {"shape": [H, W], "pixel_size": None}
    adata.var["mz"] = [400 + i * 1.00336 if i < 4 else 400 + i * 7.3 for i in range(20)]
    adata.var_names = [f"mz-{mz:.4f}" for mz in adata.var["mz"]]
    adata.var["km"] = np.array([i % 4 for i in range(20)], dtype=np.int64)
    labels = adata.var["km"].to_numpy().copy()
    labels[[16, 17]] = -1
    adata.var["ud"] = labels
    adata.varm["ud_umap"] = rng.normal(size=(20, 3)).astype(np.float32) + labels[:, None]
    adata.varm["X_regular"] = adata.X.T.copy()
    adata.uns["km"] = {"method": "kmeans", "use_rep": "X_regular"}
    return adata


@pytest.fixture(scope="module")
def adata():
    return _patterned_adata()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_cluster_means_winsorise_then_average(adata):
    clusters, means = sc.pl.cluster_means(adata, "km")
    assert clusters.tolist() == [0, 1, 2, 3] and means.shape == (4, H, W)
    # reference: the pp functions on the whole dataset, then a plain average per cluster
    ref = sc.pp.winsorize(adata, percentile=95.0, copy=True)
    sc.pp.scale_images(ref)
    images = sc.pp.feature_images(ref)
    for c, mean in zip(clusters, means):
        np.testing.assert_allclose(mean, images[adata.var["km"].to_numpy() == c].mean(axis=0), atol=1e-6)
    assert means.max() <= 1.0 and means[1, 3, 3] < 1.0  # hot pixel of feature 5 clipped
    with_noise, _ = sc.pl.cluster_means(adata, "ud", include_noise=True)
    assert with_noise.tolist() == [-1, 0, 1, 2, 3]


def test_mean_image_correlation(adata):
    corr = sc.pl.mean_image_correlation(adata, "ud")
    assert np.isnan(corr[[16, 17]]).all()
    assert np.nanmin(corr) > 0.9  # members of clean patterns match their cluster mean
    shuffled = adata.copy()
    shuffled.var["km"] = np.array([0] * 10 + [1] * 10, dtype=np.int64)
    assert np.nanmean(sc.pl.mean_image_correlation(shuffled, "km")) < np.nanmean(corr)


@pytest.mark.parametrize(
    "plot, kwargs, n_axes",
    [
        (sc.pl.cluster_mean_images, {"key": "km", "ncols": 3}, 5),  # 4 clusters + the shared colour bar
        (sc.pl.cluster_members, {"key": "km", "cluster": 2}, 7),  # mean + 5 members + the colour bar
        (sc.pl.spectrum, {"key": "km"}, 2),
        (sc.pl.spectrum, {"key": "km", "zoom": None}, 1),
        (sc.pl.embedding, {"key": "ud"}, 1),
        (sc.pl.embedding, {"key": "km", "components": 2}, 1),
        (sc.pl.rgb_composite, {"key": "km"}, 4),
    ],
)
def test_plots_write_files(adata, tmp_path, plot, kwargs, n_axes):
    path = tmp_path / "figure.png"
    fig = plot(adata, save=path, **kwargs)
    assert sum(ax.get_visible() for ax in fig.axes) == n_axes
    assert path.stat().st_size > 2000 and path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_spectrum_zoom_labels_isotopes(adata):
    fig = sc.pl.spectrum(adata, "km")
    zoom = fig.axes[1]
    low, high = zoom.get_xlim()
    assert low < 400.0 and high > 403.0  # the 13C series at m/z 400-403 is the most intense with a partner
    assert [t.get_text() for t in zoom.texts] == ["0", "1", "2", "3"]


def test_embedding_3d_and_pca_projection(adata):
    fig = sc.pl.embedding(adata, "ud")
    assert fig.axes[0].name == "3d"
    fig = sc.pl.embedding(adata, "km")  # 576-dimensional X_regular -> first principal components
    assert "PC of X_regular" in fig.axes[0].get_xlabel()


def test_rgb_composite_over_histology(adata, tmp_path):
    histology = tmp_path / "he.png"
    plt.imsave(histology, np.random.default_rng(0).random((48, 48, 3)))
    fig = sc.pl.rgb_composite(adata, "km", [2, 0, 1], histology=histology, save=tmp_path / "rgb.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["histology", "composite over histology", "cluster 2 (red)", "cluster 0 (green)", "cluster 1 (blue)"]
    assert (tmp_path / "rgb.png").stat().st_size > 2000


def test_distinct_clusters_skips_similar_means():
    means = np.stack([np.eye(4), np.eye(4) * 2, np.fliplr(np.eye(4)), np.ones((4, 4)) + np.eye(4)])
    picked = sc.pl.distinct_clusters(np.array([0, 1, 2, 3]), means, np.array([10, 9, 8, 1]), n=2)
    assert picked == [0, 2]  # cluster 1 has the same pattern as cluster 0


def test_bad_input(adata, tmp_path):
    with pytest.raises(KeyError, match="`km`, `ud`|Clusterings present"):
        sc.pl.cluster_mean_images(adata, "missing")
    with pytest.raises(ValueError, match="`save` must be a file name ending in .png"):
        sc.pl.spectrum(adata, "km", save=tmp_path / "figure.txt")
    with pytest.raises(ValueError, match=r"`clusters` must be one to three cluster ids"):
        sc.pl.rgb_composite(adata, "km", [0, 9])
    with pytest.raises(ValueError, match="`zoom` must be"):
        sc.pl.spectrum(adata, "km", zoom=(405, 400))
    with pytest.raises(ValueError, match="`cluster`=7 is not a cluster"):
        sc.pl.cluster_members(adata, "km", 7)
    with pytest.raises(FileNotFoundError, match="Histology image"):
        sc.pl.rgb_composite(adata, "km", histology=tmp_path / "none.tif")
    with pytest.raises(ValueError, match="`components` must be 2 or 3"):
        sc.pl.embedding(adata, "km", components=4)
    bad = adata.copy()
    bad.var["float"] = 0.5
    with pytest.raises(TypeError, match="integer cluster labels"):
        sc.pl.cluster_means(bad, "float")
    assert not any(tmp_path.iterdir())


def test_image_figures_have_a_colour_bar_and_a_scale_bar(adata):
    """Cluster mean images share one intensity scale (colour bar) and show µm when the pixel size is known."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    adata = adata.copy()
    adata.uns["grid"] = {**adata.uns["grid"], "pixel_size": 50.0}
    fig = sc.pl.cluster_mean_images(adata, "km", title="Cluster mean images: k-means on regular ion images")
    colorbar = fig.axes[-1]
    assert "mean intensity" in colorbar.get_ylabel()
    bars = [a for a in fig.axes[0].artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1 and bars[0].txt_label.get_text().endswith("µm")
    assert fig._suptitle.get_text() == "Cluster mean images: k-means on regular ion images"
    adata.uns["grid"] = {k: v for k, v in adata.uns["grid"].items() if k != "pixel_size"}
    fig = sc.pl.cluster_mean_images(adata, "km")
    assert not [a for a in fig.axes[0].artists if isinstance(a, AnchoredSizeBar)]  # no pixel size, no bar
