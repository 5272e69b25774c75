"""Leiden on cells (given and scanned resolution), evaluation, k-NN accuracy and the cell plots."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialclust as sc


@pytest.fixture()
def blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    labels = np.repeat(["a", "b", "c"], 20)
    X = np.repeat(centres, 20, axis=0) + rng.normal(0, 0.5, (60, 2))
    adata = ad.AnnData(np.zeros((60, 0), dtype=np.float32), obs=pd.DataFrame({"label": pd.Categorical(labels)}, index=[str(i) for i in range(60)]))
    adata.obsm["X_rep"] = X.astype(np.float32)
    return adata


def test_leiden_scan_picks_the_best_silhouette_and_evaluation(blobs):
    sc.tl.leiden_cells(blobs, use_rep="X_rep", resolution="scan", resolutions=[0.05, 0.3, 1.0, 3.0],
                       n_neighbors=10, neighbors_method="gauss")
    info = blobs.uns["leiden"]
    best = max((row for row in info["scan"] if np.isfinite(row["silhouette"])), key=lambda row: row["silhouette"])
    assert info["resolution"] == best["resolution"] and info["n_clusters"] == 3
    scores = sc.tl.evaluate_cells(blobs)
    assert scores["purity"] == 1.0 and scores["nmi"] == pytest.approx(1.0) and scores["knn_accuracy"] == 1.0
    assert scores["purity"] == sc.metrics.purity(blobs.obs["label"].astype(str), blobs.obs["leiden"].cat.codes)
    half = np.arange(60) % 2 == 0
    assert sc.tl.evaluate_cells(blobs, subset=half)["n_cells"] == 30
    with pytest.raises(ValueError, match="`resolution` must be a positive number or 'scan'"):
        sc.tl.leiden_cells(blobs, use_rep="X_rep", resolution="auto", neighbors_method="gauss")
    with pytest.raises(KeyError, match="`use_rep`='X_umap'"):
        sc.tl.leiden_cells(blobs, use_rep="X_umap")


def test_knn_accuracy_leave_one_out_and_ties():
    X = np.array([[0.0], [1.0], [3.0], [10.0], [11.0]])
    labels = ["a", "b", "a", "c", "c"]
    # k=1: samples 0, 1, 2 take the label of a differently labelled nearest neighbour
    assert sc.metrics.knn_accuracy(X, labels, k=1) == pytest.approx(2 / 5)
    # k=2: sample 0 sees b (distance 1) and a (distance 3): a 1:1 tie goes to the nearest (b), not to
    # the first class in sorted order (a); samples 3 and 4 win their tie with c
    assert sc.metrics.knn_accuracy(X, labels, k=2) == pytest.approx(2 / 5)
    assert sc.metrics.knn_accuracy(X, ["a", "a", "a", "c", "c"], k=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`k` must be an integer in \\[1, n_samples - 1\\]"):
        sc.metrics.knn_accuracy(X, labels, k=5)


def test_cell_plots(tmp_path):
    cells = sc.datasets.simulate_cells(12, width=24, height_range=(20, 24), seed=0)
    fig = sc.pl.cell_examples(cells, "objects", n_examples=3, channels=["objects", "nucleus"], save=tmp_path / "ex.png", dpi=30)
    assert (tmp_path / "ex.png").is_file() and len(fig.axes) == 3 * 3
    rgb = sc.pl.cell_composite(sc.io.cell_image_stack(cells))
    assert rgb.shape == (12, *sc.io.cell_image_stack(cells).shape[2:], 3) and rgb.min() >= 0 and rgb.max() <= 1
    cells.obsm["X_two"] = np.random.default_rng(0).random((12, 2))
    sc.pl.cell_scatter(cells, "X_two", color=["shape", "label"], save=tmp_path / "map.png", dpi=30)
    assert (tmp_path / "map.png").is_file()
    with pytest.raises(ValueError, match="'cytoplasm' is not a channel"):
        sc.pl.cell_examples(cells, "objects", channels=["cytoplasm"])


def test_leiden_stability_scan_picks_the_finest_reproducible_partition(blobs):
    sc.tl.leiden_cells(blobs, use_rep="X_rep", resolution="scan", resolutions=[0.05, 0.3, 1.0, 8.0], criterion="stability",
                       n_neighbors=10, neighbors_method="gauss")
    info = blobs.uns["leiden"]
    assert all("stability" in row for row in info["scan"])
    stable = [row["resolution"] for row in info["scan"] if row["stability"] >= 0.9]
    assert info["resolution"] == max(stable) and info["params"]["criterion"] == "stability"
    assert sc.tl.evaluate_cells(blobs)["purity"] == 1.0
    with pytest.raises(ValueError, match="Invalid option `gap` for `criterion`"):
        sc.tl.leiden_cells(blobs, use_rep="X_rep", resolution="scan", criterion="gap")


def test_leiden_n_clusters_finds_the_resolution_of_that_many_clusters(blobs):
    sc.tl.leiden_cells(blobs, use_rep="X_rep", n_clusters=3, n_neighbors=10, neighbors_method="gauss")
    info = blobs.uns["leiden"]
    assert info["n_clusters"] == 3 and blobs.obs["leiden"].nunique() == 3
    assert info["scan"][-1]["resolution"] == info["resolution"] and info["params"]["n_clusters"] == 3
    assert sc.tl.evaluate_cells(blobs)["purity"] == 1.0
    sc.tl.leiden_cells(blobs, use_rep="X_rep", n_clusters=6, n_neighbors=10, neighbors_method="gauss")
    assert blobs.obs["leiden"].nunique() == 6
    with pytest.raises(ValueError, match="`n_clusters` must be an integer in \\[2, n_cells - 1\\]"):
        sc.tl.leiden_cells(blobs, use_rep="X_rep", n_clusters=1)
