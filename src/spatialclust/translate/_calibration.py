"""Probability calibration of stage 1: Platt scaling or isotonic regression on out-of-fold decision
scores, or none (the sigmoid of the raw score), chosen per metabolite.

A hurdle prediction ``p * intensity`` is only as good as ``p``: class-weighted logistic regression
(``class_weight="balanced"``) shifts its probabilities towards 0.5, a linear SVM has margins, not
probabilities, and a network trained with ``pos_weight`` over-predicts the rare class. Platt
scaling (Platt 1999, "Probabilistic outputs for support vector machines"; scikit-learn's
``CalibratedClassifierCV(method="sigmoid")``) fits ``p = sigmoid(a * score + b)`` per metabolite on
decision scores of spots the classifier did not see (inner cross-validation), so the map corrects
the over-confidence of the fitted model as well. Isotonic regression (Zadrozny & Elkan 2002,
"Transforming classifier scores into accurate multiclass probability estimates"; scikit-learn's
``method="isotonic"``) fits any monotone map instead; it is stored as its knots and applied by linear
interpolation, clipped at the ends (what ``IsotonicRegression(out_of_bounds="clip")`` predicts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._registry import invalid_option

__all__ = ["CALIBRATIONS", "calibrated_probability", "fit_calibration", "fit_isotonic", "fit_platt", "platt_probability", "sigmoid"]

#: Calibration maps of stage-1 decision scores (``none``: the sigmoid of the raw score).
CALIBRATIONS = ("platt", "isotonic", "none")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=float)
    return np.exp(-np.logaddexp(0.0, -x))


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(int)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"`scores` and `labels` must be (n_spots, n_metabolites) of one shape, got {scores.shape} and {labels.shape}.")
    return scores, labels


def fit_platt(scores, labels, *, C: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-metabolite Platt map ``(slope, intercept)`` from out-of-fold ``scores`` and 0/1 ``labels``.

    A metabolite whose labels are all equal gets slope 0 and the (clipped) logit of its prevalence.
    """
    from sklearn.linear_model import LogisticRegression

    scores, labels = _check(scores, labels)
    m = scores.shape[1]
    slope, intercept = np.zeros(m), np.zeros(m)
    for j in range(m):
        y = labels[:, j]
        if y.min() == y.max() or np.ptp(scores[:, j]) < 1e-12:
            p = np.clip(y.mean(), 1e-4, 1 - 1e-4)
            intercept[j] = np.log(p / (1 - p))
            continue
        model = LogisticRegression(C=C, max_iter=1000).fit(scores[:, [j]], y)
        slope[j], intercept[j] = model.coef_[0, 0], model.intercept_[0]
    return slope, intercept


def platt_probability(scores, slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(slope * scores + intercept)`` (column-wise)."""
    return sigmoid(np.asarray(scores, dtype=float) * slope[None, :] + intercept[None, :])


def fit_isotonic(scores, labels) -> list[list[list[float]]]:
    """Per-metabolite isotonic map from out-of-fold ``scores`` and 0/1 ``labels``, as knots
    ``[[x_1, ...], [p_1, ...]]`` (plain lists, so that a saved model stores them as JSON)."""
    from sklearn.isotonic import IsotonicRegression

    scores, labels = _check(scores, labels)
    knots = []
    for j in range(scores.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores[:, j], labels[:, j])
        knots.append([iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()])
    return knots


def fit_calibration(scores, labels, methods: Sequence[str]) -> dict[str, object]:
    """Fit the calibration of every metabolite with its method in ``methods`` (one per column).

    Returns ``{"methods", "slope", "intercept", "knots"}`` for :func:`calibrated_probability`
    (slope 1 / intercept 0 and no knots where a method does not need them).
    """
    scores, labels = _check(scores, labels)
    methods = [str(c) for c in methods]
    if len(methods) != scores.shape[1]:
        raise ValueError(f"`methods` must give one calibration per metabolite ({scores.shape[1]}), got {len(methods)}.")
    for c in methods:
        if c not in CALIBRATIONS:
            raise invalid_option(c, "calibration", CALIBRATIONS)
    slope, intercept = np.ones(len(methods)), np.zeros(len(methods))
    knots: list = [None] * len(methods)
    platt = [j for j, c in enumerate(methods) if c == "platt"]
    if platt:
        slope[platt], intercept[platt] = fit_platt(scores[:, platt], labels[:, platt])
    isotonic = [j for j, c in enumerate(methods) if c == "isotonic"]
    for j, k in zip(isotonic, fit_isotonic(scores[:, isotonic], labels[:, isotonic]) if isotonic else []):
        knots[j] = k
    return {"methods": methods, "slope": slope, "intercept": intercept, "knots": knots}


def calibrated_probability(scores, methods: Sequence[str], *, slope: np.ndarray, intercept: np.ndarray,
                           knots: Sequence | None) -> np.ndarray:
    """Presence probabilities of decision ``scores`` under per-metabolite calibrations (see :func:`fit_calibration`)."""
    scores = np.asarray(scores, dtype=float)
    # ``none`` and ``platt``: sigmoid(slope * score + intercept), slope 1 / intercept 0 for ``none``
    out = platt_probability(scores, np.asarray(slope, dtype=float), np.asarray(intercept, dtype=float))
    for j, c in enumerate(methods):
        if c == "isotonic":
            x, p = knots[j]
            out[:, j] = np.interp(scores[:, j], x, p)
    return out
