"""The one configuration loader of every pipeline: packaged defaults <- file <- ``--set``, validated.

Each pipeline has a packaged, commented default YAML file (:data:`PIPELINE_CONFIGS`) that lists every
key; :func:`load_config` merges a user file or mapping and the command-line overrides onto it with
:func:`spatialclust._config.resolve_config` (unknown keys rejected, naming the valid ones), then runs
the pipeline's own checks (:func:`validate_config`, :func:`validate_cells_config`): values of the
wrong kind and unknown methods fail here, before any work. The ``embedding`` and ``cluster`` lists
are validated item by item: every item gets the item defaults, unknown item keys are errors, and
``method`` must be a registered embedder/clusterer.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _keys as K
from .._config import ConfigError, merge_config, packaged_defaults, resolve_config
from .._registry import invalid_option
from .._validation import NON_NEGATIVE, POSITIVE, SEED, Interval, validate_sections

_ITEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "embedding": {"method": None, "params": {}, "key": None},
    "cluster": {"method": None, "params": {}, "key": None, "embeddings": None},
}
_CELLS_EMBEDDING_ITEM = {"method": None, "params": {}, "key": None}
FIGURES = ("cluster_means", "spectrum", "embedding", "rgb_composite", "members")
EMBEDDING_FIGURES = ("knn_purity", "representations", "ion_pairs")
#: public datasets (`sc.datasets`) that load as one AnnData, for `input.dataset`
_SINGLE_TABLE_DATASETS = ("mouse_bladder", "legacy_st")
#: a file given in a configuration
_PATH = (str, os.PathLike, None)
_PERCENTILE = Interval(float, 0, 100, closed="right", description="a percentile in (0, 100]")
_REAL, _INT = Interval(float), Interval(int)
#: What the single keys accept (dotted key -> constraints, :mod:`spatialclust._validation`); the
#: ``embedding`` and ``cluster`` items are checked by :func:`spatialclust.pipeline.check_plan`.
_CONSTRAINTS: dict[str, list[Any]] = {
    "seed": [SEED],
    "input.path": [*_PATH], "input.dataset": [*_SINGLE_TABLE_DATASETS, None], "input.name": [str, None],
    "input.read": [Mapping], "input.simulate": [Mapping],
    "preprocess.normalize": ["tic", "rms", "none"], "preprocess.winsorize": [_PERCENTILE, None],
    "preprocess.scale": [bool], "preprocess.remove_empty": [bool], "preprocess.tissue_mask": ["auto", "otsu", "none"],
    "preprocess.tissue_only": [bool],
    "evaluate.isotope_delta": [POSITIVE], "evaluate.isotope_unit": ["Da", "ppm"],
    "evaluate.isotope_min_corr": [Interval(float, -1, 1)], "evaluate.n_boot": [Interval(int, 1)],
    "report.histology": [*_PATH], "report.winsorize": [_PERCENTILE, None], "report.thumbnails": [bool],
    "report.max_thumbnails": [Interval(int, 1)], "report.dpi": [Interval(int, 1)],
}


#: What the single keys of the cells configuration accept (besides the options of the methods,
#: added in :func:`validate_cells_config`): every key is checked before the cells are read.
_CELLS_CONSTRAINTS: dict[str, list[Any]] = {
    "seed": [SEED], "label_key": [str],
    "input.path": [*_PATH], "input.channels": [list, None], "input.labels": [*_PATH],
    "input.id_column": [str, None], "input.label_column": [str],
    "pca.scale": [bool], "pca.n_comps": [Interval(int, 1)],
    "metric_learning.train_fraction": [Interval(float, 0, 1, closed="right"), None],
    "metric_learning.n_components": [Interval(int, 1), None], "metric_learning.max_iter": [Interval(int, 1), None],
    "metric_learning.self_labelled.label_rep": [str],
    "metric_learning.self_labelled.confident_fraction": [Interval(float, 0, 1, closed="right")],
    "embedding_pca.n_comps": [Interval(int, 1)],
    "cluster.resolutions": [list], "cluster.stability_threshold": [Interval(float, 0, 1, closed="right")],
    "cluster.n_neighbors": [Interval(int, 2)], "cluster.neighbors_method": ["umap", "gauss"],
    "evaluate.k": [Interval(int, 1)],
    "report.umap": [bool], "report.n_examples": [Interval(int, 1)], "report.channels": [list, None],
    "report.dpi": [Interval(int, 1)],
}


#: What the single keys of the translation configuration accept; the method options (``pairing.method``,
#: ``model.presence``, ...) are checked by the estimators the pipeline builds.
_TRANSLATE_CONSTRAINTS: dict[str, list[Any]] = {
    "seed": [SEED], "device": [str],
    "data.st": [*_PATH, list], "data.msi": [*_PATH, list], "data.sections": [str, list, None], "data.simulate": [Mapping],
    "pairing.radius": [POSITIVE, None], "pairing.landmarks": [*_PATH],
    "targets.snr": [POSITIVE], "targets.quantile": [Interval(float, 0, 1, closed="neither")],
    "signatures.use": [bool], "signatures.cluster_key": [str, None], "signatures.n_genes": [Interval(int, 1)],
    "signatures.resolution": [POSITIVE],
    "model.inner_splits": [Interval(int, 2)], "model.choice_tolerance": [NON_NEGATIVE],
    "model.spatial_context": [Interval(int, 0)], "model.spatial_coordinates": [bool], "model.params": [Mapping],
    "cv.n_splits": [Interval(int, 2)], "cv.block_size": [POSITIVE, None], "cv.buffer": [NON_NEGATIVE],
    "cv.presence_models": [list], "cv.intensity_models": [list],
    "search.enabled": [bool], "search.n_splits": [Interval(int, 2)], "search.grids": [Mapping],
    "predict.imzml": [bool], "report.top_genes": [Interval(int, 1)],
}


def validate_translate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check the single keys of a merged translation configuration (see :data:`_TRANSLATE_CONSTRAINTS`)."""
    validate_sections(config, _TRANSLATE_CONSTRAINTS, error=ConfigError)
    for key in ("model.params", "search.grids"):
        section, name = key.split(".")
        for model, params in config[section][name].items():
            if not isinstance(params, Mapping):
                raise ConfigError(f"`{key}` maps `stage.model` names to mappings of parameters, "
                                  f"e.g. {{\"intensity.ridge\": {{alpha: 1.0}}}}; `{model}` has {params!r}.")
    return dict(config)


