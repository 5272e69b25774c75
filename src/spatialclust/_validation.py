"""Parameter and input validation: one home for the checks every estimator and pipeline shares.

Declarative constraints, in the spirit of scikit-learn's ``_parameter_constraints``: an estimator
declares, as a class attribute, what each of its parameters accepts, and
:meth:`ValidatedParams._validate_params` checks the stored parameters against it. Because the
constraints need no data, a pipeline can check every estimator of its plan before the first
expensive step (:func:`spatialclust.pipeline.check_plan`); what depends on the data's size is
checked by :func:`check_n_images` once the number of images is known.

.. code-block:: python

    class KMeansClusterer(ValidatedParams, ClusterMixin, BaseEstimator):
        _parameter_constraints = {"n_clusters": [Interval(int, 1), "auto"], "random_state": [RANDOM_STATE, None]}

A constraint list holds :class:`Interval` (integers or real numbers in a range), literal strings
(allowed options), ``None``, a type (e.g. ``bool``, ``str``), or a :class:`Check` (a function that
validates the value itself and raises its own error). A value is valid if it satisfies any entry.

Why not ``sklearn.utils._param_validation``: it is a private module (its names and behaviour have
changed between scikit-learn releases without deprecation), and its messages ("The 'n_clusters'
parameter of KMeans must be an int in the range [1, inf) or a str among {'auto'}. Got 0 instead.")
differ from this package's wording, which users and the test suite rely on: options answered with
"Invalid option `x` for `name`. Valid options are: ..." (:func:`spatialclust._registry.invalid_option`),
everything else with "`name` must be <what is expected>; received <value>.". The ~100 lines here
keep that wording in one place.

The data checks shared by the clusterers and metrics live here too (:func:`check_features`,
:func:`check_count`, :func:`neighbourhood_size`), as do the augmentation strengths of the
self-supervised embedders (:func:`augmentation_strength`), so that a plan can be checked without
importing PyTorch.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from ._logging import logger
from ._registry import invalid_option

__all__ = [
    "AUGMENTATION_STRENGTHS",
    "GEOMETRY_CONSTRAINTS",
    "MIN_IMAGES",
    "NON_NEGATIVE",
    "POSITIVE",
    "RANDOM_STATE",
    "SEED",
    "Check",
    "Interval",
    "ValidatedParams",
    "augmentation_strength",
    "check_count",
    "check_features",
    "check_n_images",
    "check_probability",
    "check_random_state",
    "check_range",
    "check_unique_names",
    "neighbourhood_size",
    "validate_params",
    "validate_sections",
]

#: Fewest feature images any clusterer accepts.
MIN_IMAGES = 3


# --------------------------------------------------------------------------------------------
# constraints
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class Interval:
    """Integers (``kind=int``) or real numbers (``kind=float``) between ``low`` and ``high``.

    Parameters
    ----------
    kind
        ``int`` (integers only, not bools) or ``float`` (any real number, integers included).
    low, high
        Bounds; None: unbounded.
    closed
        Which bounds belong to the interval: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``.
    description
        How the error describes the interval; default e.g. "a positive integer", "an integer >= 2",
        "a number in (0, 1]".
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 closed: str = "both", description: str | None = None) -> None:
        if kind not in (int, float):
            raise ValueError(f"`kind` must be int or float; received {kind!r}.")
        if closed not in ("both", "left", "right", "neither"):
            raise invalid_option(closed, "closed", ["both", "left", "right", "neither"])
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.description = description or self._describe()

    def _describe(self) -> str:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        noun, article = ("integer", "an") if self.kind is int else ("number", "a")
        if self.low is not None and self.high is None:
            if (self.low == 0 and not left) or (self.kind is int and self.low == 1 and left):
                return f"a positive {noun}"
            if self.low == 0:
                return f"a non-negative {noun}"
            return f"{article} {noun} {'>=' if left else '>'} {self.low}"
        if self.low is None and self.high is None:
            return f"{article} {noun}"
        if self.low is None:
            return f"{article} {noun} {'<=' if right else '<'} {self.high}"
        return f"{article} {noun} in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"

    def is_satisfied_by(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind is int else _is_real(value)):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and not (value >= self.low if left else value > self.low):
            return False
        return self.high is None or bool(value <= self.high if right else value < self.high)


