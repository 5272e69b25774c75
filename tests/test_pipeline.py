"""Pipeline configuration, run directory contents, comparison table, atomicity and bad input."""

from __future__ import annotations

import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

import spatialclust as sc
from spatialclust._config import ConfigError
from spatialclust.pipeline import default_config, load_config, run_pipeline
from spatialclust.pipeline._cluster import h5ad_safe

#: Small enough for a few seconds per run: 24x24 px, ~24 ion images with 13C isotopes.
TINY = {
    "input": {"simulate": {"shape": [24, 24], "n_patterns": 3, "ions_per_pattern": 5, "n_matrix_ions": 2}},
    "embedding": [
        "regular",
        {"method": "neural", "params": {"backbone": "test_tiny", "pretrained": False, "batch_size": 32}},
    ],
    "cluster": [{"method": "kmeans", "params": {"n_clusters": 4, "n_init": 2}},
                {"method": "hdbscan", "params": {"min_cluster_size": 3}}],
    "evaluate": {"n_boot": 50},
    "report": {"dpi": 50, "max_thumbnails": 4, "figures": ["cluster_means", "rgb_composite"]},
}
# every figure type is drawn once in tests/test_cli.py (end to end) and tested in tests/test_pl.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_pipeline(TINY, tmp_path_factory.mktemp("runs") / "run")


def test_default_config_is_complete_and_commented():
    from importlib import resources

    text = resources.files("spatialclust.pipeline").joinpath("config.yaml").read_text()
    config = default_config()
    assert set(config) == {"seed", "input", "compute", "preprocess", "embedding", "cluster", "evaluate", "report"}
    # every key of every mapping section is explained by a comment in the packaged file
    assert text.count("\n#") + text.count("  #") > 60
    resolved = load_config()
    assert [e["method"] for e in resolved["embedding"]] == ["regular", "neural"]
    assert [c["method"] for c in resolved["cluster"]] == ["leiden", "umap_dbscan"]  # the best measured (docs/benchmarks.md)
    assert resolved["embedding"][0]["params"] == {"denoise": "gaussian", "denoise_size": 3, "clip_percentile": 99,
                                                  "contrast": "minmax", "postprocess": "pca_whiten"}


def test_load_config_shorthands_and_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"embedding": "regular", "cluster": ["kmeans"], "preprocess": {"winsorize": 99}}))
    config = load_config(path, seed=7, overrides=["report.dpi=72", "cluster=[{method: kmeans, embeddings: X_regular}]"])
    assert config["seed"] == 7 and config["report"]["dpi"] == 72 and config["preprocess"]["winsorize"] == 99
    assert config["embedding"] == [{"method": "regular", "params": {}, "key": None}]
    assert config["cluster"] == [{"method": "kmeans", "params": {}, "key": None, "embeddings": ["X_regular"]}]
    assert config["preprocess"]["normalize"] == "tic"  # untouched defaults kept