def default_config(pipeline: str = "cluster") -> dict[str, Any]:
    """The packaged default configuration of ``pipeline`` (see :data:`PIPELINE_CONFIGS`) as a dict."""
    return packaged_defaults(_pipeline(pipeline)[0])


def load_config(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    pipeline: str = "cluster",
    overrides: Sequence[str] = (),
    seed: int | None = None,
    input_path: str | Path | None = None,
) -> dict[str, Any]:
    """Resolve the configuration of a pipeline: defaults <- ``config`` <- ``input_path``/``seed`` <- ``overrides``.

    Parameters
    ----------
    config
        A YAML file or a (partial) mapping; None: the defaults.
    pipeline
        ``cluster`` (``spatialclust run``, ``demo``, ``train``), ``cells`` or ``translate``.
    overrides
        ``"section.key=value"`` assignments (value parsed as YAML), applied last.
    seed
        Overrides ``seed``.
    input_path
        Overrides ``input.path``.

    Returns
    -------
    dict
        The complete, validated configuration (list items such as ``embedding`` fully expanded).

    Raises
    ------
    ConfigError
        Unknown key, unknown method, or a value of the wrong kind; the message names the key.
    """
    resource, validate = _pipeline(pipeline)
    return validate(resolve_config(packaged_defaults(resource), config, overrides=overrides, seed=seed, input_path=input_path))


