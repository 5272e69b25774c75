"""The HTML report of a clustering run directory (written by :func:`spatialclust.pipeline.run_pipeline`).

The report is built from the files of the run (``metrics.json``, ``comparison.csv``,
``clusters.csv``, ``config.yaml``, ``results.h5ad``, ``figures/``), so it can be rebuilt from a
finished run with :func:`write_run_report` alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import check_name
from .._rundir import (
    CLUSTERING_FIGURE, CLUSTERS_FILE, COMPARISON_FILE, CONFIG_FILE, EMBEDDINGS, EMBEDDINGS_FIGURE, EMBEDDINGS_FILE,
    FIGURES_DIR, LOG_FILE, MANIFEST_FILE, MATRIX_STORE, METRICS_FILE, REPORT_FILE, RESULTS_FILE, run_name,
)
from ._html import GalleryItem, Report, plain

__all__ = ["CLUSTERING_NAMES", "clustering_title", "write_run_report"]

FIGURE_CAPTIONS = {
    "cluster_means": "Mean image of every cluster: each member ion image is winsorised and scaled to [0, 1], "
    "then the members are averaged (Zhang et al. 2024). Panel titles give the cluster and its number of images.",
    "spectrum": "Mean spectrum (raw intensities, on-tissue pixels) with every m/z coloured by its cluster; "
    "grey: noise. Below, a zoom window with the cluster of every peak: isotopes (~1.003 apart) should share one.",
    "embedding": "Every ion image as a point in the embedding (3-D UMAP for UMAP-DBSCAN), coloured by cluster.",
    "rgb_composite": "Three cluster mean images as red, green and blue channels and their composite "
    "(over the histology image when one was given).",
    "members": "The mean image and member ion images of the largest cluster, best-matching first "
    "(r: Pearson correlation with the cluster mean).",
    "knn_purity": "k-nearest-neighbour purity of every embedding for k = 1..30: the fraction of an image's k "
    "nearest neighbours (cosine) that share its ground-truth class (Hu et al. 2022, Fig. 2e).",
    "representations": "t-SNE of every embedding, each ion image coloured by its ground-truth class "
    "(Hu et al. 2022, Fig. 3: representations before and after contrastive training).",
    "ion_pairs": "Cosine similarity of reference ion pairs in every embedding (Hu et al. 2022, Fig. 4): "
    "an ion with its 13C isotope (same spatial pattern: should be high) and with an ion of another class.",
}


_METRIC_COLUMNS = [
    ("n_clusters", "clusters"), ("n_meaningful_clusters", "meaningful"), ("noise_size", "noise"),
    ("rir", "RIR"), ("n_isotope_pairs", "isotope pairs"), ("isotopic_recall", "isotopic recall"),
    ("mean_image_correlation", "mean image corr."), ("partner_recall@10", "thinned-partner recall@10"), ("accuracy", "accuracy"), ("nmi", "NMI"), ("ari", "ARI"),
    ("dbi_euclidean", "DBI (Eucl.)"), ("dbi_pearson", "DBI (Pearson)"), ("silhouette", "silhouette"),
]


#: Display names of clusterers in tables and titles (others are shown by their registered name).
CLUSTERING_NAMES = {"umap_dbscan": "UMAP-DBSCAN", "kmeans": "k-means", "own": "own clusters"}


def clustering_title(item: Mapping[str, Any]) -> str:
    """A clustering in words for titles, e.g. "k-means on regular ion images".

    ``item``: a mapping with the clusterer ``method`` and the ``embedding`` (method name) it ran on.
    """
    embedding = str(item["embedding"]).removeprefix("X_")
    return f"{CLUSTERING_NAMES.get(item['method'], item['method'])} on {embedding} ion images"


def write_run_report(
    run_dir: str | Path,
    *,
    adata: AnnData | None = None,
    config: Mapping[str, Any] | None = None,
    figures: Mapping[str, list[tuple[str, Path]]] | None = None,
    correlations: Mapping[str, np.ndarray] | None = None,
    means: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Write ``report.html`` of a clustering run directory and return its path.

    Parameters
    ----------
    run_dir
        Run directory with ``metrics.json`` and ``comparison.csv`` (and, unless given as
        arguments, ``results.h5ad``, ``config.yaml``, ``clusters.csv`` and ``figures/``).
    adata, config, figures, correlations, means
        Objects the pipeline already holds (read from the run directory when None):
        the results AnnData, the resolved configuration, ``{key: [(figure name, png path)]}``,
        ``{key: member correlations}`` and ``{key: (cluster ids, mean images)}``.

    Returns
    -------
    pathlib.Path
        ``run_dir / "report.html"``: a self-contained page with the parameters, the comparison
        table, every clustering's metrics and figures, and per-cluster member lists with thumbnails.
    """
    from .. import pl, pp
    from .._config import read_yaml

    run_dir = Path(run_dir)
    for name in (METRICS_FILE, COMPARISON_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{str(run_dir / name)!r} does not exist; is {str(run_dir)!r} a run directory?")
    summary = json.loads((run_dir / METRICS_FILE).read_text())
    comparison = pd.read_csv(run_dir / COMPARISON_FILE)
    if adata is None:
        from ..io import read_h5ad

        adata = read_h5ad(run_dir / RESULTS_FILE)
        if adata.X is None and (run_dir / MATRIX_STORE).is_dir():  # a chunked run: X stayed in its Zarr array
            import dask.array as da

            adata.X = da.from_zarr(str(run_dir / MATRIX_STORE))
    config = config if config is not None else read_yaml(run_dir / CONFIG_FILE)
    if correlations is None:
        table = pd.read_csv(run_dir / CLUSTERS_FILE, index_col=0)
        correlations = {key: table[f"{key}_corr"].to_numpy() for key in summary["clusterings"]}
    if figures is None:
        figures = {
            key: [(name, path) for name in config["report"]["figures"]
                  if (path := run_dir / FIGURES_DIR / check_name(CLUSTERING_FIGURE.format(key=key, name=name),
                                                                what="A figure name")).is_file()]
            for key in summary["clusterings"]
        }
        figures[EMBEDDINGS] = [(name, path) for name in config["report"].get("embedding_figures", [])
                               if (path := run_dir / FIGURES_DIR / EMBEDDINGS_FIGURE.format(name=name)).is_file()]
    section = config["report"]

    height, width = summary["grid"]
    report = Report(
        f"spatialclust: {summary['dataset']}",
        subtitle=f"{summary['n_images']} ion images of {height} x {width} pixels; run directory {run_name(run_dir)}",
    )
    report.add_text(None, _overview(summary, comparison))
    shown = comparison.drop(columns=["key"], errors="ignore")
    report.add_table(
        "Comparison of pipelines", shown,
        caption="One row per embedding x clusterer, as Table 1 of Zhang et al. (2024). RIR: Relative Isotope "
        "Ratio (higher is better; 1 = random). Noise images: images labelled noise (-1). Mean image corr.: "
        "mean Pearson correlation of member images with their cluster mean. Accuracy/NMI/ARI against the "
        "ground truth, when known. Seconds: embedding + clustering time.",
    )
    embedding_figures = figures.get(EMBEDDINGS, [])
    if embedding_figures or (run_dir / EMBEDDINGS_FILE).is_file():
        report.add_text("Embeddings", "How well each embedding separates the ground-truth classes, before clustering.")
        if (run_dir / EMBEDDINGS_FILE).is_file():
            report.add_table(
                None, pd.read_csv(run_dir / EMBEDDINGS_FILE),
                caption="Linear evaluation: 5-fold cross-validated accuracy of a logistic regression on the "
                "embedding (Hu et al. 2022). k-NN purity: fraction of nearest neighbours (cosine) of the same class.",
            )
        for name, path in embedding_figures:
            report.add_figure(None, path, caption=FIGURE_CAPTIONS[name])
    for key, info in summary["clusterings"].items():
        metrics = info["metrics"]
        row = {label: metrics[name] for name, label in _METRIC_COLUMNS if name in metrics}
        caption = " ".join(filter(None, [f"Labels in var column `{key}` of results.h5ad.", _undefined_note(metrics)]))
        report.add_table(clustering_title(info), row, caption=caption)
        for name, path in figures.get(key, []):
            report.add_figure(None, path, caption=FIGURE_CAPTIONS.get(name, name))
        if section["thumbnails"]:
            cluster_means = means[key] if means is not None else pl.cluster_means(adata, key, winsorize=section["winsorize"])
            _member_galleries(report, adata, key, cluster_means, correlations[key], section)
    steps = pp.preprocessing_steps(adata)
    if steps:
        report.add_table("Preprocessing", pd.DataFrame(
            [{"step": s["step"], "parameters": json.dumps(plain(s.get("params", {})))} for s in steps]
        ))
    report.add_params(config, title="Parameters (config.yaml)")
    report.add_text("Files", _FILES, pre=True)
    return report.write(run_dir / REPORT_FILE)


_FILES = "\n".join(f"{name:<16} {what}" for name, what in (
    (CONFIG_FILE, f"resolved configuration (re-run: spatialclust run {CONFIG_FILE})"),
    (LOG_FILE, f"debug log;  {MANIFEST_FILE}: command, version, duration"),
    (RESULTS_FILE, "preprocessed data, embeddings (varm), clusterings (var, uns)"),
    (CLUSTERS_FILE, "feature (m/z) -> cluster in every clustering, with correlation to the cluster mean"),
    (METRICS_FILE, "every metric of every clustering, per-cluster sizes and correlations"),
    (COMPARISON_FILE, "the comparison table above"),
    (f"{FIGURES_DIR}/*.png", "the figures of this report"),
))


#: Evidence for choosing a clustering, best first: (metric, label); truth beats label-free evidence.
_EVIDENCE = (
    ("nmi", "NMI against the known classes"),
    ("partner_recall@10", "thinned-partner recall@10 (an abundance-thinned copy of an ion image is among "
     "its 10 nearest neighbours)"),
    ("isotopic_recall", "isotopic recall (13C isotopes clustered with their monoisotopic ion)"),
)


def _overview(summary: Mapping[str, Any], comparison: pd.DataFrame) -> str:
    """The report's headline: what was found, and which clustering to trust and why."""
    clusterings = summary["clusterings"]
    text = (f"{len(clusterings)} clusterings of {summary['n_images']} ion images "
            f"({summary['n_pixels']} pixels) of dataset '{summary['dataset']}'.")
    def score(key: str, metric: str) -> float:
        value = clusterings[key]["metrics"].get(metric)
        return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else -np.inf

    for rank, (metric, label) in enumerate(_EVIDENCE):
        scores = {key: score(key, metric) for key in clusterings if np.isfinite(score(key, metric))}
        if len(set(scores.values())) < 2:  # absent, or the same for every clustering: no evidence
            continue
        # ties (e.g. partner recall, one value per embedding) go to the next kind of evidence
        key = max(scores, key=lambda k: (scores[k], *(score(k, m) for m, _ in _EVIDENCE[rank + 1:])))
        info = clusterings[key]
        found = info["metrics"].get("n_meaningful_clusters", info["metrics"].get("n_clusters"))
        row = comparison.loc[comparison["key"] == key].iloc[0] if "key" in comparison else None
        name = f"{row['clustering']} on {row['images']} ion images" if row is not None else key
        text += (f" Most trustworthy: {name}, with {found} spatial patterns; it has the highest {label}: "
                 f"{scores[key]:.2f} (next best {sorted(set(scores.values()))[-2]:.2f}).")
        break
    text += _representation(clusterings)
    rir = pd.to_numeric(comparison.get("RIR"), errors="coerce") if "RIR" in comparison else None
    if rir is not None and rir.notna().any():
        best = comparison.loc[rir.idxmax()]
        text += (f" Highest RIR: {best['RIR']:.3g} ({best['clustering']} on {best['images']} ion images); RIR is not "
                 "used to choose, since it grows with the number of clusters.")
    return text


def _representation(clusterings: Mapping[str, Any]) -> str:
    """Which embedding to trust, by the label-free evidence that does not depend on a clusterer:
    the thinned-partner recall@10 of each embedding ("" when fewer than two embeddings differ)."""
    recall: dict[str, float] = {}
    for info in clusterings.values():
        value = info["metrics"].get("partner_recall@10")
        if isinstance(value, (int, float)) and np.isfinite(value):
            recall[str(info["embedding"])] = float(value)
    if len(set(recall.values())) < 2:
        return ""
    ranked = sorted(recall, key=recall.get, reverse=True)
    best = ranked[0].removeprefix("X_")
    return (f" Representation to trust: {best} ion images, which keep an ion image closest to its abundance-thinned "
            f"copy (partner recall@10 {recall[ranked[0]]:.2f} against {recall[ranked[1]]:.2f} for "
            f"{ranked[1].removeprefix('X_')}): weak ions and isotope partners differ from their parents in the same "
            "way, by counting noise and contrast, not by where the molecule is.")


def _undefined_note(metrics: Mapping[str, Any]) -> str | None:
    undefined = metrics.get("undefined") or {}
    if not undefined:
        return None
    return "Undefined here: " + "; ".join(f"{k}: {v}" for k, v in undefined.items())


def _member_galleries(
    report: Report,
    adata: AnnData,
    key: str,
    cluster_means: tuple[np.ndarray, np.ndarray],
    correlation: np.ndarray,
    section: Mapping[str, Any],
) -> None:
    """One collapsed gallery per cluster: its mean image, then members by decreasing correlation."""
    from .. import pl, pp

    labels = adata.var[key].to_numpy()
    names = pl.feature_labels(adata)
    mask = pp.tissue_mask_image(adata)
    ids, mean_images = cluster_means
    clusters = sorted(set(labels.tolist()))
    shown = {}
    for cluster in clusters:
        members = np.flatnonzero(labels == cluster)
        order = np.argsort(-np.nan_to_num(correlation[members], nan=-2.0), kind="stable")
        shown[cluster] = members[order][: section["max_thumbnails"]]
    # the thumbnails of this clustering, a chunk of images at a time, each reduced to thumbnail size
    every = np.concatenate(list(shown.values()))
    images = {}
    for chunk in pl.index_chunks(every, n_pixels=mask.size):
        standardized = pl.standardized_images(adata, chunk, winsorize=section["winsorize"])
        images.update((int(index), thumbnail(image, mask)) for index, image in zip(chunk, standardized))
    for cluster in clusters:
        members = np.flatnonzero(labels == cluster)
        corr = correlation[members]
        items = []
        if cluster >= 0:
            mean = mean_images[int(np.flatnonzero(ids == cluster)[0])]
            items.append(GalleryItem(thumbnail(mean, mask), label="mean", title=f"mean of cluster {cluster}"))
        for index in shown[cluster]:
            r = correlation[index]
            label = names[index] + ("" if not np.isfinite(r) else f" r={r:.2f}")
            items.append(GalleryItem(images[int(index)], label=label,
                                     title=str(adata.var_names[index])))
        finite = corr[np.isfinite(corr)]
        what = "noise" if cluster < 0 else f"cluster {cluster}"
        mean_r = f", mean r = {finite.mean():.2f}" if finite.size else ""
        more = f"; {len(shown[cluster])} shown" if len(shown[cluster]) < len(members) else ""
        report.add_gallery(f"{key} {what}: {len(members)} images{mean_r}{more}", items, collapsed=True)



#: Longest side of a report thumbnail in pixels (twice the width it is shown at, for sharp screens).
THUMBNAIL_MAX_PX = 128


def thumbnail(image: np.ndarray, mask: np.ndarray, *, max_px: int = THUMBNAIL_MAX_PX) -> np.ndarray:
    """``image`` inside the tissue ``mask`` (NaN outside), reduced to at most ``max_px`` pixels per side
    by averaging square blocks of on-tissue pixels (a block without tissue is NaN); images that small
    already are returned at full size. Keeps the report of a whole slide small (its thumbnails are
    what it holds in memory and embeds), whatever the number of pixels."""
    factor = -(-max(image.shape) // max_px)
    if factor <= 1:
        return np.where(mask, image, np.nan)
    height, width = (-(-n // factor) * factor for n in image.shape)
    sums = np.zeros((height, width))
    counts = np.zeros((height, width))
    sums[: image.shape[0], : image.shape[1]] = np.where(mask, image, 0.0)
    counts[: image.shape[0], : image.shape[1]] = mask
    shape = (height // factor, factor, width // factor, factor)
    sums, counts = sums.reshape(shape).sum(axis=(1, 3)), counts.reshape(shape).sum(axis=(1, 3))
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
