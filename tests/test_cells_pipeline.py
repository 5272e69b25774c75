"""`spatialclust cells run` end to end on tiny simulated cells and on a folder of TIFFs."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust.cli import app
from spatialclust.pipeline import load_config, run_cells

torch = pytest.importorskip("torch")

FAST = {
    "input": {"simulate": {"n_cells": 42, "width": 24, "height_range": [20, 24]}},
    "pca": {"n_comps": 6},
    "metric_learning": {"methods": ["nca", "lfda"], "max_iter": 20},
    "embedding": [{"method": "pretrained", "params": {"backbone": "test_tiny", "image_size": 16, "device": "cpu"}}],
    "embedding_pca": {"n_comps": 8, "metric_learning": ["nca"]},
    "cluster": {"neighbors_method": "gauss", "n_neighbors": 8},
    "report": {"umap": False, "n_examples": 3, "dpi": 40},
}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_cli_cells_run_end_to_end(tmp_path):
    config = tmp_path / "cells.yaml"
    config.write_text(yaml.safe_dump({**FAST, "embedding": [*FAST["embedding"], {"method": "pixels"}]}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["cells", "run", str(config), "-o", str(out), "--seed", "1", "-q",
                                      "--set", "cluster.resolution=0.8"])
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "run.log", "run.json", "results.h5ad", "cells.csv", "comparison.csv", "metrics.json", "report.html"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "comparison.csv")
    assert list(zip(table["representation"], table["metric_learning"])) == [
        ("features", "none"), ("features", "nca"), ("features", "lfda"), ("test_tiny", "none"), ("test_tiny", "nca"),
        ("pixels", "none"), ("pixels", "nca"), ("features", "self_lfda")]
    # the self-labelled metric uses no labels: no held-out score, pseudo-labels from the pixels' clusters
    assert pd.isna(table["purity_held_out"].iloc[-1])
    assert table["purity"].between(0, 1).all() and table["purity_held_out"].iloc[1:3].notna().all()
    # the labels carry signal in the features: learning a metric makes neighbours agree with them
    assert table["knn_accuracy"].iloc[1] > table["knn_accuracy"].iloc[0]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["seed"] == 1 and resolved["cluster"]["resolution"] == 0.8
    # the pseudo-labels have their own resolution (default: the stability scan), the rest is `cluster`'s
    assert resolved["metric_learning"]["self_labelled"]["resolution"] == "scan"
    adata = anndata.read_h5ad(out / "results.h5ad")
    assert "leiden_features+nca" in adata.obs and adata.obsm["X_nca"].shape == (42, 6)
    assert adata.uns["X_self_lfda"]["label_rep"] == "X_pixels_pca" and adata.obs["X_self_lfda_pseudo_labels"].notna().sum() > 0
    assert adata.uns["X_self_lfda"]["params"]["resolution"] == "scan" and adata.uns["leiden_pixels"]["resolution"] == 0.8
    assert sc.io.cell_image_stack(adata).shape[:2] == (42, 3)
    html = (out / "report.html").read_text()
    assert "features+nca: example cells per cluster" in html
    assert "clustered by Leiden at resolution 0.8" in html and "Best without labels:" in html
    assert json.loads((out / "metrics.json").read_text())["n_cells"] == 42


def test_cells_report_headline_ranks_by_nmi_with_and_without_labels():
    from spatialclust.report._cells import _overview

    rows = [("pixels", "none", 0.70, 0.50, 12), ("features", "none", 0.60, 0.55, 7), ("features", "self_lfda", 0.65, 0.60, 7),
            ("features", "nca", 0.90, 0.80, 7)]
    table = pd.DataFrame(rows, columns=["representation", "metric_learning", "purity", "nmi", "n_clusters"]).assign(
        ari=0.4, purity_held_out=[None, None, None, 0.85])
    text = _overview(table, {"cluster": {"resolution": 1.0, "criterion": "stability"}}, 50)
    # purity favours the pixels' 12 clusters; NMI ranks the self-labelled metric first among the label-free rows
    assert "at resolution 1." in text and "Best without labels: features+self_lfda (NMI 0.60" in text
    assert "against the raw-pixel baseline pixels (NMI 0.50" in text
    assert "Best with labels (a metric learned on part of them): features+nca" in text and "purity 0.85 on the cells" in text
    unlabelled = _overview(table[["representation", "metric_learning", "n_clusters"]],
                           {"cluster": {"resolution": "scan", "criterion": "silhouette"}}, 50)
    assert "chosen by the silhouette scan" in unlabelled and "No labels, so the scores cannot rank" in unlabelled


def test_cells_run_on_tiff_folder_without_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "tiffs"
    folder.mkdir()
    rows = []
    for i in range(24):
        bright = i % 2
        image = rng.random((2, 16, 12 + (i % 3))).astype(np.float32) * 0.1
        image[1, 5:9, 4:8] += 1.0 + 2.0 * bright
        tifffile.imwrite(folder / f"c{i:02d}.tif", image, photometric="minisblack")
        if i < 20:
            rows.append({"cell": f"c{i:02d}", "label": "bright" if bright else "dim"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    config = {**FAST, "input": {"path": str(folder), "labels": str(tmp_path / "labels.csv"), "channels": ["bf", "gfp"]},
              "embedding": [], "metric_learning": {"methods": ["nca"]}, "pca": {"n_comps": 4}}
    out = run_cells(config, tmp_path / "run")
    assert anndata.read_h5ad(out / "results.h5ad").uns["cell_features"]["params"]["background"] == "none"
    table = pd.read_csv(out / "comparison.csv")
    assert table.loc[0, "purity"] == pytest.approx(1.0)


def test_cells_run_on_an_h5ad_without_images_or_features_fails_clearly(tmp_path):
    anndata.AnnData(np.zeros((10, 0), dtype=np.float32)).write_h5ad(tmp_path / "nothing.h5ad")
    with pytest.raises(ValueError, match="holds neither cell images .* nor features in X"):
        run_cells({**FAST, "input": {"path": str(tmp_path / "nothing.h5ad")}}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cells_config_rejects_unknown_keys_and_methods(tmp_path):
    with pytest.raises(ValueError, match="Unknown configuration key `cluster.resolutoin`"):
        load_config({"cluster": {"resolutoin": 1}}, pipeline="cells")
    with pytest.raises(ValueError, match="Invalid option `pca` for `metric_learning.methods`"):
        load_config({"metric_learning": {"methods": ["pca"]}}, pipeline="cells")
    with pytest.raises(ValueError, match="Invalid option `rolling` for `features.background`"):
        load_config({"features": {"background": "rolling"}}, pipeline="cells")
    with pytest.raises(ValueError, match="Invalid option `clip` for `embedding\\[0\\].method`"):
        load_config({"embedding": ["clip"]}, pipeline="cells")
    result = CliRunner().invoke(app, ["cells", "run", "-o", str(tmp_path / "x"), "--set", "cluster.resolution=-1"])
    assert result.exit_code == 1 and "cluster.resolution" in result.output
    with pytest.raises(ValueError, match="metric_learning.self_labelled.resolution"):
        load_config({"metric_learning": {"self_labelled": {"resolution": "auto"}}}, pipeline="cells")
    assert load_config({}, pipeline="cells")["cluster"]["resolution"] == 1.0  # the paper's fixed resolution


def test_cells_run_with_labels_of_one_class_skips_metric_learning(tmp_path, caplog):
    """Labels that are all one phenotype cannot train a metric: the run says so and scores the rest."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for i in range(20):
        image = rng.random((1, 16, 16)).astype(np.float32)
        image[0, 4:8 + i % 4, 4:8] += 1.0
        tifffile.imwrite(folder / f"c{i:02d}.tif", image, photometric="minisblack")
    pd.DataFrame({"cell": [f"c{i:02d}" for i in range(20)], "label": "G1"}).to_csv(tmp_path / "labels.csv", index=False)
    config = {**FAST, "input": {"path": str(folder), "labels": str(tmp_path / "labels.csv")},
              "embedding": [], "metric_learning": {"methods": ["nca"]}, "pca": {"n_comps": 4}}
    with caplog.at_level("WARNING", logger="spatialclust"):
        out = run_cells(config, tmp_path / "run")
    assert "labels of a single class" in caplog.text
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["metric_learning"]) == ["none"] and table.loc[0, "purity"] == pytest.approx(1.0)
