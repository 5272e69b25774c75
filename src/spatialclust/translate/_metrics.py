"""Metrics of the seed: precision, recall, F1, ROC AUC (presence) and MSE, R², Pearson (intensity).

Per metabolite plus micro and macro averages. A metric that is undefined for a metabolite (ROC AUC
when the held-out spots are all present or all absent; Pearson when a prediction or target is
constant) is reported as NaN in the per-metabolite table and left out of the macro average, with the
number of metabolites averaged in ``n_defined``: never silently 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._spatial import morans_i

__all__ = ["intensity_scores", "presence_scores"]


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    return [str(x) for x in names] if names is not None else [f"m{j}" for j in range(n)]


def presence_scores(y_true, y_pred, y_score=None, *, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 (and ROC AUC from ``y_score``) per metabolite, then ``micro`` and ``macro`` rows.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_metabolites)`` 0/1.
    y_score
        Decision scores or probabilities (higher = present) for ROC AUC.
    names
        Metabolite names (row index).

    Returns
    -------
    DataFrame indexed by metabolite + ``micro``/``macro`` with ``precision``, ``recall``, ``f1``,
    ``roc_auc``, ``prevalence`` (fraction present in ``y_true``) and ``n_defined`` (averages only).
    """
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same shape, got {y_true.shape} and {y_pred.shape}.")
    names = _names(y_true.shape[1], names)
    # column by column: scikit-learn reads a single (n, 1) column as one binary target with two classes
    p, r, f = (np.array(v) for v in zip(*(
        precision_recall_fscore_support(y_true[:, j], y_pred[:, j], average="binary", zero_division=0)[:3]
        for j in range(y_true.shape[1]))))
    auc = np.full(y_true.shape[1], np.nan)
    if y_score is not None:
        y_score = np.asarray(y_score, dtype=float)
        for j in range(y_true.shape[1]):
            if 0 < y_true[:, j].sum() < len(y_true):
                auc[j] = roc_auc_score(y_true[:, j], y_score[:, j])
    table = pd.DataFrame({"precision": p, "recall": r, "f1": f, "roc_auc": auc, "prevalence": y_true.mean(0)}, index=names)
    pm, rm, fm, _ = precision_recall_fscore_support(y_true.ravel(), y_pred.ravel(), average="binary", zero_division=0)
    micro_auc = np.nan
    if y_score is not None and 0 < y_true.sum() < y_true.size:
        micro_auc = roc_auc_score(y_true.ravel(), y_score.ravel())
    table.loc["micro"] = [pm, rm, fm, micro_auc, y_true.mean()]
    table.loc["macro"] = [p.mean(), r.mean(), f.mean(), np.nanmean(auc) if np.isfinite(auc).any() else np.nan, y_true.mean()]
    table["n_defined"] = np.nan
    table.loc["micro", "n_defined"] = y_true.shape[1]
    table.loc["macro", "n_defined"] = int(np.isfinite(auc).sum()) if y_score is not None else y_true.shape[1]
    return table


def intensity_scores(y_true, y_pred, *, names: Sequence[str] | None = None, coords=None, groups=None,
                     n_neighbors: int = 6) -> pd.DataFrame:
    """MSE, R² and Pearson r per metabolite, then ``micro`` (all values pooled) and ``macro`` rows.

    With ``coords`` (and ``groups``, the sections) also ``morans_i``: Moran's I of the residual map
    ``y_true - y_pred`` of every metabolite on the ``n_neighbors`` spot graph
    (:func:`~spatialclust.translate.morans_i`; ~0 = spatially random errors, > 0 = a missed spatial
    signal). Pooled metrics hide per-metabolite failure, so read the per-metabolite rows.

    Returns
    -------
    DataFrame indexed by metabolite + ``micro``/``macro`` with ``mse``, ``r2``, ``pearson``
    [, ``morans_i`` (macro: mean; micro: NaN)] and ``n_defined`` (averages only: metabolites with a
    defined Pearson r).
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same shape, got {y_true.shape} and {y_pred.shape}.")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("`y_true` and `y_pred` must be finite (no NaN).")
    names = _names(y_true.shape[1], names)
    mse = ((y_true - y_pred) ** 2).mean(0)
    var = y_true.var(0)
    r2 = np.where(var > 0, 1 - mse / np.where(var > 0, var, 1), np.nan)
    pearson = np.array([_pearson(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])])
    table = pd.DataFrame({"mse": mse, "r2": r2, "pearson": pearson}, index=names)
    pooled_var = y_true.var()
    table.loc["micro"] = [
        mse.mean(),
        1 - mse.mean() / pooled_var if pooled_var > 0 else np.nan,
        _pearson(y_true.ravel(), y_pred.ravel()),
    ]
    table.loc["macro"] = [mse.mean(), np.nanmean(r2) if np.isfinite(r2).any() else np.nan,
                          np.nanmean(pearson) if np.isfinite(pearson).any() else np.nan]
    if coords is not None:
        moran = morans_i(y_true - y_pred, coords, groups=groups, n_neighbors=n_neighbors)
        table["morans_i"] = np.append(moran, [np.nan, np.nanmean(moran) if np.isfinite(moran).any() else np.nan])
    table["n_defined"] = np.nan
    table.loc[["micro", "macro"], "n_defined"] = int(np.isfinite(pearson).sum())
    return table


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])
