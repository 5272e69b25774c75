"""Linear stage-1 (presence) and stage-2 (intensity) models and their baselines.

All are scikit-learn estimators (``fit``/``predict``, cloneable, ``get_params``). Their fitted state
is a handful of arrays (input scaling, ``coef_``, ``intercept_``), so a fitted model is saved as
safetensors + JSON, never pickled (see :mod:`spatialclust.translate._persist`).

Stage 1 (seed, "metabolite selection"): one binary classifier per metabolite (one-vs-rest over the
metabolites), logistic regression or a linear SVM, with ``class_weight="balanced"`` against class
imbalance. A metabolite that is always (or never) present in the training spots has nothing to learn:
it is predicted constant and logged (a classifier cannot be fitted on one class).

Stage 2 (seed, "baseline models"): per-metabolite mean, ordinary least squares and ridge regression.
With ``presence`` given, each metabolite's model is fitted on the spots where it is present, since
the two-stage model multiplies the intensity by the predicted presence.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._logging import logger
from .._registry import invalid_option

__all__ = ["LinearIntensityRegressor", "LinearPresenceClassifier", "PrevalencePresence"]

#: Logit used for the decision score of a metabolite predicted constant (always/never present).
CONSTANT_LOGIT = 20.0


def check_xy(X, Y=None, *, binary: bool = False):
    """Validate and convert ``X`` (and ``Y``) to float arrays with messages naming the argument."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"`X` must be 2-D (n_spots, n_features), got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("`X` contains NaN or infinite values.")
    if Y is None:
        return X
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"`X` and `Y` must have the same number of spots, got {X.shape[0]} and {Y.shape[0]}.")
    if not np.isfinite(Y).all():
        raise ValueError("`Y` contains NaN or infinite values.")
    if binary and not np.isin(Y, (0, 1)).all():
        raise ValueError("`Y` must be binary presence labels (0/1).")
    return X, Y


def constant_columns(Y: np.ndarray) -> dict[int, int]:
    """``{column: value}`` of the metabolites whose label is the same in every spot."""
    out = {}
    for j in range(Y.shape[1]):
        values = np.unique(Y[:, j])
        if len(values) == 1:
            out[j] = int(values[0])
    return out


def _log_constants(constants: dict[int, int], names=None) -> None:
    for j, v in constants.items():
        name = names[j] if names is not None else j
        logger.warning(
            "metabolite %s is %s in every training spot: predicted constant (%s), no classifier fitted.",
            name, "present" if v else "absent", "present" if v else "absent",
        )


