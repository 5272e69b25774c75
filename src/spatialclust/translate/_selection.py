"""Model selection: hyperparameter grid search on inner spatial folds, and cross-validation of all
stage-1 / stage-2 models (and baselines) on spatially blocked or leave-one-section-out folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid

from .._logging import logger, progress
from ._calibration import CALIBRATIONS, calibrated_probability, fit_calibration
from ._cv import inner_folds, spatial_folds
from ._metrics import intensity_scores, presence_scores
from ._models import create_intensity_model, create_presence_model
from ._signatures import SignatureMask
from ._spatial import spatial_features
from ._two_stage import absent_levels, choose_combinations, combine_stages, inner_errors, intensity_out_of_fold, presence_out_of_fold

__all__ = ["cross_validate", "grid_search", "row_name"]


def _score(estimator, X, Y, presence, stage: str) -> float:
    """Higher is better: macro F1 (presence) or minus the MSE on present spots (intensity)."""
    if stage == "presence":
        from sklearn.metrics import f1_score

        return float(f1_score(Y, estimator.predict(X), average="macro", zero_division=0))
    rows = np.asarray(presence, dtype=bool) if presence is not None else np.ones(Y.shape, dtype=bool)
    err = (estimator.predict(X) - Y) ** 2 / Y.var(0).clip(1e-12)
    return -float(err[rows].mean())


def _fit(estimator, X, Y, presence, coords, groups, stage: str):
    kwargs: dict[str, Any] = {"coords": coords, "groups": groups}
    if stage == "intensity":
        kwargs["presence"] = presence
    return estimator.fit(X, Y, **kwargs)


def grid_search(
    estimator,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    param_grid: Mapping[str, Sequence[Any]],
    stage: str,
    presence: np.ndarray | None = None,
    coords: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_splits: int = 3,
    random_state: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Best parameters of ``estimator`` over ``param_grid`` on inner spatially blocked folds.

    Parameters
    ----------
    estimator
        Unfitted stage-1 or stage-2 estimator (cloned for every fit).
    X, Y
        Inputs and targets (presence labels for ``stage="presence"``, intensities otherwise).
    param_grid
        ``{parameter: [values]}`` as in scikit-learn.
    stage
        ``"presence"`` (score: macro F1) or ``"intensity"`` (score: minus the variance-normalised MSE
        on present spots).
    presence
        Presence targets (intensity stage: fit and score on present spots).
    coords, groups
        Coordinates and sections for the folds (spatial blocks; whole sections when there are >= 3).
    n_splits
        Number of inner folds.

    Returns
    -------
    ``(best_params, results)``; ``results`` has one row per combination with its mean score.
    """
    if stage not in ("presence", "intensity"):
        raise ValueError(f"Invalid option `{stage}` for `stage`. Valid options are: `presence`, `intensity`.")
    if coords is None:
        raise ValueError("`coords` are needed for spatially blocked inner folds.")
    folds = inner_folds(coords, len(X), groups=groups, n_splits=n_splits, random_state=random_state)
    rows = []
    for params in ParameterGrid(dict(param_grid)):
        scores = []
        for train, test in folds:
            model = _fit(clone(estimator).set_params(**params), X[train], Y[train],
                         None if presence is None else presence[train], coords[train],
                         None if groups is None else groups[train], stage)
            scores.append(_score(model, X[test], Y[test], None if presence is None else presence[test], stage))
        rows.append({**params, "score": float(np.mean(scores))})
    results = pd.DataFrame(rows)
    best = dict(ParameterGrid(dict(param_grid))[int(results["score"].to_numpy().argmax())])
    logger.info("grid search %s: best %s (score %.4g)", type(estimator).__name__, best, results["score"].max())
    return best, results


#: Calibrations of the rows of :func:`cross_validate` (``auto``: chosen per metabolite).
_ROW_CALIBRATIONS = ("auto", *CALIBRATIONS)


