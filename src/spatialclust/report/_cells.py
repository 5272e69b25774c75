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
    report.add_table(
        "Clustering of every representation", comparison,
        caption="Leiden clusters (resolution chosen without labels) scored against the labels: purity (Palli 2023, "
        "sec. 3.6), NMI, ARI, silhouette and leave-one-out k-NN accuracy; *_held_out: only cells not used to learn "
        "the metric; *_kmeans: k-means with k = the number of classes, the same k for every representation.",
    )
    for name, items in figures.items():
        for what, path in items:
            report.add_figure(f"{name}: {what}", path)
    report.add_params(config, title="Configuration")
    return report.write(Path(run_dir) / REPORT_FILE)
