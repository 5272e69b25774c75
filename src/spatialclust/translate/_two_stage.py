"""The two-stage ST -> MSI translator of the seed: presence first, then masked intensities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ._estimators import check_xy
from ._models import create_intensity_model, create_presence_model
from ._signatures import SignatureMask
from ._targets import presence_targets

__all__ = ["TwoStageTranslator"]


class TwoStageTranslator(RegressorMixin, BaseEstimator):
    """Predict metabolite intensities (MSI) of a spot from its gene expression (ST), in two stages.

    Stage 1 predicts the binary presence vector of the ``n`` metabolites from the spot's expression
    ``(g_1..g_k)`` concatenated with its signature mask (1 for the signature genes of its spatial
    cluster); stage 2 predicts all intensities from the expression, and the output is the
    element-wise product of the two, so metabolites predicted absent are exactly 0 (seed 004,
    "Development of a Deep Learning methodology for synthetic Spatial Metabolomics data generation",
    Galvis, Lohk & Nikolski).

    Parameters
    ----------
    presence_model
        Stage-1 model name (``logistic``, ``svm``, ``mlp``, ``prevalence``) or an estimator.
    intensity_model
        Stage-2 model name (``mean``, ``linear``, ``ridge``, ``mlp``, ``transformer``) or an estimator.
    presence_params, intensity_params
        Keyword arguments of the named models.
    signature_mask
        Append the signature mask to the stage-1 input (the seed's input); False uses expression only.
    n_signature_genes, resolution
        Marker genes per cluster and Leiden resolution when clusters/signatures are computed.
    detection, snr, quantile
        Presence targets when ``presence`` is not passed to ``fit``; see
        :func:`~spatialclust.translate.presence_targets`.
    random_state
        Seed of every random step (Leiden, neural initialisation, validation split).

    Attributes
    ----------
    presence_model_, intensity_model_
        Fitted stage models.
    signatures_
        Fitted :class:`SignatureMask` (None without ``signature_mask``).
    thresholds_
        Detection thresholds used for the presence targets (None when ``presence`` was given).
    genes_, metabolites_
        Feature names (from ``fit(genes=..., metabolites=...)``, else None).
    """

    def __init__(
        self,
        presence_model: Any = "logistic",
        intensity_model: Any = "transformer",
        *,
        presence_params: Mapping[str, Any] | None = None,
        intensity_params: Mapping[str, Any] | None = None,
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
        from sklearn.base import clone

        return clone(model).set_params(**params) if params else clone(model)

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
        """Fit both stages.

        Parameters
        ----------
        X
            ``(n_spots, n_genes)`` log-expression.
        Y
            ``(n_spots, n_metabolites)`` intensities (on the scale to predict, e.g. log1p).
        presence
            ``(n_spots, n_metabolites)`` 0/1 targets; computed from ``Y`` when None.
        coords, groups
            Spot coordinates and sections (noise-level thresholds, spatial early-stopping splits).
        clusters, signatures
            Given spatial clusters of the spots and their signature genes (indices into the genes);
            computed with Leiden + marker genes when None.
        genes, metabolites
            Feature names, kept for prediction on new AnnData and for interpretation.
        """
        X, Y = check_xy(X, Y)
        presence_model, intensity_model = self._build("presence"), self._build("intensity")  # unknown names fail first
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
        spatial = {"coords": coords, "groups": groups}
        if self.signature_mask:
            self.signatures_ = SignatureMask(
                n_genes=self.n_signature_genes, resolution=self.resolution, random_state=self.random_state
            )
            mask = self.signatures_.fit_transform(X, clusters=clusters, signatures=signatures)
        else:
            self.signatures_ = None
            mask = None
        self.presence_model_ = presence_model.fit(self._stage1_input(X, mask), presence, **spatial)
        self.intensity_model_ = intensity_model.fit(X, Y, presence=presence, **spatial)
        return self

    def _stage1_input(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if self.signatures_ is None:
            return X
        if mask is None:
            mask = self.signatures_.transform(X)
        return np.hstack([X, mask])

    def _check(self, X) -> np.ndarray:
        check_is_fitted(self, "intensity_model_")
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` must have the {self.n_features_in_} genes the model was trained on, got {X.shape[1]}.")
        return X

    def predict_presence(self, X, *, clusters: Sequence | None = None) -> np.ndarray:
        """Stage 1: ``(n_spots, n_metabolites)`` int 0/1."""
        X = self._check(X)
        mask = None if clusters is None or self.signatures_ is None else self.signatures_.transform(X, clusters=clusters)
        return self.presence_model_.predict(self._stage1_input(X, mask))

    def presence_scores(self, X, *, clusters: Sequence | None = None) -> np.ndarray:
        """Stage 1 decision scores (> 0 = present), for ROC AUC."""
        X = self._check(X)
        mask = None if clusters is None or self.signatures_ is None else self.signatures_.transform(X, clusters=clusters)
        return self.presence_model_.decision_function(self._stage1_input(X, mask))

    def predict_intensity(self, X) -> np.ndarray:
        """Stage 2 alone (not masked)."""
        return self.intensity_model_.predict(self._check(X))

    def predict(self, X, *, clusters: Sequence | None = None) -> np.ndarray:
        """Masked intensities: stage 2 output x stage 1 presence (absent metabolites are exactly 0)."""
        return self.predict_intensity(X) * self.predict_presence(X, clusters=clusters)
