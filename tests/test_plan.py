"""Declarative parameter validation: every estimator declares its constraints, and a run checks its
whole plan before any embedding is computed (issue 16)."""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path

import matplotlib  # noqa: F401 -- imported by every CLI command on start; what the CLI test times is the check
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust._config import ConfigError
from spatialclust._validation import Check, Interval, validate_params
from spatialclust.cli import app
from spatialclust.pipeline import check_plan, load_config, run_pipeline

TINY_INPUT = {"simulate": {"shape": [16, 16], "n_patterns": 2, "ions_per_pattern": 4, "n_matrix_ions": 1}}

#: One bad parameter per case, anywhere in the plan, and the error that names it.
BAD = [
    ({"cluster": [{"method": "kmeans", "params": {"n_clusters": 0}}]},
     r"`cluster\[0\].params` \(kmeans\): `n_clusters` must be a positive integer or 'auto'; received 0\."),
    ({"cluster": ["kmeans", {"method": "spectral", "params": {"assign_labels": "qr"}}]},
     r"`cluster\[1\].params` \(spectral\): Invalid option `qr` for `assign_labels`. Valid options are: `kmeans`"),
    ({"embedding": ["regular", {"method": "simclr", "params": {"epochs": -5}}]},
     r"`embedding\[1\].params` \(simclr\): `epochs` must be an integer >= 1 or 'auto'; received -5\."),
    ({"embedding": [{"method": "darlc", "params": {"patch_size": 0}}]},
     r"`embedding\[0\].params` \(darlc\): `patch_size` must be a positive integer or 'auto'; received 0\."),
    ({"embedding": [{"method": "neural", "params": {"patch_size": -3, "patch_size_um": None}}]},
     r"`embedding\[0\].params` \(neural\): `patch_size` must be a positive integer or None; received -3\."),
    ({"embedding": [{"method": "simclr", "params": {"self_label": True, "self_label_params": {"threshold": 2}}}]},
     r"`embedding\[0\].params` \(simclr\): `threshold` must be a probability in \(0, 1\] or 'auto'; received 2\."),
    ({"cluster": [{"method": "umap_dbscan", "params": {"eps": -1.0}}]},
     r"`cluster\[0\].params` \(umap_dbscan\): `eps` must be a positive number or None; received -1.0\."),
    ({"cluster": [{"method": "leiden", "params": {"resolution": "high"}}]},
     r"`cluster\[0\].params` \(leiden\): `resolution` must be a positive number; received 'high'\."),
]


def _estimator_classes():
    return [sc.tl.embedders.get(n) for n in sc.tl.list_embedders()] + [sc.tl.clusterers.get(n) for n in sc.tl.list_clusterers()]


@pytest.fixture
def fit_spy(monkeypatch):
    """Every registered embedder's and clusterer's fit (and the data reading) recorded, never run."""
    calls: list[str] = []

    def spy(name):
        def record(self, *args, **kwargs):
            calls.append(f"{type(self).__name__}.{name}")
            raise AssertionError(f"{type(self).__name__}.{name} was called although the plan is invalid")
        return record

    for cls in _estimator_classes():
        for method in ("fit", "fit_transform", "fit_predict"):
            if hasattr(cls, method):
                monkeypatch.setattr(cls, method, spy(method))
    monkeypatch.setattr(sc.datasets, "simulate_msi", spy("simulate_msi"))
    return calls


@pytest.mark.parametrize(("config", "message"), BAD)
def test_bad_parameter_fails_before_any_work(tmp_path, fit_spy, config, message):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        run_pipeline({"input": TINY_INPUT, **config}, tmp_path / "run")
    assert time.perf_counter() - start < 1.0
    assert fit_spy == [] and not (tmp_path / "run").exists()


def test_too_many_clusters_fail_after_reading_before_any_embedding(tmp_path, monkeypatch):
    calls: list[str] = []
    for cls in _estimator_classes():
        monkeypatch.setattr(cls, "fit", lambda self, *a, **k: calls.append(type(self).__name__))
    config = {"input": TINY_INPUT, "embedding": ["regular"], "cluster": [{"method": "kmeans", "params": {"n_clusters": 500}}]}
    with pytest.raises(ValueError, match=r"Clustering `cluster_regular_kmeans` \(kmeans\): `n_clusters`=500 is more than the \d+ images"):
        run_pipeline(config, tmp_path / "run")
    assert calls == [] and not (tmp_path / "run").exists()


def test_bad_parameter_through_the_cli(tmp_path, fit_spy):
    start = time.perf_counter()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"input": TINY_INPUT}))
    result = CliRunner().invoke(app, [
        "run", str(config), "--output", str(tmp_path / "run"), "--set", "cluster=[{method: kmeans, params: {n_clusters: 0}}]",
    ])
    elapsed = time.perf_counter() - start
    assert result.exit_code == 1, result.output
    assert "Error: `cluster[0].params` (kmeans): `n_clusters` must be a positive integer or 'auto'; received 0." in result.output
    assert fit_spy == [] and not (tmp_path / "run").exists() and elapsed < 1.0


