"""The HTML leaderboard of a benchmark run (written by :func:`spatialclust.pipeline.run_benchmark`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .._rundir import LEADERBOARD_HTML
from ._html import Report

__all__ = ["leaderboard_figure", "write_leaderboard_report"]


def leaderboard_figure(part: pd.DataFrame, *, baseline: str) -> Any:
    """Horizontal bars of one group's ranking score (accuracy, else isotopic recall), or None; the
    ``baseline`` embedder's bars are grey."""
    import matplotlib.pyplot as plt

    metric = next((c for c in ("accuracy", "isotopic_recall") if c in part and part[c].notna().any()), None)
    if metric is None:
        return None
    rows = part[part[metric].notna()].iloc[::-1]  # best at the top
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    colors = ["0.6" if e == baseline else "tab:blue" for e in rows["embedder"]]
    sd = rows[f"{metric}_sd"].fillna(0.0) if f"{metric}_sd" in rows else None
    ax.barh([f"{e} + {c}" for e, c in zip(rows["embedder"], rows["clusterer"])], rows[metric], xerr=sd, color=colors)
    ax.set_xlabel(metric.replace("_", " "))
    ax.set_xlim(0, 1)
    fig.tight_layout()
    plt.close(fig)
    return fig


def write_leaderboard_report(
    run_dir: str | Path, config: Mapping[str, Any], *, board: pd.DataFrame, summary: pd.DataFrame, baseline: str
) -> Path:
    """Write ``leaderboard.html``: how to read it, one ranked table and chart per group of datasets
    (``summary``), every run (``board``) and the configuration; returns its path. ``baseline``:
    the raw-image embedder, drawn grey."""
    report = Report("spatialclust benchmark", subtitle=f"{len(config['datasets'])} dataset(s), "
                    f"{len(config['embedders'])} embedder(s) x {len(config['clusterers'])} clusterer(s)")
    report.add_text("How to read it", (
        "ACC is the Hungarian one-to-one clustering accuracy, NMI and ARI compare with the true classes "
        "(simulated data only). Isotopic recall is the share of 13C isotope partners found in one cluster "
        "(m/z shift 1.00336 and image correlation >= 0.85), RIR the Relative Isotope Ratio of seed 000 "
        "(higher is better, but it rewards many clusters). Partner recall@k (per embedding, label-free): "
        "each ion image gets a partner thinned to 10-50% of its raw counts; the share of images whose "
        "partner is among their k nearest neighbours in the representation. 'own' is the clustering an embedder finds itself "
        "(SimCLR's self-labeling, DARLC's mixture). Seconds are embedding + clustering; peak memory is the "
        "resident memory above the start of the stage."
    ))
    for group, part in summary.groupby("group", sort=False):
        shown = part.drop(columns="group")
        report.add_table(f"Leaderboard: {group}", shown, float_format="{:.3f}",
                         caption="Mean (and sd) over the datasets of the group; best first.")
        figure = leaderboard_figure(part, baseline=baseline)
        if figure is not None:
            report.add_figure(None, figure, caption="The same ranking as a chart: mean over the datasets of the "
                              f"group with its sd; grey bars are the raw-image baseline (`{baseline}`).")
    report.add_table("Every run", board, float_format="{:.3f}")
    report.add_params(dict(config), title="Configuration")
    return report.write(Path(run_dir) / LEADERBOARD_HTML)
