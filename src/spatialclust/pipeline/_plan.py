"""Check the whole plan of a clustering run before any work is done.

A run trains its embedders one after the other and clusters afterwards, so a parameter that only
``fit`` checked (``n_clusters: 0`` of the last clusterer) used to fail after every embedding had
been computed. :func:`check_plan` builds every configured embedder and clusterer and checks its
declared constraints (``_parameter_constraints``, :mod:`spatialclust._validation`; for SimCLR with
self-labeling also the nested ``self_label_params``) and, once the number of images is known, what
depends on it (:func:`spatialclust.tl.check_n_images`). The sections themselves (``preprocess``,
``evaluate``, ``report``) were checked when the configuration was loaded
(:func:`spatialclust.pipeline.validate_config`). Nothing is fitted and no heavy library (PyTorch,
UMAP) is imported, so the check takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._config import ConfigError
from .._validation import check_n_images

__all__ = ["check_plan"]


def check_plan(config: Mapping[str, Any], *, n_images: int | None = None) -> None:
    """Check every step of a clustering run configuration before the first embedding starts.

    Parameters
    ----------
    config
        A resolved configuration (:func:`spatialclust.pipeline.load_config`).
    n_images
        Number of feature images the run will embed (after preprocessing), or None when the data
        have not been read yet: then only what needs no data is checked.

    Raises
    ------
    ConfigError
        Naming the configuration item (``cluster[1]``), its method, the parameter, what it accepts
        and the value found, e.g. "`cluster[1].params` (kmeans): `n_clusters` must be a positive
        integer or 'auto'; received 0."
    """
    from .. import tl

    for section, registry in (("embedding", tl.embedders), ("cluster", tl.clusterers)):
        for i, item in enumerate(config[section]):
            where = f"`{section}[{i}].params` ({item['method']})"
            factory = registry.get(item["method"])
            estimator = _checked(where, lambda: factory(**item["params"]))
            _checked(where, estimator._validate_params)
            if n_images is not None:
                _checked(None, lambda: check_n_images(estimator, n_images, where=f"`{section}[{i}]` ({item['method']})"))


def _checked(where: str | None, step: Any) -> Any:
    """Run ``step``; a ValueError or TypeError (unknown parameter) becomes a ConfigError that starts
    with ``where`` (None: the error names the item itself)."""
    try:
        return step()
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err) if where is None else f"{where}: {err}") from err