def _pipeline(name: str) -> tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]]]:
    if name not in PIPELINE_CONFIGS:
        raise ValueError(_invalid(name, "pipeline", list(PIPELINE_CONFIGS)))
    return PIPELINE_CONFIGS[name]


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a merged configuration and expand the ``embedding``/``cluster`` shorthands."""
    from .. import tl

    config = copy.deepcopy(dict(config))
    for key in ("normalize", "tissue_mask"):  # YAML null for "none"
        config["preprocess"][key] = "none" if config["preprocess"][key] is None else config["preprocess"][key]
    validate_sections(config, _CONSTRAINTS, error=ConfigError)
    _absolute_paths(config, (("input", "path"), ("report", "histology")))

    config["embedding"] = _items(config["embedding"], "embedding", tl.list_embedders())
    config["cluster"] = _items(config["cluster"], "cluster", tl.list_clusterers())
    embedding_keys = [item["key"] or f"X_{item['method']}" for item in config["embedding"]]
    duplicates = sorted({k for k in embedding_keys if embedding_keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"Embedding keys must be unique; {duplicates} occur twice. Set `key` in the `embedding` items.")
    for i, item in enumerate(config["cluster"]):
        for name in item["embeddings"] or []:
            if name not in embedding_keys and f"X_{name}" not in embedding_keys:
                raise ConfigError(_invalid(name, f"cluster[{i}].embeddings", embedding_keys))

    report = config["report"]
    figures = report["figures"] if isinstance(report["figures"], list) else None
    if figures is None or any(f not in FIGURES for f in figures):
        bad = report["figures"] if figures is None else next(f for f in figures if f not in FIGURES)
        raise ConfigError(_invalid(bad, "report.figures", FIGURES))
    figures = report["embedding_figures"] if isinstance(report["embedding_figures"], list) else None
    if figures is None or any(f not in EMBEDDING_FIGURES for f in figures):
        bad = report["embedding_figures"] if figures is None else next(f for f in figures if f not in EMBEDDING_FIGURES)
        raise ConfigError(_invalid(bad, "report.embedding_figures", EMBEDDING_FIGURES))
    zoom = report["zoom"]
    is_window = isinstance(zoom, list) and len(zoom) == 2 and all(_REAL.is_satisfied_by(v) for v in zoom) and zoom[0] < zoom[1]
    if not (zoom is None or zoom == "auto" or is_window):
        raise ConfigError(f"`report.zoom` must be auto, [low, high] (m/z, low < high) or null; got {zoom!r}.")
    rgb = report["rgb_clusters"]
    if rgb is not None and (not isinstance(rgb, list) or not 1 <= len(rgb) <= 3 or not all(_INT.is_satisfied_by(c) for c in rgb)):
        raise ConfigError(f"`report.rgb_clusters` must be a list of one to three cluster ids (integers) or null; got {rgb!r}.")
    return config


def _absolute_paths(config: dict[str, Any], keys: Sequence[tuple[str, str]]) -> None:
    """Check that the files ``config[section][key]`` exist and store them as absolute paths, so that
    the run's config.yaml can be re-run from any directory."""
    for section, key in keys:
        path = config[section][key]
        if path is not None:
            if not Path(path).exists():
                raise FileNotFoundError(f"`{section}.{key}`: {str(path)!r} does not exist.")
            config[section][key] = str(Path(path).resolve())


def _invalid(value: Any, key: str, valid: Sequence[str]) -> str:
    return str(invalid_option(value, key, list(valid)))