def test_default_plan_is_valid_and_checks_the_number_of_images():
    config = load_config()
    check_plan(config)
    check_plan(config, n_images=19)  # the default clusterers find the number of clusters themselves
    with pytest.raises(ConfigError, match=r"`cluster\[1\]` \(umap_dbscan\) needs at least 5 images; the data have 4"):
        check_plan(config, n_images=4)
    paper = load_config(Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "paper_defaults.yaml")
    check_plan(paper, n_images=20)
    with pytest.raises(ConfigError, match=r"`cluster\[1\]` \(kmeans\): `n_clusters`=20 is more than the 19 images"):
        check_plan(paper, n_images=19)


@pytest.mark.parametrize("cls", _estimator_classes(), ids=lambda c: c.__name__)
def test_every_estimator_declares_its_parameters(cls):
    """The shared test over every registered embedder and clusterer: each parameter is declared
    (the neural backbone may also be a Backbone object, checked when it is loaded) and the
    defaults satisfy the declaration."""
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    undeclared = set(params) - set(cls._parameter_constraints) - {"backbone"}
    assert not undeclared, f"{cls.__name__} declares no constraint for {sorted(undeclared)}"
    assert set(cls._parameter_constraints) <= set(params)
    cls()._validate_params()


def test_fit_validates_declared_parameters():
    """Outside a pipeline, fit checks the same declarations (before looking at the data)."""
    with pytest.raises(ValueError, match=r"`n_clusters` must be a positive integer or 'auto'; received 0"):
        sc.tl.create_clusterer("kmeans", n_clusters=0).fit(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Invalid option `huge` for `strength`"):
        sc.tl.create_embedder("simclr", augmentation="huge").fit(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"`contrast`.*Invalid option|Invalid option `log` for `contrast`"):
        sc.tl.create_embedder("regular", contrast="log").fit(np.zeros((3, 4, 4), np.float32))


@pytest.mark.parametrize(
    ("constraints", "value", "message"),
    [([Interval(int, 1)], 0, "`x` must be a positive integer; received 0."),
     ([Interval(int, 1)], True, "`x` must be a positive integer; received True."),
     ([Interval(int, 1)], 2.0, "`x` must be a positive integer; received 2.0."),
     ([Interval(int, 0), "auto"], -1, "`x` must be a non-negative integer or 'auto'; received -1."),
     ([Interval(int, 2), "auto", None], 1, "`x` must be an integer >= 2, 'auto' or None; received 1."),
     ([Interval(float, 0, closed="neither")], 0.0, "`x` must be a positive number; received 0.0."),
     ([Interval(float, 0)], -0.5, "`x` must be a non-negative number; received -0.5."),
     ([Interval(float, 0, 1, closed="left")], 1, "`x` must be a number in [0, 1); received 1."),
     ([Interval(float, 0, 1, closed="neither")], float("nan"), "`x` must be a number in (0, 1); received nan."),
     ([Interval(float, 1), None], 0.5, "`x` must be a number >= 1 or None; received 0.5."),
     ([bool], 1, "`x` must be True or False; received 1."),
     ([str, None], 3, "`x` must be a string or None; received 3."),
     (["a", "b", None], "c", "Invalid option `c` for `x`. Valid options are: `a`, `b`.")],
)
def test_constraint_messages(constraints, value, message):
    with pytest.raises(ValueError) as info:
        validate_params({"x": value}, {"x": constraints})
    assert str(info.value) == message


def test_constraints_accept_valid_values():
    validate_params({"a": np.int64(3), "b": 0.5, "c": None, "d": "auto", "e": np.True_, "f": 7},
                    {"a": [Interval(int, 1)], "b": [Interval(float, 0, 1)], "c": [Interval(int, 1), None],
                     "d": [Interval(int, 1), "auto"], "e": [bool], "f": [Interval(float, 0)]})
    validate_params({"undeclared": object()}, {"declared": [Interval(int)]})

    def even(value):
        if value % 2:
            raise ValueError(f"`v` must be even; received {value}.")

    validate_params({"v": 4}, {"v": [Check(even)]})
    with pytest.raises(ValueError, match="`v` must be even; received 3"):
        validate_params({"v": 3}, {"v": [Check(even)]})


@pytest.mark.parametrize(
    ("load", "config", "message"),
    [(load_config, {"preprocess": {"scale": "yes"}}, "`preprocess.scale` must be True or False; received 'yes'."),
     (load_config, {"evaluate": {"isotope_delta": 0}}, "`evaluate.isotope_delta` must be a positive number; received 0."),
     (load_config, {"report": {"dpi": 0}}, "`report.dpi` must be a positive integer; received 0."),
     (functools.partial(load_config, pipeline="cells"), {"cluster": {"resolution": 0}},
      "`cluster.resolution` must be a positive number or 'scan'; received 0."),
     (functools.partial(load_config, pipeline="cells"), {"cluster": {"neighbors_method": "knn"}},
      "Invalid option `knn` for `cluster.neighbors_method`. Valid options are: `umap`, `gauss`.")],
)
def test_config_sections_are_declared(load, config, message):
    with pytest.raises(ConfigError) as info:
        load(config)
    assert str(info.value) == message
