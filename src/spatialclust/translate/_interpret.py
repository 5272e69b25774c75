"""Which genes drive each predicted metabolite: attention of the metabolite queries, or ridge coefficients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._registry import invalid_option

__all__ = ["gene_importance", "top_genes"]


def _regressor(model):
    """The stage-2 model of a translator (fitted on present spots, else the unmasked one), or ``model``."""
    if hasattr(model, "presence_model_"):
        return model.intensity_model_ if model.intensity_model_ is not None else model.unmasked_model_
    return model


def gene_importance(model, X=None, *, source: str = "attention", genes: Sequence[str] | None = None,
                    metabolites: Sequence[str] | None = None, coords=None, groups=None) -> pd.DataFrame:
    """Metabolite x gene importance matrix.

    Parameters
    ----------
    model
        Fitted :class:`TwoStageTranslator` or stage-2 regressor.
    X
        ``(n_spots, n_genes)`` log-expression over which attention is averaged (``"attention"`` only).
    source
        ``"attention"``: mean attention weight of each metabolite query on each gene token (transformer);
        ``"coefficients"``: coefficients of a linear/ridge model on standardised genes (signed).
    genes, metabolites
        Names (default: those stored in a translator, else indices).
    coords, groups
        Coordinates and sections of ``X`` (a translator with spatial context needs them).

    Returns
    -------
    DataFrame ``(n_metabolites, n_features)``: genes, then for a translator with spatial context the
    neighbourhood means (``"<gene> (neighbourhood)"``) and coordinates.
    """
    reg = _regressor(model)
    if source == "attention":
        if not hasattr(reg, "attention"):
            raise ValueError(f"source='attention' needs a transformer intensity model, got {type(reg).__name__}.")
        if X is None:
            raise ValueError("source='attention' needs `X`, the spots over which attention is averaged.")
        if hasattr(model, "presence_model_"):
            X = model._inputs(model._check(X), coords=coords, groups=groups)[0]
        values = reg.attention(X).mean(axis=0)
    elif source == "coefficients":
        if not hasattr(reg, "coef_"):
            raise ValueError(f"source='coefficients' needs a linear intensity model, got {type(reg).__name__}.")
        values = np.asarray(reg.coef_)
    else:
        raise invalid_option(source, "source", ("attention", "coefficients"))
    if genes is None:
        genes = getattr(model, "feature_names_", None) or getattr(model, "genes_", None) or [str(i) for i in range(values.shape[1])]
    metabolites = metabolites if metabolites is not None else getattr(model, "metabolites_", None) or [str(i) for i in range(values.shape[0])]
    return pd.DataFrame(values, index=list(metabolites), columns=list(genes))


def top_genes(importance: pd.DataFrame, *, n: int = 5, absolute: bool = False) -> pd.DataFrame:
    """The ``n`` most important genes of every metabolite (rows of :func:`gene_importance`).

    Returns
    -------
    Long DataFrame with ``metabolite``, ``rank`` (1 = top), ``gene``, ``importance``.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n!r}.")
    rows = []
    for metabolite, values in importance.iterrows():
        key = values.abs() if absolute else values
        for rank, gene in enumerate(key.sort_values(ascending=False).index[:n], start=1):
            rows.append({"metabolite": metabolite, "rank": rank, "gene": gene, "importance": float(values[gene])})
    return pd.DataFrame(rows)