def _items(value: Any, section: str, registered: list[str]) -> list[dict[str, Any]]:
    """Expand and validate the items of a list section (``embedding`` or ``cluster``)."""
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"`{section}` must be a non-empty list of methods; got {value!r}.")
    items = []
    for i, item in enumerate(value):
        where = f"{section}[{i}]"
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"`{where}` must be a method name or a mapping with `method`; got {item!r}.")
        resolved = merge_config(_ITEM_DEFAULTS[section], item, where=where)
        if resolved["method"] is None:
            raise ConfigError(f"`{where}.method` is required. Valid options are: {', '.join(f'`{n}`' for n in registered)}.")
        if resolved["method"] not in registered:
            raise ConfigError(_invalid(resolved["method"], f"{where}.method", registered))
        if not isinstance(resolved["params"], Mapping):
            raise ConfigError(f"`{where}.params` must be a mapping of parameters; got {resolved['params']!r}.")
        resolved["params"] = dict(resolved["params"])
        if resolved["key"] is not None and not isinstance(resolved["key"], str):
            raise ConfigError(f"`{where}.key` must be a string or null; got {resolved['key']!r}.")
        if "embeddings" in resolved:
            embeddings = resolved["embeddings"]
            if isinstance(embeddings, str):
                resolved["embeddings"] = [embeddings]
            elif embeddings is not None and not (isinstance(embeddings, list) and all(isinstance(e, str) for e in embeddings)):
                raise ConfigError(f"`{where}.embeddings` must be a list of embedding keys or null; got {embeddings!r}.")
        items.append(resolved)
    return items


def validate_cells_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a merged cells configuration and expand the ``embedding`` items."""
    from .. import tl

    cfg = copy.deepcopy(dict(config))
    learners = tl.list_metric_learners()
    for where, methods in (("metric_learning.methods", cfg["metric_learning"]["methods"]),
                           ("metric_learning.self_labelled.methods", cfg["metric_learning"]["self_labelled"]["methods"]),
                           ("embedding_pca.metric_learning", cfg["embedding_pca"]["metric_learning"])):
        if not isinstance(methods, list):
            raise ConfigError(f"`{where}` must be a list of metric learners, got {methods!r}.")
        for method in methods:
            if method not in learners:
                raise ConfigError(_invalid(method, where, learners))
    items = cfg["embedding"] or []
    if not isinstance(items, list):
        raise ConfigError(f"`embedding` must be a list, got {items!r}.")
    expanded = []
    for i, item in enumerate(items):
        entry = {"method": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping):
            raise ConfigError(f"`embedding[{i}]` must be a method name or a mapping, got {item!r}.")
        entry = merge_config(_CELLS_EMBEDDING_ITEM, entry, where=f"embedding[{i}]")
        if entry["method"] not in tl.CELL_EMBEDDINGS:
            raise ConfigError(_invalid(entry["method"], f"embedding[{i}].method", list(tl.CELL_EMBEDDINGS)))
        if not isinstance(entry["params"], Mapping):
            raise ConfigError(f"`embedding[{i}].params` must be a mapping, got {entry['params']!r}.")
        if entry["key"] is not None:
            K.check_name(entry["key"], what=f"`embedding[{i}].key`")
        expanded.append(entry)
    cfg["embedding"] = expanded
    validate_sections(cfg, {**_CELLS_CONSTRAINTS,
        "cluster.resolution": [POSITIVE, "scan"], "cluster.criterion": [*tl.SCAN_CRITERIA],
        "metric_learning.self_labelled.resolution": [POSITIVE, "scan"],
        "features.feature_set": [*tl.FEATURE_SETS], "features.background": [*tl.BACKGROUNDS],
    }, error=ConfigError)
    resolutions = cfg["cluster"]["resolutions"]
    if not resolutions or not all(POSITIVE.is_satisfied_by(r) for r in resolutions):
        raise ConfigError(f"`cluster.resolutions` must be a non-empty list of positive numbers; got {resolutions!r}.")
    _absolute_paths(cfg, (("input", "path"), ("input", "labels")))
    return cfg


#: pipeline -> (packaged, commented default configuration; the pipeline's own checks)
PIPELINE_CONFIGS: dict[str, tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    "cluster": ("pipeline/config.yaml", validate_config),
    "cells": ("pipeline/cells.yaml", validate_cells_config),
    "translate": ("pipeline/translate.yaml", validate_translate_config),
}
