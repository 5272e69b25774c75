"""The two-stage ST -> MSI translator of the seed: presence first, then intensities, combined per
metabolite as a hurdle expectation, the seed's hard mask or not at all (chosen by inner CV)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._logging import logger
from .._registry import invalid_option
from ._calibration import CALIBRATIONS, calibrated_probability, fit_calibration
from ._cv import inner_folds
from ._estimators import check_xy
from ._models import create_intensity_model, create_presence_model
from ._signatures import SignatureMask
from ._spatial import spatial_features
from ._targets import presence_targets

__all__ = [
    "COMBINATIONS",
    "TwoStageTranslator",
    "absent_levels",
    "choose_combinations",
    "combine_stages",
    "inner_errors",
    "intensity_out_of_fold",
    "presence_out_of_fold",
]

#: How stage 1 and stage 2 are combined for one metabolite. ``none``: stage 2 fitted on all spots,
#: stage 1 ignored; ``hurdle``: ``p * mu_present + (1 - p) * mu_absent`` (the expectation under the
#: calibrated presence probability ``p``); ``mask``: the seed's ``1[present] * mu_present``.
COMBINATIONS = ("none", "hurdle", "mask")
_COMBINE = ("auto", *COMBINATIONS)
_CALIBRATION = ("auto", *CALIBRATIONS)


def combine_stages(choice: Sequence[str], *, probability: np.ndarray, label: np.ndarray, present: np.ndarray | None,
                   unmasked: np.ndarray | None, absent_level: np.ndarray) -> np.ndarray:
    """Combine the stage outputs per metabolite (``choice[j]`` in :data:`COMBINATIONS`).

    Parameters
    ----------
    choice
        One combination per metabolite.
    probability
        ``(n, m)`` presence probability (stage 1, calibrated or not).
    label
        ``(n, m)`` 0/1 predicted presence (stage 1 labels, for ``mask``).
    present
        ``(n, m)`` stage-2 intensity fitted on present spots (``hurdle``, ``mask``).
    unmasked
        ``(n, m)`` stage-2 intensity fitted on all spots (``none``).
    absent_level
        ``(m,)`` mean intensity of absent spots (``hurdle``).
    """
    choice = np.asarray(choice, dtype=str)
    unknown = sorted(set(choice) - set(COMBINATIONS))
    if unknown:
        raise invalid_option(unknown[0], "combination", COMBINATIONS)
    shape = probability.shape
    out = np.zeros(shape)
    for name, source in (("none", unmasked), ("hurdle", present), ("mask", present)):
        cols = np.flatnonzero(choice == name)
        if not len(cols):
            continue
        if source is None:
            raise ValueError(f"combination {name!r} needs the {'unmasked' if name == 'none' else 'present-spot'} stage-2 prediction.")
        if name == "none":
            out[:, cols] = unmasked[:, cols]
        elif name == "hurdle":
            p = probability[:, cols]
            out[:, cols] = p * present[:, cols] + (1 - p) * absent_level[cols][None, :]
        else:
            out[:, cols] = label[:, cols] * present[:, cols]
    return out


def inner_errors(Y: np.ndarray, presence: np.ndarray, *, scores: np.ndarray, labels: np.ndarray, present: np.ndarray,
                 unmasked: np.ndarray, folds, calibrations: Sequence[str] = CALIBRATIONS) -> dict[str, np.ndarray]:
    """Per-fold MSE ``(n_folds, n_metabolites)`` of every candidate combination on inner folds.

    ``scores``, ``labels``, ``present`` and ``unmasked`` are the inner out-of-fold predictions of
    stage 1 (decision scores, 0/1) and stage 2 (fitted on present spots / on all spots) over
    ``folds``. The hurdle of a held-out inner fold uses a calibration map and absent level fitted on
    the other inner folds only (cross-fitting): a map fitted on the same scores it is scored on would
    see the held-out fold's prevalence. Candidates: ``none``, ``hurdle/<calibration>`` for every
    calibration in ``calibrations`` (:data:`CALIBRATIONS`) and ``mask``.
    """
    m = Y.shape[1]
    names = ["none", *[f"hurdle/{c}" for c in calibrations], "mask"]
    errors = {c: np.zeros((len(folds), m)) for c in names}
    for k, (tr, te) in enumerate(folds):
        target = Y[te]
        errors["none"][k] = ((unmasked[te] - target) ** 2).mean(0)
        errors["mask"][k] = ((labels[te] * present[te] - target) ** 2).mean(0)
        absent = absent_levels(Y[tr], presence[tr])
        for c in calibrations:
            fit = fit_calibration(scores[tr], presence[tr], [c] * m)
            probability = calibrated_probability(scores[te], fit["methods"], slope=fit["slope"], intercept=fit["intercept"],
                                                 knots=fit["knots"])
            hurdle = combine_stages(["hurdle"] * m, probability=probability, label=labels[te], present=present[te],
                                    unmasked=None, absent_level=absent)
            errors[f"hurdle/{c}"][k] = ((hurdle - target) ** 2).mean(0)
    return errors


def choose_combinations(errors: Mapping[str, np.ndarray], *, calibrations: Sequence[str] = CALIBRATIONS,
                        tolerance: float = 1.0) -> tuple[list[str], list[str]]:
    """Per metabolite, the combination and the calibration from the inner per-fold errors of :func:`inner_errors`.

    The unmasked stage 2 (``none``) is the default: a ``hurdle`` (with one of ``calibrations``) or
    ``mask`` replaces it only where its mean gain over the inner folds (MSE of ``none`` minus its MSE)
    is positive and exceeds ``tolerance`` standard errors of that gain over the folds; among the
    candidates that pass, the largest mean gain wins. Ties and near-ties therefore go to the unmasked
    model (a one-standard-error rule). The calibration of each metabolite is the one of its best hurdle
    (kept for its presence probabilities even where the hurdle is not chosen).

    Returns
    -------
    ``(combination, calibration)``, one entry per metabolite each.
    """
    calibrations = list(calibrations)
    unknown = sorted(set(calibrations) - set(CALIBRATIONS))
    if unknown or not calibrations:
        raise invalid_option(unknown[0] if unknown else "", "calibration", CALIBRATIONS)
    names = [f"hurdle/{c}" for c in calibrations] + ["mask"]
    gain = np.stack([errors["none"] - errors[c] for c in names])  # (candidates, folds, metabolites)
    mean = gain.mean(1)
    se = gain.std(1, ddof=1) / np.sqrt(gain.shape[1])
    passes = (mean > 0) & (mean > tolerance * se)
    calibration = [calibrations[int(i)] for i in mean[: len(calibrations)].argmax(0)]
    combination = []
    for j in range(mean.shape[1]):
        if not passes[:, j].any():
            combination.append("none")
            continue
        best = int(np.where(passes[:, j], mean[:, j], -np.inf).argmax())
        combination.append("mask" if best == len(calibrations) else "hurdle")
    return combination, calibration


def absent_levels(Y: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """Mean intensity of the absent spots of every metabolite (0 where none is absent)."""
    absent = ~np.asarray(presence, dtype=bool)
    total = np.where(absent, Y, 0.0).sum(0)
    count = absent.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _sub(a, idx):
    return None if a is None else a[idx]


def presence_out_of_fold(build: Callable[[], Any], X: np.ndarray, presence: np.ndarray, folds, *, coords=None,
                         groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold stage-1 decision scores and labels over ``folds`` (a fresh ``build()`` per fold)."""
    scores, labels = np.zeros(presence.shape), np.zeros(presence.shape, dtype=np.int8)
    for tr, te in folds:
        model = build().fit(X[tr], presence[tr], coords=_sub(coords, tr), groups=_sub(groups, tr))
        scores[te], labels[te] = model.decision_function(X[te]), model.predict(X[te])
    return scores, labels