class _Standardized:
    """Input standardisation fitted on the training spots, shared by every stage-1 and stage-2 model."""

    def _fit_scaler(self, X: np.ndarray) -> np.ndarray:
        self.n_features_in_ = X.shape[1]
        self.x_mean_ = X.mean(axis=0)
        self.x_scale_ = X.std(axis=0)
        self.x_scale_[self.x_scale_ < 1e-12] = 1.0
        return (X - self.x_mean_) / self.x_scale_

    def _scale(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "x_mean_")
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` must have {self.n_features_in_} features, got {X.shape[1]}.")
        return (X - self.x_mean_) / self.x_scale_


class _LinearScores(_Standardized):
    """Shared scaling + linear decision of the linear models."""

    def _linear(self, X: np.ndarray) -> np.ndarray:
        return self._scale(X) @ self.coef_.T + self.intercept_


class LinearPresenceClassifier(_LinearScores, ClassifierMixin, BaseEstimator):
    """Stage 1: one linear binary classifier per metabolite (one-vs-rest over metabolites).

    Parameters
    ----------
    kind
        ``"logistic"`` (L2 logistic regression) or ``"svm"`` (linear support vector machine, hinge loss).
    C
        Inverse regularisation strength.
    class_weight
        ``"balanced"`` (default, against the imbalance of present/absent spots) or None.
    max_iter
        Iterations of the solver.
    random_state
        Seed of the solver.

    Attributes
    ----------
    coef_, intercept_
        ``(n_metabolites, n_features)`` and ``(n_metabolites,)`` on the standardised inputs.
    constant_
        ``{metabolite index: 0/1}`` for metabolites always/never present in training.
    """

    def __init__(self, kind: str = "logistic", C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000, random_state: int = 0) -> None:
        self.kind = kind
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, Y, **fit_params) -> LinearPresenceClassifier:
        """Fit one classifier per metabolite; ``fit_params`` (``coords``, ...) are accepted and unused."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        if self.kind not in ("logistic", "svm"):
            raise invalid_option(self.kind, "kind", ("logistic", "svm"))
        if not self.C > 0:
            raise ValueError(f"`C` must be > 0, got {self.C!r}.")
        if self.class_weight not in ("balanced", None):
            raise invalid_option(self.class_weight, "class_weight", ("balanced", "None"))
        X, Y = check_xy(X, Y, binary=True)
        Xs = self._fit_scaler(X)
        self.constant_ = constant_columns(Y)
        _log_constants(self.constant_)
        self.coef_ = np.zeros((Y.shape[1], X.shape[1]))
        self.intercept_ = np.zeros(Y.shape[1])
        for j in range(Y.shape[1]):
            if j in self.constant_:
                self.intercept_[j] = CONSTANT_LOGIT if self.constant_[j] else -CONSTANT_LOGIT
                continue
            if self.kind == "logistic":
                model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.random_state)
            else:
                model = LinearSVC(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.random_state)
            model.fit(Xs, Y[:, j].astype(int))
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        return self

    def decision_function(self, X) -> np.ndarray:
        """``(n_spots, n_metabolites)`` scores (logit for logistic, margin for SVM); > 0 = present."""
        return self._linear(X)

    def predict_proba(self, X) -> np.ndarray:
        """Probability of presence (logistic only; the SVM has margins, not probabilities)."""
        if self.kind != "logistic":
            raise AttributeError("predict_proba is only available for kind='logistic'; use decision_function.")
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        """``(n_spots, n_metabolites)`` int presence."""
        return (self.decision_function(X) > 0).astype(np.int8)


class PrevalencePresence(ClassifierMixin, BaseEstimator):
    """Stage-1 baseline: every spot gets the training prevalence of each metabolite as its score.

    Predicts a metabolite present everywhere when it is present in at least half of the training
    spots (the majority class). Its ROC AUC within one fold is 0.5 by construction (pooled over folds
    with different training prevalences it can differ from 0.5).
    """

    def fit(self, X, Y, **fit_params) -> PrevalencePresence:
        X, Y = check_xy(X, Y, binary=True)
        self.n_features_in_ = X.shape[1]
        self.prevalence_ = Y.mean(axis=0)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "prevalence_")
        p = np.clip(self.prevalence_, 1e-9, 1 - 1e-9)
        return np.tile(np.log(p / (1 - p)), (len(np.asarray(X)), 1))

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "prevalence_")
        return np.tile(self.prevalence_, (len(np.asarray(X)), 1))

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X) >= 0.5).astype(np.int8)


class LinearIntensityRegressor(_LinearScores, RegressorMixin, BaseEstimator):
    """Stage 2 linear baselines: per-metabolite ``"mean"``, ``"linear"`` (OLS) or ``"ridge"``.

    Parameters
    ----------
    kind
        ``"mean"`` (the mean predictor), ``"linear"`` or ``"ridge"``.
    alpha
        Ridge penalty (on standardised inputs).

    Attributes
    ----------
    coef_, intercept_
        ``(n_metabolites, n_features)`` (zeros for ``"mean"``) and ``(n_metabolites,)``.
    """

    def __init__(self, kind: str = "ridge", alpha: float = 1.0) -> None:
        self.kind = kind
        self.alpha = alpha

    def fit(self, X, Y, *, presence=None, **fit_params) -> LinearIntensityRegressor:
        """Fit every metabolite, on its present spots when ``presence`` is given (>= 3 of them)."""
        from sklearn.linear_model import LinearRegression, Ridge

        if self.kind not in ("mean", "linear", "ridge"):
            raise invalid_option(self.kind, "kind", ("mean", "linear", "ridge"))
        if self.alpha < 0:
            raise ValueError(f"`alpha` must be >= 0, got {self.alpha!r}.")
        X, Y = check_xy(X, Y)
        Xs = self._fit_scaler(X)
        rows = _presence_rows(presence, Y.shape)
        self.coef_ = np.zeros((Y.shape[1], X.shape[1]))
        self.intercept_ = np.zeros(Y.shape[1])
        for j in range(Y.shape[1]):
            r = rows[:, j]
            if self.kind == "mean":
                self.intercept_[j] = Y[r, j].mean()
                continue
            model = Ridge(alpha=self.alpha) if self.kind == "ridge" else LinearRegression()
            model.fit(Xs[r], Y[r, j])
            self.coef_[j] = model.coef_
            self.intercept_[j] = model.intercept_
        return self

    def predict(self, X) -> np.ndarray:
        """``(n_spots, n_metabolites)`` intensities."""
        return self._linear(X)


def _presence_rows(presence, shape) -> np.ndarray:
    """Boolean ``(n, m)``: rows used per metabolite (present ones when >= 3, else all)."""
    if presence is None:
        return np.ones(shape, dtype=bool)
    presence = np.asarray(presence).astype(bool)
    if presence.shape != shape:
        raise ValueError(f"`presence` must have the shape of `Y` {shape}, got {presence.shape}.")
    rows = presence.copy()
    few = rows.sum(axis=0) < 3
    rows[:, few] = True
    return rows
