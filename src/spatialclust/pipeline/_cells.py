"""The cell-image phenotyping pipeline behind ``spatialclust cells run`` (Palli 2023).

read (TIFF per cell / folder / h5ad / instrument-feature table, or simulate) -> classical image
features -> scaling + PCA -> metric learning on a labelled subset (NCA, LMNN, MLKR, LFDA) ->
image embeddings (channel-wise pretrained networks, DINO) + PCA + NCA -> a label-free metric on
the features from the Leiden clusters of the raw pixels -> Leiden per representation
-> purity, NMI, ARI, silhouette, k-NN accuracy -> figures -> report, configured by
``spatialclust/pipeline/cells.yaml`` (loaded by :func:`~spatialclust.pipeline.load_config`
with ``pipeline="cells"``); the report is built by :func:`spatialclust.report.write_cells_report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._compat import seed_everything
from .._config import ConfigError
from .._logging import logger, progress
from .._rundir import (
    CELL_EXAMPLES_FIGURE, CELL_MAP_FIGURE, CELLS_FILE, CHECKPOINTS_DIR, COMPARISON_FILE, FIGURES_DIR, METRICS_FILE,
    REPORT_FILE, RESULTS_FILE, run_directory,
)
from ..io import read_h5ad
from ._config import load_config

__all__ = ["run_cells"]

FEATURE_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".fcs")


def load_cells(section: Mapping[str, Any], *, seed: int) -> tuple[ad.AnnData, str, bool]:
    """Read or simulate the cells; returns ``(adata, dataset name, has_images)``."""
    from .. import datasets, io

    path = section["path"]
    if path is None:
        params = dict(section["simulate"])
        params.setdefault("seed", seed)
        try:
            adata = datasets.simulate_cells(**params)
        except (TypeError, ValueError) as err:  # only parameters can be wrong: nothing is read
            raise ConfigError(f"`input.simulate` has an invalid parameter: {err}") from err
        return adata, "simulated", True
    path = Path(path)
    labels = section["labels"]
    if path.suffix.lower() in FEATURE_TABLE_SUFFIXES:
        adata = io.read_cell_features(path, id_column=section["id_column"], label_column=section["label_column"])
        if labels is not None:
            table = io.read_cell_labels(labels, id_column=section["id_column"], label_column=section["label_column"])
            matched = io.match_cell_labels(table, list(adata.obs_names), source=repr(str(labels)))
            adata.obs[_keys.LABEL] = pd.Categorical(matched.values)
        has_images = False
    elif path.suffix.lower() == ".h5ad":
        adata = read_h5ad(path)
        has_images = _keys.CELL_IMAGES in adata.obsm
        if not has_images and adata.n_vars == 0:
            raise ValueError(f"Input {str(path)!r} holds neither cell images (obsm[{_keys.CELL_IMAGES!r}], as written by "
                             "`sc.io.read_cell_images`) nor features in X: there is nothing to cluster.")
    else:
        adata = io.read_cell_images(
            path, channels=section["channels"], labels=labels, id_column=section["id_column"],
            label_column=section["label_column"],
        )
        has_images = True
    return adata, path.stem, has_images


def _has_labels(adata: ad.AnnData, label_key: str) -> bool:
    return label_key in adata.obs and adata.obs[label_key].notna().sum() >= 2


def _pca_of(adata: ad.AnnData, key: str, n_comps: int, seed: int) -> str:
    from sklearn.decomposition import PCA

    X = np.asarray(adata.obsm[key], dtype=np.float64)
    n = int(min(n_comps, X.shape[1], X.shape[0] - 1))
    out = f"{key}_pca"
    adata.obsm[out] = PCA(n_components=n, random_state=seed).fit_transform(X).astype(np.float32)
    return out


def build_representations(adata: ad.AnnData, cfg: Mapping[str, Any], run_dir: Path, *, has_images: bool) -> list[dict[str, Any]]:
    """Features PCA, its metric-learned versions, and every embedding (PCA, + metric learning)."""
    from .. import tl

    seed, label_key = cfg["seed"], cfg["label_key"]
    ml = cfg["metric_learning"]
    n_classes = adata.obs[label_key].nunique() if _has_labels(adata, label_key) else 0
    learn = n_classes >= 2
    if not learn and (ml["methods"] or cfg["embedding_pca"]["metric_learning"]):
        logger.warning("Metric learning is skipped: obs[%r] holds %s.", label_key,
                       "no labels" if n_classes == 0 else "labels of a single class (it needs at least 2)")
    reps: list[dict[str, Any]] = []

    def add(source: str, use_rep: str, learner: str | None, seconds: float) -> None:
        reps.append({"name": source if learner is None else f"{source}+{learner}", "source": source,
                     "metric_learning": learner or "none", "use_rep": use_rep, "seconds": seconds})

    def learned(source: str, base: str, methods: Sequence[str], seconds: float) -> None:
        for method in methods if learn else ():
            start = time.perf_counter()
            key = f"{base}_{method}" if base != "X_pca" else f"X_{method}"
            tl.metric_learning(
                adata, method, use_rep=base, label_key=label_key, train_fraction=ml["train_fraction"],
                n_components=ml["n_components"], max_iter=ml["max_iter"], random_state=seed, key_added=key,
            )
            add(source, key, method, seconds + time.perf_counter() - start)

    start = time.perf_counter()
    tl.cell_pca(adata, n_comps=cfg["pca"]["n_comps"], scale=cfg["pca"]["scale"], umap=False, random_state=seed)
    seconds = time.perf_counter() - start
    add("features", "X_pca", None, seconds)
    learned("features", "X_pca", ml["methods"], seconds)
    if cfg["embedding"] and not has_images:
        logger.warning("The input has no images: the image embeddings are skipped.")
    for item in cfg["embedding"] if has_images else ():
        params = dict(item["params"])
        default_checkpoint = None
        if item["method"] == "dino":
            params.setdefault("seed", seed)
            if params.get("checkpoint") is None:
                default_checkpoint = Path(CHECKPOINTS_DIR) / (item["key"] or "dino")
                params["checkpoint"] = str(run_dir / default_checkpoint)
        start = time.perf_counter()
        before = set(adata.obsm)
        try:
            tl.embed_cells(adata, item["method"], key_added=item["key"], **params)
        except TypeError as err:
            raise ConfigError(f"embedding `{item['method']}` has an invalid parameter: {err}") from err
        key = item["key"] or next(k for k in adata.obsm if k not in before)
        if default_checkpoint is not None:  # run_dir is renamed when the run completes: record it relative
            adata.uns[key]["checkpoint"] = adata.uns[key][_keys.PARAMS]["checkpoint"] = str(default_checkpoint)
        reduced = _pca_of(adata, key, cfg["embedding_pca"]["n_comps"], seed)
        seconds = time.perf_counter() - start
        source = key[2:] if key.startswith("X_") else key
        add(source, reduced, None, seconds)
        learned(source, reduced, cfg["embedding_pca"]["metric_learning"], seconds)
    self_labelled, c = ml["self_labelled"], cfg["cluster"]
    if self_labelled["methods"] and self_labelled["label_rep"] not in adata.obsm:
        logger.warning("obsm[%r] was not computed (no `pixels` embedding, or no images): the self-labelled metric is skipped.",
                       self_labelled["label_rep"])
    elif self_labelled["methods"]:
        for method in self_labelled["methods"]:
            start = time.perf_counter()
            key = _keys.embedding_key(f"self_{method}")
            try:
                tl.self_labelled_metric(
                    adata, method, use_rep="X_pca", label_rep=self_labelled["label_rep"],
                    confident_fraction=self_labelled["confident_fraction"], resolution=self_labelled["resolution"],
                    resolutions=c["resolutions"], criterion=c["criterion"], stability_threshold=c["stability_threshold"],
                    n_neighbors=c["n_neighbors"], neighbors_method=c["neighbors_method"], n_components=ml["n_components"],
                    max_iter=ml["max_iter"], random_state=seed, key_added=key,
                )
            except tl.NoPseudoLabelsError as err:
                logger.warning("The self-labelled metric (%s) is skipped: %s", method, err)
                continue
            add("features", key, f"self_{method}", time.perf_counter() - start)
    return reps


def cluster_and_evaluate(adata: ad.AnnData, reps: list[dict[str, Any]], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Leiden on every representation and the comparison table (one row per representation)."""
    from .. import metrics, tl

    c, label_key = cfg["cluster"], cfg["label_key"]
    rows = []
    for rep in progress(reps, desc="leiden", total=len(reps)):
        key = f"{_keys.LEIDEN}_{rep['name']}"
        start = time.perf_counter()
        tl.leiden_cells(
            adata, use_rep=rep["use_rep"], resolution=c["resolution"], resolutions=c["resolutions"], criterion=c["criterion"],
            stability_threshold=c["stability_threshold"], n_neighbors=c["n_neighbors"], neighbors_method=c["neighbors_method"],
            random_state=cfg["seed"], key_added=key,
        )
        rep["cluster_key"] = key
        row = {"representation": rep["source"], "metric_learning": rep["metric_learning"],
               "resolution": adata.uns[key]["resolution"]}
        if _has_labels(adata, label_key):
            scores = tl.evaluate_cells(adata, cluster_key=key, label_key=label_key, k=cfg["evaluate"]["k"])
            train_key = f"{rep['use_rep']}_train"
            held_out = None
            if train_key in adata.obs:
                mask = ~adata.obs[train_key].to_numpy(dtype=bool)
                if (mask & adata.obs[label_key].notna().to_numpy()).sum() >= 2:
                    held_out = tl.evaluate_cells(adata, cluster_key=key, label_key=label_key, subset=mask, k=cfg["evaluate"]["k"])
            row.update({
                "purity": scores["purity"], "purity_held_out": None if held_out is None else held_out["purity"],
                "nmi": scores["nmi"], "ari": scores["ari"], "silhouette": scores["silhouette"],
                "knn_accuracy": scores["knn_accuracy"],
                "knn_accuracy_held_out": None if held_out is None else held_out["knn_accuracy"],
                "n_clusters": scores["n_clusters"],
                **_kmeans_scores(adata, rep["use_rep"], label_key, cfg["seed"]),
            })
        else:
            codes = adata.obs[key].cat.codes.to_numpy()
            row.update({"silhouette": metrics.silhouette(np.asarray(adata.obsm[rep["use_rep"]]), codes) if codes.max() > 0 else None,
                        "n_clusters": int(codes.max()) + 1})
        row["seconds"] = round(rep["seconds"] + time.perf_counter() - start, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _kmeans_scores(adata: ad.AnnData, use_rep: str, label_key: str, seed: int) -> dict[str, float]:
    """Purity and NMI of k-means with k = the number of label classes (every representation at the same k)."""
    from sklearn.cluster import KMeans

    from .. import metrics

    labels = adata.obs[label_key]
    known = labels.notna().to_numpy()
    k = int(labels[known].nunique())
    if k < 2:
        return {"purity_kmeans": None, "nmi_kmeans": None}
    codes = KMeans(k, n_init=10, random_state=seed).fit_predict(np.asarray(adata.obsm[use_rep], dtype=np.float64))
    truth = labels[known].astype(str).to_numpy()
    return {"purity_kmeans": metrics.purity(truth, codes[known]), "nmi_kmeans": metrics.nmi(truth, codes[known])}


def make_cell_figures(
    adata: ad.AnnData, reps: list[dict[str, Any]], cfg: Mapping[str, Any], figures_dir: Path, *, has_images: bool
) -> dict[str, list[tuple[str, Path]]]:
    """Per representation: 2-D map coloured by cluster and label, example cells per cluster."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    from .. import pl

    figures_dir.mkdir(parents=True, exist_ok=True)
    section, label_key = cfg["report"], cfg["label_key"]
    out: dict[str, list[tuple[str, Path]]] = {}
    for rep in progress(reps, desc="figures", total=len(reps)):
        key, name = rep["cluster_key"], rep["name"]
        safe = _keys.check_name(name.replace("+", "_"), what="A representation name (in figure file names)")
        if section["umap"]:
            sc.tl.umap(adata, neighbors_key=f"{key}_neighbors", random_state=cfg["seed"])
            basis = f"X_umap_{safe}"
            adata.obsm[basis] = adata.obsm.pop("X_umap")
        else:
            basis = rep["use_rep"]
        colors = [key] + ([label_key] if label_key in adata.obs else [])
        path = figures_dir / CELL_MAP_FIGURE.format(name=safe)
        pl.cell_scatter(adata, basis, color=colors, title=name, save=path, dpi=section["dpi"])
        out[name] = [("UMAP" if section["umap"] else "first two components", path)]
        if has_images:
            path = figures_dir / CELL_EXAMPLES_FIGURE.format(name=safe)
            pl.cell_examples(adata, key, n_examples=section["n_examples"], channels=section["channels"],
                             label_key=label_key if label_key in adata.obs else None, seed=cfg["seed"],
                             save=path, dpi=section["dpi"])
            out[name].append(("example cells per cluster", path))
        plt.close("all")
    return out


def run_cells(
    config: str | Path | Mapping[str, Any] | None = None,
    output_dir: str | Path = "spatialclust_cells",
    *,
    overwrite: bool = False,
    command: str = "cells run",
) -> Path:
    """Run the cell-image phenotyping pipeline and write a run directory.

    Parameters
    ----------
    config
        YAML file, (partial) mapping, or None for the packaged defaults (``pipeline/cells.yaml``).
    output_dir
        Run directory to create (refused if it holds something, unless ``overwrite``).
    overwrite
        Replace an existing run directory once the new run has completed.
    command
        Name of the command recorded in ``run.json``.

    Returns
    -------
    The run directory, holding ``config.yaml``, ``run.log``, ``run.json``, ``results.h5ad`` (cells
    with features in X, images in obsm, every representation in obsm and clustering in obs),
    ``cells.csv`` (obs), ``comparison.csv`` (one row per representation: purity, NMI, ARI,
    silhouette, k-NN accuracy), ``metrics.json``, ``figures/*.png``, ``checkpoints/`` (DINO) and
    ``report.html``.
    """
    from .. import tl
    from ..report import write_cells_report
    from ._cluster import write_results

    cfg = load_config(config, pipeline="cells")
    output_dir = Path(output_dir)
    inputs = (cfg["input"]["path"], cfg["input"]["labels"])
    with run_directory(output_dir, cfg, command=command, overwrite=overwrite, inputs=inputs) as tmp:
        seed = cfg["seed"]
        seed_everything(seed)
        cells, dataset, has_images = load_cells(cfg["input"], seed=seed)
        features = cfg["features"]
        adata = tl.cell_features(cells, threshold=features["threshold"], feature_set=features["feature_set"],
                                 background=features["background"], channels=features["channels"]) if has_images else cells
        reps = build_representations(adata, cfg, tmp, has_images=has_images)
        comparison = cluster_and_evaluate(adata, reps, cfg)
        figures = make_cell_figures(adata, reps, cfg, tmp / FIGURES_DIR, has_images=has_images)
        comparison.to_csv(tmp / COMPARISON_FILE, index=False)
        adata.obs.to_csv(tmp / CELLS_FILE)
        summary = {"dataset": dataset, "n_cells": int(adata.n_obs), "representations": comparison.to_dict(orient="records")}
        (tmp / METRICS_FILE).write_text(json.dumps(summary, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
        write_cells_report(tmp, cfg, comparison=comparison, figures=figures, dataset=dataset, adata=adata)
        write_results(tmp / RESULTS_FILE, adata)
        logger.info("Report: %s", (output_dir / REPORT_FILE).resolve())
    return output_dir