class Check:
    """A constraint checked by ``function(value)``, which raises its own error for a bad value
    (e.g. :func:`augmentation_strength`, whose messages name the offending key)."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function


#: ``random_state`` of every estimator: an integer seed (with None where the estimator allows it).
RANDOM_STATE = Interval(int, description="an int")
#: A seed that must be an integer.
SEED = Interval(int, description="an integer")
#: Learning rates, temperatures, ...
POSITIVE = Interval(float, 0, closed="neither")
#: Weight decays, augmentation ranges, ...
NON_NEGATIVE = Interval(float, 0)

_TYPE_NAMES = {bool: "True or False", str: "a string", dict: "a mapping", Mapping: "a mapping",
               list: "a list", tuple: "a tuple", os.PathLike: "a path"}


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, str):
        return repr(constraint)
    if isinstance(constraint, type):
        return _TYPE_NAMES.get(constraint, f"a {constraint.__name__}")
    return constraint.description


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]]) -> None:
    """Check every parameter in ``params`` that ``constraints`` declares (others are not checked).

    Raises
    ------
    ValueError
        Naming the first parameter that satisfies none of its constraints, what it accepts and the
        value received. A parameter that only takes options (strings, perhaps None) gets
        "Invalid option `x` for `name`. Valid options are: ...".
    """
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        checks = [c for c in allowed if isinstance(c, Check)]
        others = [c for c in allowed if not isinstance(c, Check)]
        if any(_satisfies(c, value) for c in others):
            continue
        if checks:  # the function raises its own error; it returns for a valid value
            for check in checks:
                check.function(value)
            continue
        options = [c for c in others if isinstance(c, str)]
        if options and all(c is None or isinstance(c, str) for c in others):
            raise invalid_option(value, name, options)
        raise ValueError(f"`{name}` must be {_join([_describe(c) for c in others])}; received {value!r}.")


def validate_sections(config: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]], *,
                      error: type[ValueError] = ValueError) -> None:
    """:func:`validate_params` for the single keys of a nested configuration, named by dotted keys
    (``"preprocess.winsorize"``), raising ``error`` (e.g. :class:`~spatialclust._config.ConfigError`)."""
    flat = {}
    for key in constraints:
        value: Any = config
        for part in key.split("."):
            value = value[part]
        flat[key] = value
    try:
        validate_params(flat, constraints)
    except ValueError as err:
        raise error(str(err)) from None


def _satisfies(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, str):
        return isinstance(value, str) and value == constraint
    if constraint is bool:
        return isinstance(value, (bool, np.bool_))
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return constraint.is_satisfied_by(value)


class ValidatedParams:
    """Mixin of the estimators that declare ``_parameter_constraints`` (scikit-learn's idea).

    ``__init__`` only stores parameters; ``fit`` calls :meth:`_validate_params` first, and a
    pipeline calls it on every estimator of its plan before any work.
    """

    #: parameter name -> list of accepted constraints (see the module docstring)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def _validate_params(self) -> None:
        """Check the stored parameters against :attr:`_parameter_constraints` (ValueError naming the parameter)."""
        validate_params(self.get_params(deep=False), self._parameter_constraints)

    def _min_images(self) -> int:
        """Fewest images this estimator can run on with its parameters (see :func:`check_n_images`)."""
        return 1


def check_n_images(estimator: Any, n_images: int, *, where: str | None = None) -> None:
    """Refuse, before any work, an embedder or clusterer that cannot run on ``n_images`` images.

    A pipeline calls this once the number of images is known (after preprocessing) and before the
    first embedding. Neighbourhood sizes are adapted to small data when the estimator is fitted
    (see :func:`neighbourhood_size`); what has no sensible adaptation is an error naming the
    parameter: fewer images than the estimator needs (its ``_min_images()``: :data:`MIN_IMAGES` for
    a clusterer, more for UMAP), or a fixed ``n_clusters`` above the number of images.

    Parameters
    ----------
    estimator
        An embedder or clusterer (parameters stored, not fitted).
    n_images
        Number of images it will get.
    where
        How the error names the estimator (e.g. the configuration item); default its class name.

    Raises
    ------
    ValueError
        Naming the estimator, the parameter, its value and the number of images.
    """
    name = where or type(estimator).__name__
    needed = estimator._min_images() if hasattr(estimator, "_min_images") else 1
    if n_images < needed:
        raise ValueError(f"{name} needs at least {needed} images; the data have {n_images}.")
    k = getattr(estimator, "n_clusters", None)
    if _is_int(k) and k > n_images:
        raise ValueError(
            f"{name}: `n_clusters`={k} is more than the {n_images} images to cluster; set a smaller "
            "`n_clusters` (or 'auto') in its `params`."
        )


def check_random_state(random_state: Any) -> int | None:
    """``random_state`` as an int or None (ValueError for anything else)."""
    validate_params({"random_state": random_state}, {"random_state": [RANDOM_STATE, None]})
    return None if random_state is None else int(random_state)


# --------------------------------------------------------------------------------------------
# data checks
# --------------------------------------------------------------------------------------------


def check_unique_names(names: Any, what: str) -> None:
    """Raise a ValueError when ``names`` (e.g. ``adata.var_names``) repeat: tables, figures and models
    name their rows by them. ``what`` completes "``<what>`` repeat ... name(s)"."""
    import pandas as pd

    index = pd.Index(names)
    if not index.is_unique:
        repeated = index[index.duplicated()].unique()
        raise ValueError(f"{what} repeat {len(repeated)} name(s) (e.g. {list(repeated[:3])}); make them unique first "
                         "(`adata.var_names_make_unique()`), or sum the duplicates.")


def check_features(X: Any, *, name: str = "X") -> np.ndarray:
    """Validate a feature matrix (one row per image) for clustering.

    Raises a ValueError naming ``name`` when ``X`` is not 2-D, contains NaN/inf, has fewer than
    3 rows (images) or when all rows are identical (nothing to cluster).
    """
    if sparse.issparse(X):
        X = X.toarray()
    arr = np.asarray(X)
    if arr.dtype.kind != "f":  # float32 embeddings stay float32 (regular images can be large)
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (n_images, n_dims); received shape {arr.shape}.")
    if arr.shape[0] < MIN_IMAGES:
        raise ValueError(f"`{name}` has {arr.shape[0]} images; clustering needs at least {MIN_IMAGES}.")
    if arr.shape[1] == 0:
        raise ValueError(f"`{name}` has no columns: received shape {arr.shape}.")
    # min/max propagate NaN and catch inf without an (n, d) temporary
    if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if np.array_equal(arr.min(axis=0), arr.max(axis=0)):
        raise ValueError(
            f"All {arr.shape[0]} images in `{name}` are identical; there is no structure to cluster "
            "(check preprocessing, e.g. that images are not all empty)."
        )
    return arr


def check_count(value: Any, name: str, *, n_images: int, low: int = 1, below_n: bool = False) -> int:
    """Validate an integer parameter bounded by the number of images (k, n_clusters, min_samples)."""
    validate_params({name: value}, {name: [Interval(int, low)]})
    high = n_images - 1 if below_n else n_images
    if value > high:
        rel = "smaller than" if below_n else "at most"
        raise ValueError(f"`{name}`={value} is larger than allowed: it must be {rel} the number of images ({n_images}).")
    return int(value)


def neighbourhood_size(
    value: Any, name: str, *, n_images: int, low: int = 1, below_n: bool = True, counts_itself: bool = False
) -> int:
    """Validate a neighbourhood size (``n_neighbors``, ``min_samples``, ``min_cluster_size``) and fit it
    to small data instead of refusing it.

    A value the data cannot hold (at least ``n_images``, or above it when ``below_n`` is False)
    is replaced, with a warning, by the largest neighbourhood in which two groups of images can
    still be told apart: at most half the images (``n_images // 2`` counting the image itself,
    one less when ``counts_itself`` is False). Larger neighbourhoods of any two images overlap,
    so a k-nearest-neighbour graph or a density estimate sees one group. Values the data can hold
    are used as given.
    """
    validate_params({name: value}, {name: [Interval(int, low)]})
    allowed = n_images - 1 if below_n else n_images
    if allowed < low:
        raise ValueError(f"`{name}` must be >= {low}, which {n_images} images do not allow.")
    if value <= allowed:
        return int(value)
    adapted = min(allowed, max(low, n_images // 2 - (0 if counts_itself else 1)))
    logger.warning(
        "`%s`=%d does not fit %d images; using %s=%d, the largest neighbourhood in which two groups of "
        "images can still be told apart (half the images).", name, value, n_images, name, adapted,
    )
    return adapted


# --------------------------------------------------------------------------------------------
# augmentation strengths (self-supervised embedders; checked without importing PyTorch)
# --------------------------------------------------------------------------------------------

#: The three appearance-augmentation combinations of the authors' implementation
#: (github.com/LabLaskin/MSI-self-supervised-clustering, ``main.ipynb``): every transform is always
#: applied (``p = 1``, no random skipping), in the order blur, intensity, noise. ``"medium"`` is the
#: SimCLR view; ``"weak"`` and ``"strong"`` are the two views of self-labeling. Blur sigma in pixels
#: (torchvision ``GaussianBlur``), noise sigma relative to the image's bright-pixel level, and the
#: brightness/contrast jitter of ``ColorJitter`` on a gray image.
AUGMENTATION_STRENGTHS: dict[str, dict[str, object]] = {
    "weak": {"p": 1.0, "blur_sigma": (0.01, 0.75), "noise_sigma": (0.001, 0.2), "intensity": 0.25},
    "medium": {"p": 1.0, "blur_sigma": (0.01, 0.75), "noise_sigma": (0.001, 0.2), "intensity": 0.5},
    "strong": {"p": 1.0, "blur_sigma": (0.1, 2.0), "noise_sigma": (0.001, 0.4), "intensity": 0.5},
}
_STRENGTH_KEYS = ("p", "blur_sigma", "noise_sigma", "intensity", "counts", "gamma")


#: Constraints of the geometric augmentations that SimCLR and self-labeling share (their views,
#: :func:`spatialclust.models.simclr_views` and :func:`spatialclust.models.self_labeling_views`).
GEOMETRY_CONSTRAINTS: dict[str, list] = {
    "rotation": [NON_NEGATIVE], "translation": [NON_NEGATIVE], "resized_crop": [bool],
}


def augmentation_strength(strength: str | Mapping[str, object]) -> dict[str, object]:
    """Parameters of an augmentation strength: a name of :data:`AUGMENTATION_STRENGTHS` or a mapping
    with the keys ``p``, ``blur_sigma``, ``noise_sigma``, ``intensity`` and the optional ion-image
    nuisances ``counts`` (``RandomCountThinning`` range) and ``gamma`` (``RandomGamma`` range);
    missing keys are those of ``"medium"`` (no thinning, no gamma)."""
    if isinstance(strength, Mapping):
        unknown = sorted(set(strength) - set(_STRENGTH_KEYS))
        if unknown:
            raise ValueError(f"Unknown augmentation parameter(s) {unknown}; valid keys are {list(_STRENGTH_KEYS)}.")
        return {**AUGMENTATION_STRENGTHS["medium"], **strength}
    if strength not in AUGMENTATION_STRENGTHS:
        raise invalid_option(strength, "strength", list(AUGMENTATION_STRENGTHS))
    return dict(AUGMENTATION_STRENGTHS[strength])


def check_probability(p: Any, name: str = "p") -> float:
    """A probability in [0, 1] as a float."""
    validate_params({name: p}, {name: [Interval(float, 0, 1, description="a probability in [0, 1]")]})
    return float(p)


def check_range(value: Sequence[float], name: str, *, low: float = 0.0, high: float | None = None,
                closed_low: bool = True) -> tuple[float, float]:
    """A ``(min, max)`` pair with ``low <= min <= max <= high`` (``low < min`` if not ``closed_low``)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a (min, max) pair of numbers; received {value!r}.") from None
    if not ((low <= lo if closed_low else low < lo) and lo <= hi and (high is None or hi <= high)):
        bound = "" if high is None else f" <= {high}"
        raise ValueError(f"`{name}` must satisfy {low} {'<=' if closed_low else '<'} min <= max{bound}; received {value!r}.")
    return lo, hi
