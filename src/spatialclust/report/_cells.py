"""The HTML report of a cell-image phenotyping run (written by :func:`spatialclust.pipeline.run_cells`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from anndata import AnnData

from .._rundir import REPORT_FILE
from ._html import Report

__all__ = ["write_cells_report"]


def write_cells_report(
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    comparison: pd.DataFrame,
    figures: Mapping[str, list[tuple[str, Path]]],
    dataset: str,
    adata: AnnData,
) -> Path:
    """Write ``report.html`` of a cells run: parameters, comparison table (Tables 1 and 3 of Palli
    2023) and the figures ``{representation: [(what, png path)]}``; returns its path."""
    report = Report("Cell-image phenotyping", subtitle=f"dataset: {dataset} ({adata.n_obs} cells, {adata.n_vars} features)")
    report.add_text("Summary", _overview(comparison, config, adata.n_obs))
    report.add_table(
        "Clustering of every representation", comparison,
        caption=f"Leiden clusters ({_resolution(config)}, no labels used) scored against the labels: purity (Palli "
        "2023, sec. 3.6), NMI, ARI, silhouette and leave-one-out k-NN accuracy; *_held_out: only cells not used to "
        "learn the metric; *_kmeans: k-means with k = the number of classes, the same k for every representation.",
    )
    for name, items in figures.items():
        for what, path in items:
            report.add_figure(f"{name}: {what}", path)
    report.add_params(config, title="Configuration")
    return report.write(Path(run_dir) / REPORT_FILE)


def _resolution(config: Mapping[str, Any]) -> str:
    cluster = config["cluster"]
    if cluster["resolution"] == "scan":
        return f"at the resolution chosen by the {cluster['criterion']} scan"
    return f"at resolution {float(cluster['resolution']):g}"


def _name(row: pd.Series) -> str:
    return row["representation"] if row["metric_learning"] == "none" else f"{row['representation']}+{row['metric_learning']}"


def _overview(comparison: pd.DataFrame, config: Mapping[str, Any], n_cells: int) -> str:
    """The report's headline: which representation to trust, ranked by NMI (purity grows with the
    number of clusters), separately for the label-free rows and the rows that learned from labels."""
    text = f"{len(comparison)} representations of {n_cells} cells, clustered by Leiden {_resolution(config)}."
    nmi = pd.to_numeric(comparison["nmi"], errors="coerce") if "nmi" in comparison else None
    if nmi is None or nmi.isna().all():
        return text + (" No labels, so the scores cannot rank the representations. On real labelled cells (Jurkat cell "
                       "cycle, docs/benchmarks.md) the label-free features+self_lfda row, a metric learned on the "
                       "features from the raw pixels' own clusters, was the best row without labels.")
    scored = comparison.assign(nmi=nmi)
    label_free = scored["metric_learning"].eq("none") | scored["metric_learning"].str.startswith("self_")

    def describe(row: pd.Series) -> str:
        return (f"{_name(row)} (NMI {row['nmi']:.2f}, ARI {row['ari']:.2f}, purity {row['purity']:.2f} in "
                f"{int(row['n_clusters'])} clusters)")

    if label_free.any() and scored.loc[label_free, "nmi"].notna().any():
        best = scored.loc[scored.loc[label_free, "nmi"].idxmax()]
        text += f" Best without labels: {describe(best)}"
        pixels = scored[(scored["representation"] == "pixels") & (scored["metric_learning"] == "none")]
        if len(pixels) and _name(best) != "pixels":
            text += f", against the raw-pixel baseline {describe(pixels.iloc[0])}"
        text += "."
    learned = scored[~label_free & scored["nmi"].notna()]
    if len(learned):
        best = learned.loc[learned["nmi"].idxmax()]
        held = best.get("purity_held_out")
        text += (f" Best with labels (a metric learned on part of them): {describe(best)}"
                 + (f"; purity {float(held):.2f} on the cells it did not learn from." if pd.notna(held) else "."))
    return text + " Rows are ranked by NMI, since purity grows with the number of clusters."
