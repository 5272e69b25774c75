"""Probability calibration of stage 1 (Platt scaling on out-of-fold decision scores).

A hurdle prediction ``p * intensity`` is only as good as ``p``: class-weighted logistic regression
(``class_weight="balanced"``) shifts its probabilities towards 0.5, a linear SVM has margins, not
probabilities, and a network trained with ``pos_weight`` over-predicts the rare class. Platt
scaling (Platt 1999, "Probabilistic outputs for support vector machines"; scikit-learn's
``CalibratedClassifierCV(method="sigmoid")``) fits ``p = sigmoid(a * score + b)`` per metabolite on
decision scores of spots the classifier did not see (inner cross-validation), so the map corrects
the over-confidence of the fitted model as well.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_platt", "platt_probability", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=float)
    return np.exp(-np.logaddexp(0.0, -x))


def fit_platt(scores, labels, *, C: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-metabolite Platt map ``(slope, intercept)`` from out-of-fold ``scores`` and 0/1 ``labels``.

    A metabolite whose labels are all equal gets slope 0 and the (clipped) logit of its prevalence.
    """
    from sklearn.linear_model import LogisticRegression

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(int)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"`scores` and `labels` must be (n_spots, n_metabolites) of one shape, got {scores.shape} and {labels.shape}.")
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
