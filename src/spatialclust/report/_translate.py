"""The HTML reports of the translation pipeline (``spatialclust translate train`` and ``evaluate``,
written by :func:`spatialclust.pipeline.run_translate_train` and :func:`~spatialclust.pipeline.run_translate_evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._rundir import MAPS_FIGURE, REPORT_FILE
from ._html import Report

__all__ = ["write_translate_evaluate_report", "write_translate_train_report"]


def _maps(report: Report, run_dir: Path, title: str, st: AnnData, measured: np.ndarray, predicted: np.ndarray,
          names: list[str]) -> None:
    """Measured next to predicted metabolite maps: ``maps.png`` and a figure of the report."""
    import matplotlib.pyplot as plt

    from .. import pl

    fig = pl.translation_maps(st, measured, predicted, names=names)
    fig.savefig(run_dir / MAPS_FIGURE, dpi=90, bbox_inches="tight")
    report.add_figure(title, fig)
    plt.close(fig)


def write_translate_train_report(
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    st: AnnData,
    msi: AnnData,
    measured: np.ndarray,
    fitted: np.ndarray,
    fit_scores: pd.DataFrame,
    targets: pd.DataFrame,
    top_genes: pd.DataFrame,
    signatures: pd.DataFrame | None,
    figures: Sequence[Path],
) -> Path:
    """Write ``report.html`` (and ``maps.png``) of a ``translate train`` run; returns its path.

    ``measured``/``fitted``: the metabolite intensities and their in-sample fit, scored in
    ``fit_scores``; ``figures``: further PNG files (gene importance heat maps).
    """
    run_dir = Path(run_dir)
    report = Report("ST -> MSI translation: training", subtitle="Two-stage model (seed 004)")
    report.add_params(config)
    report.add_params(st.uns.get("pairing", {}), title="Pairing")
    report.add_table("Presence targets", targets, index=True)
    report.add_table("Fit on the training spots (not a held-out estimate; see `translate evaluate`)", fit_scores, index=True)
    if signatures is not None:
        report.add_table("Spatial clusters and signature genes (stage-1 mask)", signatures)
    report.add_table("Top genes per metabolite", top_genes)
    _maps(report, run_dir, "Measured vs fitted metabolites", st, measured, fitted, list(msi.var_names))
    for png in figures:
        report.add_figure(Path(png).stem, png)
    return report.write(run_dir / REPORT_FILE)


def write_translate_evaluate_report(
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    st: AnnData,
    msi: AnnData,
    measured: np.ndarray,
    targets: pd.DataFrame,
    folds: pd.DataFrame,
    result: Mapping[str, Any],
    best_row: str,
) -> Path:
    """Write ``report.html`` (and ``maps.png``) of a ``translate evaluate`` run; returns its path.

    ``result``: the output of :func:`spatialclust.translate.cross_validate`; ``best_row``: the model
    row of the configured model, whose per-metabolite scores and held-out maps are shown.
    """
    run_dir = Path(run_dir)
    report = Report("ST -> MSI translation: cross-validation", subtitle=f"{config['cv']['folds']} folds, held-out spots only")
    report.add_params(config)
    report.add_params(st.uns.get("pairing", {}), title="Pairing")
    report.add_table("Presence targets", targets, index=True)
    report.add_table("Folds", folds)
    report.add_table("Stage 1: presence (macro / micro over metabolites)", result["presence_summary"])
    report.add_table("Stage 2: intensity (macro / micro over metabolites)", result["intensity_summary"])
    if best_row in result["intensity"]:
        report.add_table(f"Per metabolite (R², Pearson, Moran's I of the residuals): {best_row}", result["intensity"][best_row], index=True)
        chosen = result["combinations"]
        chosen = chosen[chosen.model == best_row]
        if len(chosen):
            report.add_table("Combination / calibration per metabolite chosen by inner CV (folds choosing each)",
                             pd.crosstab(chosen.metabolite, chosen.combination + " / " + chosen.calibration), index=True)
        tested = result["tested"]
        _maps(report, run_dir, "Measured vs held-out predicted metabolites", st[tested], measured[tested],
              result["oof"][f"intensity_{best_row}"][tested], list(msi.var_names))
    return report.write(run_dir / REPORT_FILE)