def intensity_out_of_fold(build: Callable[[], Any], X: np.ndarray, Y: np.ndarray, presence: np.ndarray, folds, *,
                          coords=None, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold stage-2 predictions fitted on present spots and on all spots (unmasked)."""
    present, unmasked = np.zeros(Y.shape), np.zeros(Y.shape)
    for tr, te in folds:
        kw = {"coords": _sub(coords, tr), "groups": _sub(groups, tr)}
        present[te] = build().fit(X[tr], Y[tr], presence=presence[tr], **kw).predict(X[te])
        unmasked[te] = build().fit(X[tr], Y[tr], **kw).predict(X[te])
    return present, unmasked


class TwoStageTranslator(RegressorMixin, BaseEstimator):
    """Predict metabolite intensities (MSI) of a spot from its gene expression (ST), in two stages.

    Stage 1 predicts the presence of the ``n`` metabolites from the spot's expression ``(g_1..g_k)``
    concatenated with its signature mask (1 for the signature genes of its spatial cluster); stage 2
    predicts the intensities from the expression (seed 004, "Development of a Deep Learning
    methodology for synthetic Spatial Metabolomics data generation", Galvis, Lohk & Nikolski).

    The seed multiplies stage 2 by the binary presence. A wrong "absent" call then costs the whole
    intensity (on the lung data that made every two-stage model 16x worse than the mean predictor),
    so here the stages are combined per metabolite (:data:`COMBINATIONS`): the **hurdle** expectation
    ``p * mu_present + (1 - p) * mu_absent`` with ``p`` the Platt-calibrated presence probability
    (the hurdle / two-part model of zero-inflated data, Cragg 1971, Econometrica), the seed's hard
    **mask**, or **none** (stage 2 fitted on all spots). With ``combine="auto"`` the combination of
    each metabolite is chosen by inner cross-validation on the training spots only
    (:func:`inner_errors`, :func:`choose_combinations`): the unmasked stage 2 is always a candidate and
    the default, and a hurdle or mask replaces it only where it beats it by more than
    ``choice_tolerance`` standard errors over the inner folds, with the calibration map of every inner
    fold fitted on the other inner folds. So the model is not worse than its own unmasked stage 2 in
    expectation; where masking cannot help it *is* the unmasked stage 2.

    Parameters
    ----------
    presence_model
        Stage-1 model name (``logistic``, ``svm``, ``mlp``, ``prevalence``) or an estimator.
    intensity_model
        Stage-2 model name (``mean``, ``linear``, ``ridge``, ``mlp``, ``transformer``) or an estimator.
    presence_params, intensity_params
        Keyword arguments of the named models.
    combine
        ``"auto"`` (per metabolite by inner CV), ``"hurdle"``, ``"mask"`` (the seed) or ``"none"``.
    calibration
        ``"platt"`` (sigmoid of the decision score fitted on inner out-of-fold scores),
        ``"isotonic"`` (monotone map fitted on them), ``"none"`` (sigmoid of the raw decision score:
        the model's own probability for logistic and MLP) or ``"auto"`` (per metabolite, the one whose
        hurdle has the smallest cross-fitted inner MSE; the default: best or within 0.002 macro R² of
        the best single calibration on the brain, lung and gated benchmarks, docs/benchmarks.md).
    inner_splits
        Inner folds for calibration and the ``auto`` choices (whole sections when there are >= 3).
    choice_tolerance
        Standard errors (of the inner per-fold gain) by which a hurdle or mask must beat the unmasked
        stage 2 to be chosen with ``combine="auto"`` (0: any positive mean gain).
    spatial_context
        Neighbours averaged into the spatial-context input (0: off): both stages get the expression
        and its mean over the spot and its ``spatial_context`` nearest spots (same section); needs
        ``coords`` in ``fit`` and ``predict``.
    spatial_coordinates
        Also give both stages the per-section standardised coordinates (with ``spatial_context``).
    signature_mask
        Append the signature mask to the stage-1 input (the seed's input); False uses expression only.
    n_signature_genes, resolution
        Marker genes per cluster and Leiden resolution when clusters/signatures are computed.
    detection, snr, quantile
        Presence targets when ``presence`` is not passed to ``fit``; see
        :func:`~spatialclust.translate.presence_targets`.
    random_state
        Seed of every random step (Leiden, neural initialisation, validation split, inner folds).

    Attributes
    ----------
    presence_model_
        Fitted stage 1.
    intensity_model_, unmasked_model_
        Stage 2 fitted on present spots (None when no metabolite uses ``hurdle``/``mask``) and on all
        spots (None when no metabolite uses ``none``).
    combination_
        Combination of every metabolite (list of str).
    calibration_
        Calibration of every metabolite (list of str, :data:`CALIBRATIONS`).
    calibration_slope_, calibration_intercept_
        Platt map per metabolite (slope 1, intercept 0 for ``none`` and ``isotonic``).
    calibration_knots_
        Isotonic map per metabolite as ``[scores, probabilities]`` knots (None for the others).
    absent_level_
        Mean training intensity of the absent spots per metabolite.
    inner_mse_
        ``{candidate: (n_metabolites,) mean inner-fold MSE}`` behind the ``auto`` choices (candidates of
        :func:`inner_errors`; None when nothing was chosen).
    signatures_
        Fitted :class:`SignatureMask` (None without ``signature_mask``).
    thresholds_
        Detection thresholds used for the presence targets (None when ``presence`` was given).
    genes_, metabolites_
        Feature names (from ``fit(genes=..., metabolites=...)``, else None).
    feature_names_
        Names of the stage-2 input columns (genes, then neighbourhood means and coordinates).
    """

    def __init__(
        self,
        presence_model: Any = "logistic",
        intensity_model: Any = "ridge",
        *,
        presence_params: Mapping[str, Any] | None = None,
        intensity_params: Mapping[str, Any] | None = None,
        combine: str = "auto",
        calibration: str = "auto",
        inner_splits: int = 3,
        choice_tolerance: float = 1.0,
        spatial_context: int = 0,
        spatial_coordinates: bool = False,
        signature_mask: bool = True,
        n_signature_genes: int = 3,
        resolution: float = 1.0,
        detection: str | float = "noise",
        snr: float = 3.0,
        quantile: float = 0.5,
        random_state: int = 0,
    ) -> None:
        self.presence_model = presence_model
        self.intensity_model = intensity_model
        self.presence_params = presence_params
        self.intensity_params = intensity_params
        self.combine = combine
        self.calibration = calibration
        self.inner_splits = inner_splits
        self.choice_tolerance = choice_tolerance
        self.spatial_context = spatial_context
        self.spatial_coordinates = spatial_coordinates
        self.signature_mask = signature_mask
        self.n_signature_genes = n_signature_genes
        self.resolution = resolution
        self.detection = detection
        self.snr = snr
        self.quantile = quantile
        self.random_state = random_state

    def _build(self, which: str):
        model = self.presence_model if which == "presence" else self.intensity_model
        params = dict((self.presence_params if which == "presence" else self.intensity_params) or {})
        if isinstance(model, str):
            factory = create_presence_model if which == "presence" else create_intensity_model
            probe = factory(model)
            if "random_state" in probe.get_params() and "random_state" not in params:
                params["random_state"] = self.random_state
            return factory(model, **params)
        return clone(model).set_params(**params) if params else clone(model)

    def _check_params(self) -> None:
        if self.combine not in _COMBINE:
            raise invalid_option(self.combine, "combine", _COMBINE)
        if self.calibration not in _CALIBRATION:
            raise invalid_option(self.calibration, "calibration", _CALIBRATION)
        if int(self.spatial_context) != self.spatial_context or self.spatial_context < 0:
            raise ValueError(f"`spatial_context` must be an integer >= 0 (neighbours averaged), got {self.spatial_context!r}.")
        if not (isinstance(self.choice_tolerance, (int, float)) and self.choice_tolerance >= 0):
            raise ValueError(f"`choice_tolerance` must be a number >= 0 (standard errors), got {self.choice_tolerance!r}.")
        if self.spatial_coordinates and not self.spatial_context:
            raise ValueError("`spatial_coordinates=True` needs `spatial_context` > 0.")

    def fit(
        self,
        X,
        Y,
        *,
        presence=None,
        coords=None,
        groups=None,
        clusters: Sequence | None = None,
        signatures: Mapping[str, Sequence[int]] | None = None,
        genes: Sequence[str] | None = None,
        metabolites: Sequence[str] | None = None,
    ) -> TwoStageTranslator:
        """Fit both stages (and, for calibration / ``auto``, their inner out-of-fold predictions).

        Parameters
        ----------
        X
            ``(n_spots, n_genes)`` log-expression.
        Y
            ``(n_spots, n_metabolites)`` intensities (on the scale to predict, e.g. log1p).
        presence
            ``(n_spots, n_metabolites)`` 0/1 targets; computed from ``Y`` when None.
        coords, groups
            Spot coordinates and sections (noise-level thresholds, spatial context, spatial inner
            folds and early-stopping splits).
        clusters, signatures
            Given spatial clusters of the spots and their signature genes (indices into the genes);
            computed with Leiden + marker genes when None.
        genes, metabolites
            Feature names, kept for prediction on new AnnData and for interpretation.
        """
        self._check_params()
        X, Y = check_xy(X, Y)
        self._build("presence"), self._build("intensity")  # unknown names fail before any work
        if presence is None:
            presence, self.thresholds_ = presence_targets(
                Y, coords=coords, groups=groups, detection=self.detection, snr=self.snr, quantile=self.quantile
            )
        else:
            presence = np.asarray(presence)
            if presence.shape != Y.shape:
                raise ValueError(f"`presence` must have the shape of `Y` {Y.shape}, got {presence.shape}.")
            self.thresholds_ = None
        if genes is not None and len(genes) != X.shape[1]:
            raise ValueError(f"`genes` must name the {X.shape[1]} columns of `X`, got {len(genes)} names.")
        if metabolites is not None and len(metabolites) != Y.shape[1]:
            raise ValueError(f"`metabolites` must name the {Y.shape[1]} columns of `Y`, got {len(metabolites)} names.")
        self.genes_ = None if genes is None else [str(g) for g in genes]
        self.metabolites_ = None if metabolites is None else [str(m) for m in metabolites]
        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = Y.shape[1]
        if self.signature_mask:
            self.signatures_ = SignatureMask(
                n_genes=self.n_signature_genes, resolution=self.resolution, random_state=self.random_state
            )
            self.signatures_.fit(X, clusters=clusters, signatures=signatures)
        else:
            self.signatures_ = None
        F, S = self._inputs(X, coords=coords, groups=groups, clusters=clusters)
        names = self.genes_ or [str(g) for g in range(X.shape[1])]
        self.feature_names_ = names + ([f"{g} (neighbourhood)" for g in names] if self.spatial_context else []) + (
            ["x (section-standardised)", "y (section-standardised)"] if self.spatial_coordinates else [])
        spatial = {"coords": coords, "groups": groups}
        self.absent_level_ = absent_levels(Y, presence)
        self.inner_mse_ = None
        m = Y.shape[1]
        choice = [self.combine] * m
        calibration = [self.calibration] * m
        scores = None
        if self.calibration != "none" or self.combine == "auto":
            folds = inner_folds(coords, len(X), groups=groups, n_splits=self.inner_splits, random_state=self.random_state)
            scores, labels = presence_out_of_fold(lambda: self._build("presence"), S, presence, folds, **spatial)
            if "auto" in (self.combine, self.calibration):
                present, unmasked = intensity_out_of_fold(lambda: self._build("intensity"), F, Y, presence, folds, **spatial)
                calibrations = CALIBRATIONS if self.calibration == "auto" else (self.calibration,)
                errors = inner_errors(Y, presence, scores=scores, labels=labels, present=present, unmasked=unmasked,
                                      folds=folds, calibrations=calibrations)
                self.inner_mse_ = {k: v.mean(0) for k, v in errors.items()}
                auto, calibration = choose_combinations(errors, calibrations=calibrations, tolerance=self.choice_tolerance)
                if self.combine == "auto":
                    choice = auto
                    logger.info("two-stage combination per metabolite (inner CV): %s",
                                dict(zip(self.metabolites_ or range(m), zip(choice, calibration))))
        fit = fit_calibration(scores if scores is not None else np.zeros(presence.shape), presence, calibration)
        self.calibration_ = fit["methods"]
        self.calibration_slope_, self.calibration_intercept_, self.calibration_knots_ = fit["slope"], fit["intercept"], fit["knots"]
        self.combination_ = [str(c) for c in choice]
        self.presence_model_ = self._build("presence").fit(S, presence, **spatial)
        self.intensity_model_ = (
            self._build("intensity").fit(F, Y, presence=presence, **spatial) if set(choice) & {"hurdle", "mask"} else None
        )
        self.unmasked_model_ = self._build("intensity").fit(F, Y, **spatial) if "none" in choice else None
        return self

    def _probability(self, scores: np.ndarray) -> np.ndarray:
        return calibrated_probability(scores, self.calibration_, slope=self.calibration_slope_,
                                      intercept=self.calibration_intercept_, knots=self.calibration_knots_)

    def _inputs(self, X: np.ndarray, *, coords=None, groups=None, clusters=None) -> tuple[np.ndarray, np.ndarray]:
        """``(F, S)``: stage-2 input (expression [+ spatial context]) and stage-1 input (F [+ signature mask])."""
        if self.spatial_context:
            if coords is None:
                raise ValueError(f"This translator uses spatial context (`spatial_context={self.spatial_context}`): pass `coords`.")
            F = spatial_features(X, coords, groups=groups, n_neighbors=int(self.spatial_context), coordinates=self.spatial_coordinates)
        else:
            F = X
        if self.signatures_ is None:
            return F, F
        return F, np.hstack([F, self.signatures_.transform(X, clusters=clusters)])

    def _check(self, X) -> np.ndarray:
        check_is_fitted(self, "presence_model_")
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` must have the {self.n_features_in_} genes the model was trained on, got {X.shape[1]}.")
        return X

    def _stage_inputs(self, X, coords, groups, clusters):
        return self._inputs(self._check(X), coords=coords, groups=groups, clusters=clusters)

    def predict_presence(self, X, *, coords=None, groups=None, clusters: Sequence | None = None) -> np.ndarray:
        """Stage 1: ``(n_spots, n_metabolites)`` int 0/1."""
        return self.presence_model_.predict(self._stage_inputs(X, coords, groups, clusters)[1])

    def presence_scores(self, X, *, coords=None, groups=None, clusters: Sequence | None = None) -> np.ndarray:
        """Stage 1 decision scores (> 0 = present), for ROC AUC."""
        return self.presence_model_.decision_function(self._stage_inputs(X, coords, groups, clusters)[1])

    def presence_probability(self, X, *, coords=None, groups=None, clusters: Sequence | None = None) -> np.ndarray:
        """Stage 1 (calibrated) presence probability."""
        return self._probability(self.presence_scores(X, coords=coords, groups=groups, clusters=clusters))

    def predict_intensity(self, X, *, coords=None, groups=None) -> np.ndarray:
        """Stage 2 alone: the intensity if present (the unmasked model for metabolites without stage 1)."""
        F = self._stage_inputs(X, coords, groups, None)[0]
        present = None if self.intensity_model_ is None else self.intensity_model_.predict(F)
        unmasked = None if self.unmasked_model_ is None else self.unmasked_model_.predict(F)
        if present is None:
            return unmasked
        if unmasked is not None:
            cols = np.asarray(self.combination_) == "none"
            present[:, cols] = unmasked[:, cols]
        return present

    def predict(self, X, *, coords=None, groups=None, clusters: Sequence | None = None) -> np.ndarray:
        """Intensities, every metabolite combined as in :attr:`combination_`."""
        F, S = self._stage_inputs(X, coords, groups, clusters)
        scores = self.presence_model_.decision_function(S)
        return combine_stages(
            self.combination_, probability=self._probability(scores), label=self.presence_model_.predict(S),
            present=None if self.intensity_model_ is None else self.intensity_model_.predict(F),
            unmasked=None if self.unmasked_model_ is None else self.unmasked_model_.predict(F),
            absent_level=np.asarray(self.absent_level_),
        )