def row_name(presence_model: str | None, intensity_model: str, combine: str = "auto", calibration: str = "auto") -> str:
    """Row of :func:`cross_validate`'s intensity tables for a two-stage configuration.

    ``P x M`` is the package default (``combine="auto"``, ``calibration="auto"``); other
    calibrations of ``auto`` read ``P x M [auto, platt]``; the fixed hurdle reads ``P x M [hurdle]``
    with Platt calibration and ``P x M [hurdle, <calibration>]`` otherwise.
    """
    if combine == "none":
        return f"{intensity_model} (unmasked)"
    label = "uncalibrated" if calibration == "none" else calibration
    if combine == "mask":
        suffix = " [mask]"
    elif combine == "auto":
        suffix = "" if calibration == "auto" else f" [auto, {label}]"
    else:
        suffix = " [hurdle]" if calibration == "platt" else f" [hurdle, {label}]"
    return f"{presence_model} x {intensity_model}{suffix}"


def cross_validate(
    X: np.ndarray,
    Y: np.ndarray,
    presence: np.ndarray,
    *,
    coords: np.ndarray,
    groups: np.ndarray | None = None,
    folds: str = "blocks",
    n_splits: int = 5,
    block_size: float | None = None,
    buffer: float = 0.0,
    presence_models: Sequence[str] = ("prevalence", "logistic", "svm", "mlp"),
    intensity_models: Sequence[str] = ("mean", "linear", "ridge", "mlp", "transformer"),
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
    search: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    inner_splits: int = 3,
    choice_tolerance: float = 1.0,
    spatial_context: int = 0,
    spatial_coordinates: bool = False,
    signature_mask: bool = True,
    clusters: Sequence | None = None,
    signatures: Mapping[str, Sequence[int]] | None = None,
    n_signature_genes: int = 3,
    resolution: float = 1.0,
    names: Sequence[str] | None = None,
    random_state: int = 0,
) -> dict[str, Any]:
    """Cross-validate every stage-1 x stage-2 combination and the baselines on the same spatial folds.

    Out-of-fold predictions of every held-out spot are pooled over the folds and scored once
    (per metabolite, micro and macro; Moran's I of the residuals per metabolite). Within every outer
    fold each model is fitted once on the training spots, plus ``inner_splits`` times on inner folds of
    the training spots (out-of-fold scores for the calibration and for the per-metabolite choices of
    :class:`~spatialclust.translate.TwoStageTranslator` with ``combine="auto"``); every pair is then
    combined from these shared fits, exactly as the translator combines its own. Nothing of the
    held-out spots enters a choice.

    Intensity rows (see :func:`row_name`): ``mean (baseline)`` and ``ridge (baseline)`` (unmasked, on
    the expression alone); ``M (unmasked)`` (stage 2 on all spots, with spatial context when on);
    for every stage-1 model ``P`` and stage-2 model ``M``: ``P x M`` (per-metabolite choice of the
    combination and the calibration), ``P x M [auto, <calibration>]`` (choice of the combination with
    one calibration), ``P x M [hurdle]`` (Platt), ``P x M [hurdle, <calibration>]`` (``auto``,
    ``isotonic``, ``uncalibrated``), ``P x M [mask]`` (the seed's hard mask); and
    ``true presence x M [mask]``, the upper bound for stage 1.

    Parameters
    ----------
    X, Y, presence
        Log-expression ``(n, k)``, intensities ``(n, m)`` and 0/1 presence targets ``(n, m)``.
    coords, groups
        Spot coordinates and sections.
    folds, n_splits, block_size, buffer
        See :func:`~spatialclust.translate.spatial_folds` (``"blocks"`` or ``"sections"``).
    presence_models, intensity_models
        Registered model names to evaluate (every pair is evaluated).
    model_params
        ``{"presence.<name>" | "intensity.<name>": {param: value}}``.
    search
        ``{"presence.<name>" | "intensity.<name>": param_grid}``: tuned by :func:`grid_search` on the
        training spots of every fold (nested cross-validation).
    inner_splits
        Inner folds per outer fold (calibration and per-metabolite choice).
    choice_tolerance
        See :class:`~spatialclust.translate.TwoStageTranslator`.
    spatial_context, spatial_coordinates
        Spatial-context input of both stages (see :class:`~spatialclust.translate.TwoStageTranslator`).
    signature_mask, clusters, signatures, n_signature_genes, resolution
        Stage-1 signature-mask input (see :class:`~spatialclust.translate.SignatureMask`); the mask is
        fitted on the training spots of each fold.
    names
        Metabolite names.
    random_state
        Seed.

    Returns
    -------
    dict with ``presence`` (model -> per-metabolite table), ``intensity`` (row name -> per-metabolite
    table with ``mse``, ``r2``, ``pearson``, ``morans_i``), ``presence_summary`` and
    ``intensity_summary`` (macro/micro rows of every model; the presence summary also has
    ``roc_auc_macro_per_fold``, the macro ROC AUC within each fold averaged over folds),
    ``combinations`` (long table: pair, fold, metabolite, chosen combination and calibration), ``folds`` (list of
    (train, test)), ``oof`` (out-of-fold predictions: ``presence_<model>``, ``intensity_<row>``),
    ``tested`` and ``best_params`` (per fold, when ``search``).
    """
    model_params = {k: dict(v) for k, v in (model_params or {}).items()}
    search = dict(search or {})
    fold_list = spatial_folds(coords, method=folds, groups=groups, n_splits=n_splits, block_size=block_size,
                              buffer=buffer, random_state=random_state)
    n, m = Y.shape
    F = spatial_features(X, coords, groups=groups, n_neighbors=int(spatial_context), coordinates=spatial_coordinates) if spatial_context else X
    oof_score = {p: np.zeros((n, m)) for p in presence_models}
    oof_presence = {p: np.zeros((n, m), dtype=np.int8) for p in presence_models}
    pairs = [(p, i) for p in presence_models for i in intensity_models]
    intensity_rows = ["mean (baseline)", "ridge (baseline)"] + [row_name(None, i, "none") for i in intensity_models]
    for p, i in pairs:
        intensity_rows += [row_name(p, i, combine, c) for combine in ("auto", "hurdle") for c in _ROW_CALIBRATIONS]
        intensity_rows.append(row_name(p, i, "mask"))
    intensity_rows += [f"true presence x {i} [mask]" for i in intensity_models]
    oof_intensity = {r: np.zeros((n, m)) for r in intensity_rows}
    tested = np.zeros(n, dtype=bool)
    best_params: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    per_fold_auc: dict[str, list[float]] = {}
    clusters = None if clusters is None else np.asarray(clusters)
    metabolite_names = [str(x) for x in names] if names is not None else [f"m{j}" for j in range(m)]

    def build(stage: str, name: str, Xtr, Ttr, Ptr, ctr, gtr, fold_best):
        factory = create_presence_model if stage == "presence" else create_intensity_model
        params = dict(model_params.get(f"{stage}.{name}", {}))
        probe = factory(name)
        if "random_state" in probe.get_params():
            params.setdefault("random_state", random_state)
        model = factory(name, **params)
        grid = search.get(f"{stage}.{name}")
        if grid:
            best, _ = grid_search(model, Xtr, Ttr, param_grid=grid, stage=stage, presence=Ptr, coords=ctr,
                                  groups=gtr, random_state=random_state)
            fold_best[f"{stage}.{name}"] = best
            model.set_params(**best)
        return model

    for k, (train, test) in enumerate(progress(fold_list, desc="cross-validation folds", total=len(fold_list))):
        gtr = None if groups is None else groups[train]
        ctr = coords[train]
        fold_best: dict[str, Any] = {}
        inner = inner_folds(ctr, len(train), groups=gtr, n_splits=inner_splits, random_state=random_state)
        S = F
        if signature_mask:
            masker = SignatureMask(n_genes=n_signature_genes, resolution=resolution, random_state=random_state)
            masker.fit(X[train], clusters=None if clusters is None else clusters[train], signatures=signatures)
            S = np.zeros((n, F.shape[1] + X.shape[1]))
            S[train] = np.hstack([F[train], masker.transform(X[train], clusters=None if clusters is None else clusters[train])])
            S[test] = np.hstack([F[test], masker.transform(X[test], clusters=None if clusters is None else clusters[test])])
        Ytr, Ptr = Y[train], presence[train]
        absent = absent_levels(Ytr, Ptr)
        stage1: dict[str, dict[str, np.ndarray]] = {}
        for name in presence_models:
            model = build("presence", name, S[train], Ptr, None, ctr, gtr, fold_best)
            fitted = _fit(model, S[train], Ptr, None, ctr, gtr, "presence")
            scores, labels = fitted.decision_function(S[test]), fitted.predict(S[test])
            inner_scores, inner_labels = presence_out_of_fold(lambda: clone(model), S[train], Ptr, inner, coords=ctr, groups=gtr)
            stage1[name] = {"labels": labels, "scores": scores, "inner_scores": inner_scores, "inner_labels": inner_labels}
            oof_score[name][test], oof_presence[name][test] = scores, labels
            fold_table = presence_scores(presence[test], labels, scores)
            per_fold_auc.setdefault(name, []).append(fold_table.loc["macro", "roc_auc"])
        for row, kind in (("mean (baseline)", "mean"), ("ridge (baseline)", "ridge")):
            model = create_intensity_model(kind, **model_params.get(f"intensity.{kind}", {}))
            oof_intensity[row][test] = model.fit(X[train], Ytr).predict(X[test])
        for name in intensity_models:
            model = build("intensity", name, F[train], Ytr, Ptr, ctr, gtr, fold_best)
            present = _fit(clone(model), F[train], Ytr, Ptr, ctr, gtr, "intensity").predict(F[test])
            unmasked = _fit(clone(model), F[train], Ytr, None, ctr, gtr, "intensity").predict(F[test])
            inner_present, inner_unmasked = intensity_out_of_fold(lambda: clone(model), F[train], Ytr, Ptr, inner,
                                                                  coords=ctr, groups=gtr)
            oof_intensity[row_name(None, name, "none")][test] = unmasked
            oof_intensity[f"true presence x {name} [mask]"][test] = present * presence[test]
            for p in presence_models:
                s1 = stage1[p]
                errors = inner_errors(Ytr, Ptr, scores=s1["inner_scores"], labels=s1["inner_labels"], present=inner_present,
                                      unmasked=inner_unmasked, folds=inner)
                for cal in _ROW_CALIBRATIONS:
                    calibrations = CALIBRATIONS if cal == "auto" else (cal,)
                    choice, methods = choose_combinations(errors, calibrations=calibrations, tolerance=choice_tolerance)
                    fit = fit_calibration(s1["inner_scores"], Ptr, methods)
                    probability = calibrated_probability(s1["scores"], fit["methods"], slope=fit["slope"], intercept=fit["intercept"],
                                                         knots=fit["knots"])
                    for combine, combination in (("auto", choice), ("hurdle", ["hurdle"] * m)):
                        oof_intensity[row_name(p, name, combine, cal)][test] = combine_stages(
                            combination, probability=probability, label=s1["labels"], present=present, unmasked=unmasked,
                            absent_level=absent)
                    if cal == "auto":
                        choices += [{"model": row_name(p, name), "fold": k, "metabolite": metabolite_names[j], "combination": c,
                                     "calibration": methods[j]} for j, c in enumerate(choice)]
                oof_intensity[row_name(p, name, "mask")][test] = s1["labels"] * present
        tested[test] = True
        best_params.append(fold_best)
    idx = np.flatnonzero(tested)
    spatial = {"coords": coords[idx], "groups": None if groups is None else groups[idx]}
    presence_tables = {
        p: presence_scores(presence[idx], oof_presence[p][idx], oof_score[p][idx], names=names) for p in presence_models
    }
    intensity_tables = {r: intensity_scores(Y[idx], oof_intensity[r][idx], names=names, **spatial) for r in intensity_rows}
    presence_summary = _summary(presence_tables, ["precision", "recall", "f1", "roc_auc"])
    # ROC AUC within each fold, averaged: pooled scores mix different fold models (a constant score per
    # fold, e.g. the prevalence baseline, is 0.5 within a fold but not pooled)
    presence_summary["roc_auc_macro_per_fold"] = [
        float(np.nanmean(per_fold_auc[p])) if np.isfinite(per_fold_auc[p]).any() else np.nan for p in presence_models
    ]
    return {
        "presence": presence_tables,
        "intensity": intensity_tables,
        "presence_summary": presence_summary,
        "intensity_summary": _summary(intensity_tables, ["mse", "r2", "pearson", "morans_i"]),
        "combinations": pd.DataFrame(choices, columns=["model", "fold", "metabolite", "combination", "calibration"]),
        "folds": fold_list,
        "oof": {**{f"presence_{k}": v for k, v in oof_presence.items()}, **{f"intensity_{k}": v for k, v in oof_intensity.items()}},
        "tested": tested,
        "best_params": best_params if search else [],
    }


def _summary(tables: Mapping[str, pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    rows = []
    for name, table in tables.items():
        row = {"model": name}
        for avg in ("macro", "micro"):
            for c in columns:
                row[f"{c}_{avg}"] = table.loc[avg, c]
        rows.append(row)
    return pd.DataFrame(rows)
