"""Supervised distance metric learning on (PCA-reduced) cell features: NCA, LMNN, MLKR, LFDA.

Palli (2023, sec. 3.4, Table 1) learns a linear map of the PCA-reduced classical features from the
labelled cells and applies it to all cells before Leiden clustering; NCA gave the purest clusters.
One estimator, :class:`MetricLearner`, wraps the four learners behind one interface:

- ``nca``: Neighbourhood Components Analysis (Goldberger et al. 2004), scikit-learn;
- ``lmnn``: Large Margin Nearest Neighbor (Weinberger & Saul 2009), metric-learn;
- ``mlkr``: Metric Learning for Kernel Regression (Weinberger & Tesauro 2007), metric-learn; the
  class labels are regressed as their integer codes (it is a regression method);
- ``lfda``: Local Fisher Discriminant Analysis (Sugiyama 2007), metric-learn.

Unlabelled cells (label NaN/None) are ignored by ``fit`` and transformed like all others.

:func:`self_labelled_metric` needs no labels: the Leiden clusters of a second view of the cells
(the raw pixels) are the pseudo-labels, and the metric is learned on the features from the cells
nearest the centre of their cluster (the self-labelling of seed 001 applied to this step).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .. import _keys
from .._compat import require
from .._logging import logger
from .._registry import Registry
from ._cell_cluster import DEFAULT_RESOLUTIONS, _representation, leiden_cells

__all__ = ["MetricLearner", "list_metric_learners", "metric_learners", "metric_learning", "NoPseudoLabelsError", "self_labelled_metric"]

metric_learners: Registry[Any] = Registry("metric learner")
"""Registry: name -> factory ``(n_components, max_iter, random_state, smallest_class, n_features, **params)``."""


def _metric_learn():
    """Import metric-learn, adapting it to scikit-learn >= 1.6.

    metric-learn 0.7.0 (its latest release) validates inputs with ``check_array(...,
    force_all_finite=...)``, a keyword scikit-learn renamed to ``ensure_all_finite`` (1.6) and
    removed (1.8). Its validation helpers are rebound, in metric-learn's own namespace only, to
    wrappers that pass the new keyword; nothing else in metric-learn or scikit-learn changes.
    """
    import functools
    import inspect

    metric_learn = require("metric_learn", package="metric-learn", purpose="LMNN, MLKR and LFDA")
    from metric_learn import _util
    from sklearn.utils import validation

    if "force_all_finite" not in inspect.signature(validation.check_array).parameters and not getattr(_util, "_spatialclust_adapted", False):

        def renamed(function):
            @functools.wraps(function)
            def wrapper(*args, **kwargs):
                if "force_all_finite" in kwargs:
                    kwargs["ensure_all_finite"] = kwargs.pop("force_all_finite")
                return function(*args, **kwargs)

            return wrapper

        _util.check_array = renamed(validation.check_array)
        _util.check_X_y = renamed(validation.check_X_y)
        _util._spatialclust_adapted = True
    return metric_learn


@metric_learners.register("nca")
def _nca(*, n_components, max_iter, random_state, smallest_class, n_features, **params):
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    return NeighborhoodComponentsAnalysis(
        n_components=n_components, max_iter=max_iter or 50, random_state=random_state, **params
    )


@metric_learners.register("lmnn")
def _lmnn(*, n_components, max_iter, random_state, smallest_class, n_features, **params):
    LMNN = _metric_learn().LMNN

    if "n_neighbors" not in params and 1 < smallest_class <= 3:  # the default adapts to a small class
        logger.warning("LMNN: n_neighbors reduced from 3 to %d (the smallest class has %d labelled cells).",
                       smallest_class - 1, smallest_class)
        params["n_neighbors"] = smallest_class - 1
    n_neighbors = params.pop("n_neighbors", 3)
    if smallest_class <= n_neighbors:
        raise ValueError(
            f"LMNN with n_neighbors={n_neighbors} needs more than {n_neighbors} labelled cells in every class; "
            f"the smallest class has {smallest_class}. Lower `n_neighbors` or label more cells."
        )
    return LMNN(
        n_neighbors=n_neighbors, n_components=n_components, max_iter=max_iter or 1000, random_state=random_state, **params
    )


@metric_learners.register("mlkr")
def _mlkr(*, n_components, max_iter, random_state, smallest_class, n_features, **params):
    MLKR = _metric_learn().MLKR

    return MLKR(n_components=n_components, max_iter=max_iter or 1000, random_state=random_state, **params)


@metric_learners.register("lfda")
def _lfda(*, n_components, max_iter, random_state, smallest_class, n_features, **params):
    LFDA = _metric_learn().LFDA

    # the local scaling uses the k-th nearest neighbour inside each class; metric-learn's default
    # is min(7, n_features - 1), which must also leave k neighbours in the smallest class
    k = params.pop("k", min(7, n_features - 1, smallest_class - 1))
    return LFDA(n_components=n_components, k=max(int(k), 1), **params)


def list_metric_learners() -> list[str]:
    """Names of the available metric learners."""
    return metric_learners.names()


class MetricLearner(TransformerMixin, BaseEstimator):
    """Learn a linear metric from labelled cells and map all cells into it.

    Parameters
    ----------
    method
        ``"nca"``, ``"lmnn"``, ``"mlkr"`` or ``"lfda"``.
    n_components
        Output dimension (default: input dimension).
    max_iter
        Optimiser iterations (default: 50 for NCA as scikit-learn, 1000 for LMNN/MLKR as
        metric-learn; LFDA is closed-form).
    random_state
        Seed of the initialisation.
    params
        Further keyword arguments of the underlying estimator (e.g. ``n_neighbors`` for LMNN).

    Attributes
    ----------
    estimator_
        The fitted scikit-learn / metric-learn estimator (on ``X / scale_``).
    scale_
        Root mean feature variance of the labelled cells; ``X`` is divided by it before fitting, so
        that distances are on the unit scale the learners assume (NCA's softmax, MLKR's kernel and
        LMNN's margin), whatever the units of ``X``.
    classes_
        Class labels seen in ``fit``.
    components_
        ``(n_components, n_features)`` learned linear map of ``X`` (the scaling included).
    n_features_in_
        Input dimension.

    Notes
    -----
    Palli (2023) learns the metric on PCA-reduced classical features of the labelled cells.
    """

    def __init__(
        self,
        method: str = "nca",
        *,
        n_components: int | None = None,
        max_iter: int | None = None,
        random_state: int = 0,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.n_components = n_components
        self.max_iter = max_iter
        self.random_state = random_state
        self.params = params

    def fit(self, X: np.ndarray, y: Any) -> MetricLearner:
        """Fit on the rows of ``X`` whose label ``y`` is not missing."""
        factory = metric_learners.get(self.method)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"`X` must be a 2-D array (cells x features), got shape {X.shape}.")
        labels = pd.Series(np.asarray(y, dtype=object))
        if len(labels) != X.shape[0]:
            raise ValueError(f"`y` has {len(labels)} labels but `X` has {X.shape[0]} rows.")
        if not np.isfinite(X).all():
            raise ValueError("`X` contains NaN or infinite values.")
        known = labels.notna().to_numpy()
        codes, classes = pd.factorize(labels[known], sort=True)
        if len(classes) < 2:
            raise ValueError(
                f"Metric learning needs labelled cells of at least 2 classes; got {len(classes)} class(es) "
                f"({list(classes)}) in `y`."
            )
        if self.n_components is not None and not 1 <= int(self.n_components) <= X.shape[1]:
            raise ValueError(f"`n_components` must be between 1 and the number of features ({X.shape[1]}), got {self.n_components}.")
        smallest = int(np.bincount(codes).min())
        if smallest < 2:
            raise ValueError(f"Every class needs at least 2 labelled cells; class {classes[np.bincount(codes).argmin()]!r} has 1.")
        estimator = factory(
            n_components=self.n_components,
            max_iter=self.max_iter,
            random_state=self.random_state,
            smallest_class=smallest,
            n_features=X.shape[1],
            **dict(self.params or {}),
        )
        target = codes.astype(np.float64) if self.method == "mlkr" else codes
        # NCA's softmax over squared distances and MLKR's Gaussian kernel saturate when distances are
        # large (the PCA of raw pixels: squared distances ~1e7, where NCA stops at its identity
        # initialisation), and LMNN's margin is one unit: one global factor brings the mean feature
        # variance to 1 before fitting. It keeps the geometry (a scalar); components_ include it.
        scale = float(np.sqrt(X[known].var(axis=0).mean()))
        scale = scale if scale > 0 else 1.0
        logger.info("fitting %s on %d labelled cells (%d classes, %d features)", self.method, known.sum(), len(classes), X.shape[1])
        with warnings.catch_warnings():
            # LFDA asks ARPACK for all eigenvectors when n_components is the input dimension; scipy
            # warns and solves densely instead, which is the intended result
            warnings.filterwarnings("ignore", message="k >= N for N \\* N square matrix", category=RuntimeWarning)
            estimator.fit(X[known] / scale, target)
        if not np.isfinite(estimator.components_).all():
            raise ValueError(f"{self.method} produced a non-finite metric; reduce `n_components` or check the features.")
        self.estimator_ = estimator
        self.classes_ = np.asarray(classes)
        self.scale_ = scale
        self.components_ = np.asarray(estimator.components_) / scale
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map ``X`` into the learned metric space: ``X @ components_.T``."""
        check_is_fitted(self, "components_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` must have {self.n_features_in_} features, got shape {X.shape}.")
        return X @ self.components_.T


def metric_learning(
    adata: ad.AnnData,
    method: str = "nca",
    *,
    use_rep: str = "X_pca",
    label_key: str = _keys.LABEL,
    train_fraction: float | None = None,
    n_components: int | None = None,
    max_iter: int | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Learn a metric on labelled cells and apply it to all cells (Palli 2023, sec. 4.3).

    Parameters
    ----------
    adata
        AnnData with the representation ``obsm[use_rep]`` and labels ``obs[label_key]``.
    method
        ``"nca"``, ``"lmnn"``, ``"mlkr"`` or ``"lfda"``.
    use_rep
        Input representation (``"X_pca"``: the PCA-reduced features, as in the paper; ``"X"``: X).
    label_key
        obs column of the labels; NaN = unlabelled.
    train_fraction
        Fraction of the labelled cells used for fitting (stratified sample; None = all labelled).
    n_components, max_iter, random_state, params
        See :class:`MetricLearner`.
    key_added
        obsm key of the result (default ``"X_<method>"``).

    Returns
    -------
    None; writes ``obsm[key_added]`` (all cells), ``obs[key_added + "_train"]`` (bool, cells used
    for fitting) and ``uns[key_added]`` = ``{"method", "use_rep", "label_key", "params",
    "classes", "n_train"}``.
    """
    if label_key not in adata.obs:
        raise KeyError(f"`label_key`={label_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    if use_rep == "X":
        X = np.asarray(adata.X)
    elif use_rep in adata.obsm:
        X = np.asarray(adata.obsm[use_rep])
    else:
        raise KeyError(f"`use_rep`={use_rep!r} is not in adata.obsm (keys: {list(adata.obsm)}) and is not 'X'.")
    labels = adata.obs[label_key].astype(object).where(adata.obs[label_key].notna(), None)
    train = labels.notna().to_numpy().copy()
    if train_fraction is not None:
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"`train_fraction` must be in (0, 1], got {train_fraction!r}.")
        rng = np.random.default_rng(random_state)
        keep = np.zeros_like(train)
        for value in pd.unique(labels[train]):
            members = np.flatnonzero((labels == value).to_numpy())
            count = max(2, int(round(train_fraction * len(members))))
            keep[rng.choice(members, size=min(count, len(members)), replace=False)] = True
        train = keep
    counts = labels[train].value_counts()
    single = sorted(map(str, counts.index[counts < 2]))
    if single:  # one cell gives no within-class pair to learn from; it is still embedded and scored
        logger.warning("Metric learning leaves out the class(es) with a single labelled cell: %s.", ", ".join(single))
        train &= ~labels.isin(counts.index[counts < 2]).to_numpy()
    learner = MetricLearner(method, n_components=n_components, max_iter=max_iter, random_state=random_state, params=params)
    learner.fit(X, labels.where(train, None).to_numpy())
    key = key_added or _keys.embedding_key(method)
    adata.obsm[key] = learner.transform(X).astype(np.float32)
    adata.obs[_keys.training_cells_key(key)] = train
    adata.uns[key] = {
        "method": method,
        "use_rep": use_rep,
        "label_key": label_key,
        "classes": [str(c) for c in learner.classes_],
        "n_train": int(train.sum()),
        _keys.PARAMS: {
            "train_fraction": train_fraction,
            "n_components": n_components,
            "max_iter": max_iter,
            "random_state": random_state,
            **dict(params or {}),
        },
    }


class NoPseudoLabelsError(ValueError):
    """:func:`self_labelled_metric` found fewer than 2 clusters big enough to give pseudo-labels."""


def self_labelled_metric(
    adata: ad.AnnData,
    method: str = "lfda",
    *,
    use_rep: str = "X_pca",
    label_rep: str = "X_pixels_pca",
    confident_fraction: float = 0.5,
    min_cluster_size: int = 6,
    resolution: float | str = "scan",
    resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
    criterion: str = "stability",
    stability_threshold: float = 0.9,
    n_neighbors: int = 15,
    neighbors_method: str = "umap",
    n_components: int | None = None,
    max_iter: int | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Learn a metric on ``use_rep`` from pseudo-labels: the Leiden clusters of ``label_rep`` (no labels used).

    1. Leiden on the kNN graph of ``obsm[label_rep]`` (:func:`~spatialclust.tl.leiden_cells`; by
       default at the resolution of the stability scan, so the number of clusters is not given);
    2. in every cluster of at least ``min_cluster_size`` cells, the ``confident_fraction`` of its
       cells nearest the cluster mean in ``label_rep`` keep their cluster as pseudo-label;
    3. :func:`metric_learning` of ``method`` on ``obsm[use_rep]`` from these cells, applied to all.

    Two views of the same cells make errors that differ: on the cell-cycle images the clusters of
    the raw pixels follow DNA content, and the metric learned from them on the classical features
    down-weights the features that do not separate them, while keeping the features' invariance to
    rotation and position. On the real Jurkat cells and on the simulated cell cycle this lifts the
    NMI and ARI of Leiden and k-means on the features above the pixels and the plain features
    (docs/benchmarks.md, "Cell-image phenotyping").

    Parameters
    ----------
    adata
        AnnData with ``obsm[use_rep]`` and ``obsm[label_rep]``.
    method
        Metric learner (``"lfda"``; any of :func:`list_metric_learners`).
    use_rep
        Representation the metric is learned on and applied to (``"X_pca"``: the PCA of the features).
    label_rep
        Representation whose Leiden clusters are the pseudo-labels (``"X_pixels_pca"``: the PCA of
        the raw pixels in ``spatialclust cells run``).
    confident_fraction
        Fraction of each cluster, nearest its mean, that is used for fitting.
    min_cluster_size
        Smaller clusters give no pseudo-label.
    resolution, resolutions, criterion, stability_threshold, n_neighbors, neighbors_method
        Leiden of the pseudo-labels, see :func:`~spatialclust.tl.leiden_cells`.
    n_components, max_iter, random_state, params
        See :class:`MetricLearner` (``random_state`` also seeds Leiden).
    key_added
        obsm key of the result (default ``"X_self_<method>"``).

    Returns
    -------
    None; writes ``obsm[key_added]`` (all cells), ``obs[key_added + "_pseudo_labels"]`` (the Leiden
    cluster of the confident cells, NaN for the others), ``uns[key_added]`` as
    :func:`metric_learning` with ``"label_rep"`` and ``"n_pseudo_clusters"``, and the graph of
    ``label_rep`` under ``obsp[key_added + "_pseudo_labels_neighbors_*"]``.

    Raises
    ------
    NoPseudoLabelsError
        Fewer than 2 Leiden clusters of at least ``min_cluster_size`` cells.
    """
    if not 0.0 < confident_fraction <= 1.0:
        raise ValueError(f"`confident_fraction` must be in (0, 1], got {confident_fraction!r}.")
    if min_cluster_size < 2:
        raise ValueError(f"`min_cluster_size` must be at least 2, got {min_cluster_size!r}.")
    key = key_added or _keys.embedding_key(f"self_{method}")
    pseudo_key = _keys.pseudo_labels_key(key)
    P = np.asarray(_representation(adata, label_rep), dtype=np.float64)
    leiden_cells(adata, use_rep=label_rep, resolution=resolution, resolutions=resolutions,
                 criterion=criterion, stability_threshold=stability_threshold, n_neighbors=n_neighbors,
                 neighbors_method=neighbors_method, random_state=random_state, key_added=pseudo_key)
    clusters = adata.obs[pseudo_key].cat.codes.to_numpy()
    confident = np.zeros(adata.n_obs, dtype=bool)
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        if len(members) < min_cluster_size:
            continue
        distance = np.linalg.norm(P[members] - P[members].mean(axis=0), axis=1)
        confident[members[np.argsort(distance, kind="stable")[: max(2, int(round(confident_fraction * len(members))))]]] = True
    n_clusters = int(adata.uns[pseudo_key]["n_clusters"])
    if len(np.unique(clusters[confident])) < 2:
        raise NoPseudoLabelsError(f"Leiden on obsm[{label_rep!r}] gave {n_clusters} cluster(s), fewer than 2 of at least "
                         f"{min_cluster_size} cells: no pseudo-labels to learn a metric from.")
    adata.obs[pseudo_key] = adata.obs[pseudo_key].where(confident)
    logger.info("self-labelled %s: %d confident cells in %d Leiden clusters of %s", method, confident.sum(), n_clusters, label_rep)
    metric_learning(adata, method, use_rep=use_rep, label_key=pseudo_key, n_components=n_components, max_iter=max_iter,
                    random_state=random_state, key_added=key, params=params)
    del adata.obs[_keys.training_cells_key(key)]  # the same cells as the non-missing pseudo-labels
    adata.uns[key].update({"label_rep": label_rep, "n_pseudo_clusters": n_clusters})
    adata.uns[key][_keys.PARAMS].update({
        "confident_fraction": confident_fraction, "min_cluster_size": min_cluster_size, "resolution": resolution,
        "criterion": criterion, "stability_threshold": stability_threshold, "n_neighbors": n_neighbors, "neighbors_method": neighbors_method,
    })