@pytest.mark.parametrize(
    "config, message",
    [
        ({"bogus": 1}, r"Unknown configuration key `bogus`. Valid keys here are: `cluster`"),
        ({"preprocess": {"winsorise": 95}}, r"Unknown configuration key `preprocess.winsorise`"),
        ({"embedding": ["nope"]}, r"Invalid option `nope` for `embedding\[0\].method`. Valid options are: .*`regular`"),
        ({"cluster": [{"method": "kmeans", "n_clusters": 4}]}, r"Unknown configuration key `cluster\[0\].n_clusters`"),
        ({"cluster": [{"params": {}}]}, r"`cluster\[0\].method` is required"),
        ({"cluster": [{"method": "kmeans", "params": 4}]}, r"`cluster\[0\].params` must be a mapping"),
        ({"cluster": []}, r"`cluster` must be a non-empty list"),
        ({"cluster": [{"method": "kmeans", "embeddings": ["X_pca"]}]}, r"Invalid option `X_pca` for `cluster\[0\].embeddings`"),
        ({"embedding": ["regular", "regular"]}, r"Embedding keys must be unique"),
        ({"preprocess": {"normalize": "tac"}}, r"Invalid option `tac` for `preprocess.normalize`"),
        ({"preprocess": {"winsorize": 150}}, r"`preprocess.winsorize` must be a percentile"),
        ({"report": {"figures": ["spectrum", "heatmap"]}}, r"Invalid option `heatmap` for `report.figures`"),
        ({"report": {"embedding_figures": ["tsne"]}}, r"Invalid option `tsne` for `report.embedding_figures`"),
        ({"seed": "zero"}, r"`seed` must be an integer"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_bad_parameters_fail_before_any_output(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`input.path`: .*missing.imzML"):
        load_config({"input": {"path": str(tmp_path / "missing.imzML")}})
    bad = {**TINY, "cluster": [{"method": "kmeans", "params": {"n_clusterz": 3}}]}
    with pytest.raises(ConfigError, match=r"`cluster\[0\].params`.*n_clusterz"):
        run_pipeline(bad, tmp_path / "run")
    dup = {**TINY, "cluster": [{"method": "kmeans", "key": "labels"}]}
    with pytest.raises(ConfigError, match=r"Cluster keys must be unique.*labels"):
        run_pipeline(dup, tmp_path / "run")
    assert not any(tmp_path.iterdir())


def test_run_directory_contents(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "run.log", "run.json", "results.h5ad", "clusters.csv", "metrics.json",
            "comparison.csv", "report.html", "figures"} <= names
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    assert "Report:" in (run_dir / "run.log").read_text()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["embedding"][1]["params"]["backbone"] == "test_tiny"

    keys = ["cluster_regular_kmeans", "cluster_neural_kmeans", "cluster_regular_hdbscan", "cluster_neural_hdbscan"]
    adata = ad.read_h5ad(run_dir / "results.h5ad")
    assert {"X_regular", "X_neural"} <= set(adata.varm) and "raw" in adata.layers
    for key in keys:
        assert adata.var[key].dtype.kind == "i" and adata.uns[key]["method"] in ("kmeans", "hdbscan")
    assert sc.pp.preprocessing_steps(adata)[0]["step"] == "remove_empty_features"

    clusters = pd.read_csv(run_dir / "clusters.csv", index_col="feature")
    assert list(clusters.index) == list(adata.var_names)
    np.testing.assert_array_equal(clusters["cluster_regular_kmeans"], adata.var["cluster_regular_kmeans"])
    corr = clusters["cluster_regular_kmeans_corr"]
    assert corr.between(-1, 1).all() and corr.mean() > 0.5

    comparison = pd.read_csv(run_dir / "comparison.csv")
    assert list(comparison.columns[:6]) == ["dataset", "clustering", "images", "clusters", "RIR", "noise images"]
    assert sorted(comparison["key"]) == sorted(keys)
    row = comparison.set_index("key").loc["cluster_regular_kmeans"]
    assert (row["dataset"], row["clustering"], row["images"], row["clusters"]) == ("simulated", "k-means", "regular", 4)
    assert row["noise images"] == 0 and row["RIR"] > 1  # isotopes cluster together more often than at random

    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = metrics["clusterings"]["cluster_regular_kmeans"]
    assert info["metrics"]["rir"] == pytest.approx(row["RIR"])
    assert sum(c["size"] for c in info["clusters"]) == adata.n_vars
    assert {c["quality"] for c in info["clusters"]} == {"high", "medium"}
    assert row["DBI-E"] == pytest.approx(info["metrics"]["dbi_euclidean"])
    assert row["high-quality clusters (SAM)"] == info["metrics"]["n_high_quality_clusters"]
    # the label-free check on abundance-thinned partners of the raw counts, per embedding
    recall = {key: metrics["clusterings"][key]["metrics"]["partner_recall@10"] for key in keys}
    assert recall["cluster_regular_kmeans"] == recall["cluster_regular_hdbscan"] > 0.5
    assert 0 <= recall["cluster_neural_kmeans"] <= 1


def test_figures_and_report(run_dir):
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert len(figures) == 4 * 2 + 3 and "cluster_neural_kmeans_rgb_composite.png" in figures
    # seed 001 Figs. 2e, 3 and 4
    assert {"embeddings_knn_purity.png", "embeddings_representations.png", "embeddings_ion_pairs.png"} <= set(figures)
    table = pd.read_csv(run_dir / "embeddings.csv")
    assert list(table["embedding"]) == ["X_regular", "X_neural"]
    assert table["linear evaluation accuracy"].between(0, 1).all() and table["10-NN purity"].between(0, 1).all()
    assert all((run_dir / "figures" / f).stat().st_size > 1000 for f in figures)
    html = (run_dir / "report.html").read_text()
    assert "Comparison of pipelines" in html and "hdbscan on neural ion images" in html and "var column `cluster_neural_hdbscan`" in html
    assert html.count("<figure>") == 11 and "Linear evaluation" in html and "k-nearest-neighbour purity of every embedding" in html and "<details><summary>cluster_regular_kmeans cluster 0" in html
    assert 'src="http' not in html and "<link" not in html and "<script" not in html  # self-contained


def test_rerun_from_written_config_reproduces(run_dir, tmp_path):
    config = load_config(run_dir / "config.yaml", overrides=["report.figures=[]", "report.thumbnails=false"])
    again = run_pipeline(config, tmp_path / "again")
    first = pd.read_csv(run_dir / "clusters.csv", index_col=0)
    second = pd.read_csv(again / "clusters.csv", index_col=0)
    pd.testing.assert_frame_equal(first, second)


def test_existing_directory_refused_and_overwritten(run_dir, tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "config.yaml").write_text("seed: 1\n")
    small = {**TINY, "embedding": ["regular"], "cluster": [{"method": "kmeans", "params": {"n_clusters": 3}}],
             "report": {"figures": ["cluster_means"], "embedding_figures": [], "thumbnails": False}}
    with pytest.raises(FileExistsError, match="already holds other files.*not a spatialclust run directory"):
        run_pipeline(small, target, overwrite=True)  # not a run: never replaced
    assert (target / "config.yaml").read_text() == "seed: 1\n"
    (target / "config.yaml").unlink()
    target.rmdir()
    run_pipeline(small, target)
    with pytest.raises(FileExistsError, match="already holds a different run.*--overwrite"):
        run_pipeline(small, target)
    run_pipeline(small, target, overwrite=True)
    assert (target / "report.html").is_file() and [p.name for p in (target / "figures").iterdir()] == [
        "cluster_regular_kmeans_cluster_means.png"
    ]


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(sc.pl, "cluster_mean_images", broken)
    small = {**TINY, "embedding": ["regular"], "cluster": [{"method": "kmeans", "params": {"n_clusters": 3}}]}
    with pytest.raises(RuntimeError, match="plotting failed"):
        run_pipeline(small, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []  # neither the run directory nor its temporary folder


def test_h5ad_safe():
    uns = {"steps": [{"step": "a", "params": {"r": (1, 2)}}], "names": ("x", "y"), "none": None}
    safe = h5ad_safe(uns)
    assert safe == {"steps": {"0": {"step": "a", "params": {"r": [1, 2]}}}, "names": ["x", "y"], "none": None}


def test_all_noise_clustering_is_still_reported(tmp_path):
    config = {**TINY, "embedding": ["regular"], "cluster": [{"method": "hdbscan", "params": {"min_cluster_size": 20}}],
              "report": {"figures": ["cluster_means", "rgb_composite", "members"], "embedding_figures": [], "dpi": 40}}
    with pytest.warns(UserWarning, match="noise"):
        run = run_pipeline(config, tmp_path / "run")
    row = pd.read_csv(run / "comparison.csv").iloc[0]
    assert row["clusters"] == 0 and row["noise images"] == 24 and np.isnan(row["RIR"])
    # no cluster to composite or list members of: only the (empty) cluster-means grid is drawn
    assert [p.name for p in (run / "figures").iterdir()] == ["cluster_regular_hdbscan_cluster_means.png"]
    html = (run / "report.html").read_text()
    assert "cluster_regular_hdbscan noise: 24 images" in html and "Undefined here: rir" in html


@pytest.mark.realdata
@pytest.mark.slow
def test_real_bladder_with_histology(tmp_path):
    from conftest import shared_data

    folder = shared_data("msi_mouse_bladder")
    config = {
        "input": {"path": str(folder / "bladder_cube.npz"), "name": "mouse bladder"},
        "embedding": ["regular"],
        "cluster": [{"method": "kmeans", "params": {"n_clusters": 8, "n_init": 2}}],
        "evaluate": {"n_boot": 50},
        "report": {"figures": ["rgb_composite"], "histology": str(folder / "mouse_urinary_bladder_HE.tif"),
                   "thumbnails": False, "dpi": 40},
    }
    run = run_pipeline(config, tmp_path / "run")
    row = pd.read_csv(run / "comparison.csv").iloc[0]
    assert row["dataset"] == "mouse bladder" and row["clusters"] == 8 and row["isotope pairs"] >= 1
    assert (run / "figures" / "cluster_regular_kmeans_rgb_composite.png").stat().st_size > 5000


def test_darlc_run_keeps_its_model_and_its_own_clusters(tmp_path):
    darlc = {"method": "darlc", "params": {"n_clusters": 3, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                                            "head_dim": 8, "pretrain_epochs": 1, "cluster_epochs": 1, "augmentation": "gaussian",
                                            "em_iter": 2, "device": "cpu"}}
    config = {**TINY, "embedding": [darlc], "cluster": [{"method": "kmeans", "params": {"n_clusters": 3}}],
              "report": {"figures": ["cluster_means"], "embedding_figures": [], "dpi": 40}}
    run = run_pipeline(config, tmp_path / "run")
    comparison = pd.read_csv(run / "comparison.csv")
    assert set(comparison["key"]) == {"cluster_darlc_own", "cluster_darlc_kmeans"}
    assert comparison.set_index("key").loc["cluster_darlc_own", "clustering"] == "own clusters"
    adata = ad.read_h5ad(run / "results.h5ad")
    assert adata.uns["X_darlc"]["checkpoint"] == "checkpoints/X_darlc"
    model = sc.tl.DARLCEmbedder.from_checkpoint(run / "checkpoints" / "X_darlc", device="cpu")
    np.testing.assert_array_equal(model.labels_, adata.var["cluster_darlc_own"].to_numpy())


def test_every_file_of_a_run_is_named_in_the_run_directory_vocabulary(run_dir):
    """issue 16: every run-directory name is a constant of `_rundir.py` (templates for per-key figures)."""
    from spatialclust import _rundir

    names = {value for name, value in vars(_rundir).items() if name.isupper() and isinstance(value, str)}
    figures = [re.escape(name).replace(r"\{key\}", ".+").replace(r"\{name\}", ".+") for name in
               (_rundir.CLUSTERING_FIGURE, _rundir.EMBEDDINGS_FIGURE)]
    top = sorted(p.name for p in run_dir.iterdir())
    assert {_rundir.CONFIG_FILE, _rundir.LOG_FILE, _rundir.MANIFEST_FILE, _rundir.REPORT_FILE, _rundir.RESULTS_FILE,
            _rundir.CLUSTERS_FILE, _rundir.METRICS_FILE, _rundir.COMPARISON_FILE, _rundir.FIGURES_DIR} <= set(top)
    assert set(top) <= names, sorted(set(top) - names)
    drawn = sorted(p.name for p in (run_dir / _rundir.FIGURES_DIR).iterdir())
    assert drawn and all(any(re.fullmatch(pattern, name) for pattern in figures) for name in drawn), drawn


def test_one_loader_serves_every_pipeline():
    from spatialclust.pipeline import PIPELINE_CONFIGS

    assert set(PIPELINE_CONFIGS) == {"cluster", "cells", "translate"}
    for name in PIPELINE_CONFIGS:
        assert load_config(pipeline=name, seed=3)["seed"] == 3
        with pytest.raises(ConfigError, match="Unknown configuration key `nope`"):
            load_config({"nope": 1}, pipeline=name)
    with pytest.raises(ValueError, match="Valid options are: `cluster`, `cells`, `translate`"):
        load_config(pipeline="clustering")
