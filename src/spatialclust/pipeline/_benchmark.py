"""One benchmark across methods: every embedder x every clusterer on a suite of datasets.

``spatialclust benchmark [DATASETS...]`` (:func:`run_benchmark`) embeds every dataset with every
selected embedder (the raw-image baseline ``regular`` always included), clusters every embedding
with every selected clusterer (and keeps the clusters an embedder finds itself: SimCLR's
self-labeling, DARLC's mixture), scores every clustering with
:func:`spatialclust.metrics.evaluate_clustering` and writes a leaderboard (CSV + HTML) into one run
directory (:func:`spatialclust._rundir.run_directory`: built in a temporary folder, renamed into
place only when complete).

Datasets are named as

``simulated`` / ``simulated:SEED``
    :func:`spatialclust.datasets.simulate_msi` in its realistic regime (``realism="real"``) with that
    seed (the default suite is seeds 0-4);
a file path
    anything :func:`spatialclust.io.read` reads (``.imzML``, ``.h5ad``, ``.npz``, ...).

An embedder may run under several configurations in one benchmark as ``LABEL=METHOD`` (e.g.
``conditioned=regular`` with its parameters given under the label, ``conditioned.denoise=gaussian``):
the label names its rows and its parameters; the raw-image baseline stays ``regular`` at its defaults.
"""

from __future__ import annotations

import inspect
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._compat import seed_everything
from .._config import ConfigError, deep_update, parse_override, read_yaml
from .._logging import logger
from .._rundir import CONFIG_FILE, LEADERBOARD_CSV, SUMMARY_CSV, read_manifest, run_directory
from ._cluster import _own_clustering, load_input, preprocess, thinned_partners
from ._config import default_config

__all__ = ["PeakMemory", "benchmark_plan", "merge_benchmarks", "parse_method_params", "run_benchmark"]


#: The default suite: five seeds of the simulator.
DEFAULT_DATASETS = ("simulated:0", "simulated:1", "simulated:2", "simulated:3", "simulated:4")
#: Simulator of the suite: the realistic regime (13 classes, ~390 ion images of 96 x 96 px, the size
#: of seed 001's benchmark; :func:`spatialclust.datasets.simulate_msi`).
SIMULATE = {"realism": "real"}
#: ``quick``: a small realistic simulation, one seed, and short trainings (a smoke test of every method).
QUICK_SIMULATE = {"realism": "real", "shape": [32, 32], "n_patterns": 4, "n_ions": 24, "n_matrix_ions": 6}
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "simclr": {"epochs": 2, "self_label_params": {"epochs": 1}},
    "darlc": {"pretrain_epochs": 2, "cluster_epochs": 2, "gat_epochs": 20},
}
#: Parameters every run gets unless overridden: SimCLR reports its self-labeling clusters.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"simclr": {"self_label": True}}
#: Clusters when a dataset has no ground truth (the pipeline's k-means default).
DEFAULT_N_CLUSTERS = 20
#: the raw-image baseline, always part of a benchmark
BASELINE = "regular"
#: public datasets (`sc.datasets`) a benchmark accepts by name: the MSI ones
MSI_DATASETS = ("mouse_bladder",)
METRICS = ("accuracy", "nmi", "ari", "isotopic_recall", "rir", "n_isotope_pairs")
PARTNER_COLUMNS = ("partner_recall@1", "partner_recall@10")
SCORE_COLUMNS = ("accuracy", "nmi", "ari", "isotopic_recall", "rir", *PARTNER_COLUMNS)


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------


def _names(selected: Sequence[str] | None, available: list[str], what: str) -> list[str]:
    from .._registry import invalid_option

    names = list(available) if selected is None else [s for s in selected if s]
    for name in names:
        if name not in available:
            raise invalid_option(name, what, available)
    return list(dict.fromkeys(names))


def _embedder_specs(selected: Sequence[str] | None, available: list[str]) -> dict[str, str]:
    """``{label: registered method}`` of the selected embedders (``LABEL=METHOD`` or ``METHOD``), the
    raw-image baseline first."""
    from .._registry import invalid_option

    specs: dict[str, str] = {}
    for text in (list(available) if selected is None else [s.strip() for s in selected if s.strip()]):
        label, sep, method = (part.strip() for part in text.partition("="))
        method = method if sep else label
        if not label or method not in available:
            raise invalid_option(method or text, "embedders", available)
        if specs.get(label, method) != method:
            raise ValueError(f"The embedder label `{label}` is given to two methods ({specs[label]} and {method}).")
        specs[label] = method
    if specs.get(BASELINE, BASELINE) != BASELINE:
        raise ValueError(f"The label `{BASELINE}` is the raw-image baseline; give `{specs[BASELINE]}` another label.")
    return {BASELINE: BASELINE, **specs}


def _dataset(spec: str | os.PathLike, *, quick: bool, simulate: Mapping[str, Any]) -> dict[str, Any]:
    """The ``input`` section of the pipeline configuration for one dataset name."""
    text = str(spec)
    if text == "simulated" or text.startswith("simulated:"):
        seed_text = text.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise ValueError(f"Dataset {text!r}: the seed after `simulated:` must be an integer; received {seed_text!r}.") from None
        simulate = {**(QUICK_SIMULATE if quick else SIMULATE), **simulate}
        return {"path": None, "dataset": None, "name": f"simulated:{seed}", "read": {}, "simulate": simulate, "seed": seed,
                "group": "simulated"}
    if text in MSI_DATASETS:
        return {"path": None, "dataset": text, "name": text, "read": {}, "simulate": {}, "seed": None, "group": text}
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"Dataset {text!r} is neither a file, a public MSI dataset ({', '.join(MSI_DATASETS)}) nor "
            "`simulated[:SEED]`; give an .imzML, .h5ad, .npz, .npy or .tif file, or `simulated:0` for the simulator."
        )
    return {"path": str(path), "dataset": None, "name": path.name, "read": {}, "simulate": {}, "seed": None, "group": path.name}


def parse_method_params(assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Method parameters from command-line assignments ``"method.param=value"`` (value read as
    YAML; deeper keys nest: ``simclr.self_label_params.epochs=3``)."""
    out: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        dotted, sep, _ = assignment.partition("=")
        keys = [k.strip() for k in dotted.split(".")]
        if not sep or len(keys) < 2 or not all(keys):
            raise ConfigError(f"Parameter {assignment!r} must look like `method.param=value` (e.g. simclr.epochs=20).")
        out = deep_update(out, parse_override(assignment))
    return out


def _accepts(factory: Any, name: str) -> bool:
    return name in inspect.signature(factory).parameters


def benchmark_plan(
    datasets: Sequence[str | os.PathLike] | None = None,
    *,
    embedders: Sequence[str] | None = None,
    clusterers: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    n_clusters: int | None = None,
    quick: bool = False,
    budget: float | None = None,
    seed: int = 0,
    simulate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve and validate a benchmark before any work: datasets, methods and their parameters.

    Parameters are those of :func:`run_benchmark`. Unknown embedders or clusterers, a missing
    file, a parameter a method does not take, an unknown simulator parameter and a bad budget raise
    here (a ValueError, FileNotFoundError or :class:`~spatialclust._config.ConfigError` naming it).

    Returns
    -------
    The benchmark configuration (written to the run directory's ``config.yaml``).
    """
    from .. import datasets as sc_datasets
    from .. import tl

    simulate = dict(simulate or {})
    unknown_sim = sorted(set(simulate) - (set(inspect.signature(sc_datasets.simulate_msi).parameters) - {"seed"}))
    if unknown_sim:
        raise ConfigError(f"`simulate` takes parameters of `sc.datasets.simulate_msi` other than `seed` (the dataset's "
                          f"seed); received {unknown_sim}.")
    specs = list(datasets) if datasets else list(DEFAULT_DATASETS[:1] if quick else DEFAULT_DATASETS)
    suite = [_dataset(spec, quick=quick, simulate=simulate) for spec in specs]
    names = [d["name"] for d in suite]
    if len(set(names)) != len(names):
        raise ValueError(f"Each dataset may be given once; received {names}.")
    embedder_methods = _embedder_specs(embedders, tl.list_embedders())
    chosen_embedders = list(embedder_methods)
    chosen_clusterers = _names(clusterers, tl.list_clusterers(), "clusterers")
    params = {str(k): dict(v) for k, v in (params or {}).items()}
    unknown = sorted(set(params) - set(chosen_embedders) - set(chosen_clusterers))
    if unknown:
        raise ConfigError(f"Parameters for {unknown}, which are not among the selected methods "
                          f"{chosen_embedders + chosen_clusterers}.")
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 2):
        raise ValueError(f"`n_clusters` must be an integer >= 2 or None (number of true classes); received {n_clusters!r}.")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ValueError(f"`budget` must be a positive number of seconds or None; received {budget!r}.")
    method_params: dict[str, dict[str, Any]] = {}
    methods = {**embedder_methods, **{name: name for name in chosen_clusterers}}
    for kind, registry, chosen in (("embedder", tl.embedders, chosen_embedders), ("clusterer", tl.clusterers, chosen_clusterers)):
        for name in chosen:
            method = methods[name]
            merged = deep_update({**DEFAULT_PARAMS.get(method, {}), **(QUICK_PARAMS.get(method, {}) if quick else {})},
                                  params.get(name, {}))
            accepted = inspect.signature(registry.get(method)).parameters
            bad = sorted(k for k in merged if k not in accepted)
            if bad:
                raise ConfigError(f"The {kind} `{name}` does not take the parameter(s) {bad}; it takes {sorted(accepted)}.")
            method_params[name] = merged
    defaults = default_config()
    return {
        "seed": int(seed),
        "quick": bool(quick),
        "budget_s": None if budget is None else float(budget),
        "n_clusters": n_clusters,
        "datasets": suite,
        "embedders": chosen_embedders,
        "embedder_methods": embedder_methods,
        "clusterers": chosen_clusterers,
        "params": method_params,
        "preprocess": defaults["preprocess"],
        "evaluate": {**defaults["evaluate"], "n_boot": 200},
    }


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


def _rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux ``/proc``), None where unavailable."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak resident memory above the start of a ``with`` block, in MB (``peak_mb``).

    A background thread samples the resident set size every ``interval`` seconds (Linux); where
    that is unavailable the process's high-water mark (``resource.getrusage``) is used, which can
    only report growth beyond every earlier peak. Covers memory that ``tracemalloc`` does not see
    (PyTorch's and BLAS's allocations).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        self._start = _rss_mb()
        self._start_maxrss = self._maxrss()
        self._peak = self._start or 0.0
        self._stop = threading.Event()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _maxrss() -> float:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_mb() or 0.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._start is None:
            self.peak_mb = max(0.0, self._maxrss() - self._start_maxrss)
            return
        self._thread.join()
        self._peak = max(self._peak, _rss_mb() or 0.0)
        self.peak_mb = max(0.0, self._peak - self._start)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def _truth_classes(adata) -> np.ndarray | None:
    if K.PATTERN not in adata.var:
        return None
    return adata.var[K.PATTERN].to_numpy()


def _method_params(registry: Any, name: str, cfg: Mapping[str, Any], *, seed: int, n_clusters: int,
                   method: str | None = None) -> dict[str, Any]:
    """The configured parameters of a method (``name``: its label; ``method``: its registered name,
    default the label) plus the run's seed and number of clusters where it takes them."""
    factory = registry.get(method or name)
    params = dict(cfg["params"].get(name, {}))
    for key, value in (("seed", seed), ("random_state", seed), ("n_clusters", n_clusters)):
        if _accepts(factory, key):
            params.setdefault(key, value)
    return params


def _failure(err: BaseException) -> str:
    logger.debug("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    return f"failed: {type(err).__name__}: {err}"


def _score(adata, key: str, cfg: Mapping[str, Any], *, seed: int) -> dict[str, Any]:
    from .. import metrics

    ev = cfg["evaluate"]
    values = metrics.evaluate_clustering(
        adata, key, isotope_delta=ev["isotope_delta"], isotope_unit=ev["isotope_unit"],
        isotope_min_corr=ev["isotope_min_corr"], n_boot=ev["n_boot"], random_state=seed,
    )
    return {"n_clusters_found": values["n_clusters"], "noise_images": values["noise_size"],
            **{m: values.get(m) for m in METRICS}}


def _benchmark_dataset(item: Mapping[str, Any], cfg: Mapping[str, Any], *, deadline: float | None) -> list[dict[str, Any]]:
    """Every row of one dataset."""
    from .. import tl

    seed = cfg["seed"] if item["seed"] is None else item["seed"]
    seed_everything(seed)
    start = time.perf_counter()
    adata, _ = load_input(item, seed=seed)
    preprocess(adata, cfg["preprocess"])
    truth = _truth_classes(adata)
    k = cfg["n_clusters"] or (int(pd.unique(truth).size) if truth is not None else DEFAULT_N_CLUSTERS)
    logger.info("Benchmark %s: %d images, %d clusters (%s), read and preprocessed in %.1f s.", item["name"], adata.n_vars,
                k, "true classes" if truth is not None and cfg["n_clusters"] is None else "given", time.perf_counter() - start)
    base = {"dataset": item["name"], "group": item["group"], "n_images": int(adata.n_vars), "n_clusters": k}
    rows: list[dict[str, Any]] = []
    for name in cfg["embedders"]:
        if deadline is not None and time.perf_counter() > deadline:
            rows.append({**base, "embedder": name, "clusterer": "*", "status": "skipped: budget spent"})
            continue
        key = K.embedding_key(name)
        with PeakMemory() as memory:
            start = time.perf_counter()
            try:
                method = cfg["embedder_methods"][name]
                embedder = tl.create_embedder(method, **_method_params(tl.embedders, name, cfg, seed=seed, n_clusters=k,
                                                                       method=method))
                tl.embed(adata, embedder, key_added=key)
                failed = None
            except Exception as err:  # one failing method must not stop the benchmark
                failed = _failure(err)
            embed_s = time.perf_counter() - start
        embedded = {**base, "embedder": name, "embed_s": round(embed_s, 2), "embed_peak_mb": _round(memory.peak_mb)}
        if failed is not None:
            logger.warning("Benchmark %s: embedder %s %s", item["name"], name, failed)
            rows.append({**embedded, "clusterer": "*", "status": failed})
            continue
        try:
            partners = thinned_partners(adata, [(key, embedder)], cfg).get(key, {})
        except Exception as err:  # the check embeds twice the images: report, do not stop
            logger.warning("Benchmark %s: thinned-partner check of %s %s", item["name"], name, _failure(err))
            partners = {}
        embedded.update({column: partners.get(column) for column in PARTNER_COLUMNS})
        own = _own_clustering(adata, key, embedder, seconds=embed_s)
        jobs = [(c, _method_params(tl.clusterers, c, cfg, seed=seed, n_clusters=k)) for c in cfg["clusterers"]]
        if own is not None:
            jobs.append(("own", None))
        for clusterer, params in jobs:
            row = {**embedded, "clusterer": clusterer}
            cluster_key = own["key"] if params is None else f"cluster_{name}_{clusterer}"
            with PeakMemory() as memory:
                start = time.perf_counter()
                try:
                    if params is not None:
                        tl.cluster(adata, tl.create_clusterer(clusterer, **params), use_rep=key, key_added=cluster_key)
                    row["cluster_s"] = round(time.perf_counter() - start, 2) if params is not None else 0.0
                    row.update(_score(adata, cluster_key, cfg, seed=seed), status="ok")
                except Exception as err:
                    row["status"] = _failure(err)
                    logger.warning("Benchmark %s: %s + %s %s", item["name"], name, clusterer, row["status"])
            row["cluster_peak_mb"] = _round(memory.peak_mb)
            row["seconds"] = round(row["embed_s"] + row.get("cluster_s", 0.0), 2)
            rows.append(row)
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


COLUMNS = (
    "dataset", "group", "embedder", "clusterer", "n_images", "n_clusters", "n_clusters_found", "noise_images",
    *METRICS, *PARTNER_COLUMNS, "embed_s", "cluster_s", "seconds", "embed_peak_mb", "cluster_peak_mb", "status",
)


def summarise(board: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over the datasets of a group (e.g. the simulator's seeds) of
    every score, per embedder x clusterer, best accuracy (else isotopic recall) first."""
    ok = board[board["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["group", "embedder", "clusterer", "n_datasets"])
    scores = [c for c in (*SCORE_COLUMNS, "seconds") if c in ok and ok[c].notna().any()]
    grouped = ok.groupby(["group", "embedder", "clusterer"], sort=False)
    out = grouped.size().rename("n_datasets").to_frame()
    for column in scores:
        values = grouped[column].agg(["mean", "std"])
        out[column] = values["mean"]
        out[f"{column}_sd"] = values["std"]
    order = [c for c in ("accuracy", "isotopic_recall") if c in out]
    out = out.reset_index()
    return out.sort_values(["group", *order], ascending=[True] + [False] * len(order), kind="stable")


def write_leaderboard(run_dir: Path, board: pd.DataFrame, cfg: Mapping[str, Any]) -> None:
    """``leaderboard.csv`` (one row per dataset x embedder x clusterer), ``summary.csv`` (mean and
    sd over the datasets of a group) and ``leaderboard.html``; logs the summary's top rows."""
    from ..report import write_leaderboard_report

    board.to_csv(run_dir / LEADERBOARD_CSV, index=False)
    summary = summarise(board)
    summary.to_csv(run_dir / SUMMARY_CSV, index=False)
    write_leaderboard_report(run_dir, cfg, board=board, summary=summary, baseline=BASELINE)
    if not summary.empty:
        logger.info("Leaderboard:\n%s", summary.head(10).to_string(index=False))


def run_benchmark(
    datasets: Sequence[str | os.PathLike] | None = None,
    output_dir: str | Path = "spatialclust_benchmark",
    *,
    embedders: Sequence[str] | None = None,
    clusterers: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    n_clusters: int | None = None,
    quick: bool = False,
    budget: float | None = None,
    seed: int = 0,
    simulate: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Benchmark every embedder x clusterer on a suite of datasets and write a leaderboard.

    Parameters
    ----------
    datasets
        ``"simulated"``, ``"simulated:SEED"`` or file paths (``.imzML``, ``.h5ad``, ``.npz``, ...);
        None: the simulator's seeds 0-4 (seed 0 with ``quick``). Every dataset is read and
        preprocessed as ``spatialclust run`` does (TIC, winsorise 95, scale).
    output_dir
        Run directory to create (refused if it holds something, unless ``overwrite``).
    embedders, clusterers
        Registered names to run (None: all); ``regular`` (raw images) is always included. An
        embedder may be given as ``LABEL=METHOD`` (e.g. ``conditioned=regular``) to run one method
        under several parameter sets; its rows and its ``params`` entry use the label.
    params
        Parameters per method name (or embedder label), e.g. ``{"simclr": {"epochs": 20}, "kmeans": {"n_init": 20}}``.
        SimCLR runs with ``self_label=True`` unless told otherwise.
    n_clusters
        Clusters for every method that takes a number; None: the number of true classes
        (``var["pattern"]``) where known, else 20.
    quick
        Small realistic simulation (32 x 32 px, 4 patterns, ~40 images), one seed by default, and short trainings
        (SimCLR 2 epochs + 1 self-labeling epoch, DARLC 2 + 2 epochs): a smoke test of every method.
    budget
        Seconds; once spent, the remaining embedders are skipped (rows with status
        ``skipped: budget spent``); a started method always finishes.
    seed
        Seed of every random step (a simulated dataset uses its own seed).
    simulate
        Parameters of :func:`spatialclust.datasets.simulate_msi` for the ``simulated`` datasets on
        top of the realistic regime, e.g. ``{"n_ions": 100, "n_matrix_ions": 6}`` for the small
        configuration of docs/benchmarks.md.
    overwrite
        Replace an existing run directory (only once the new one is complete).

    Returns
    -------
    The run directory, holding ``config.yaml``, ``run.log``, ``run.json``, ``leaderboard.csv``
    (one row per dataset x embedder x clusterer: ACC, NMI, ARI where labels exist, isotopic recall,
    RIR, number of isotope pairs, wall seconds of embedding and clustering, peak memory in MB, and
    ``status``: ``ok``, ``failed: ...`` or ``skipped: ...``), ``summary.csv`` (mean and sd over the
    datasets of a group, e.g. the simulator's seeds) and ``leaderboard.html``.
    """
    cfg = benchmark_plan(datasets, embedders=embedders, clusterers=clusterers, params=params,
                         n_clusters=n_clusters, quick=quick, budget=budget, seed=seed, simulate=simulate)
    output_dir = Path(output_dir)
    with run_directory(output_dir, cfg, command="benchmark", overwrite=overwrite) as tmp:
        deadline = None if cfg["budget_s"] is None else time.perf_counter() + cfg["budget_s"]
        rows: list[dict[str, Any]] = []
        for item in cfg["datasets"]:
            rows.extend(_benchmark_dataset(item, cfg, deadline=deadline))
        board = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
        write_leaderboard(tmp, board, cfg)
    return output_dir


#: What runs merged into one leaderboard must share (the datasets and methods may differ).
SHARED_SETTINGS = ("seed", "quick", "n_clusters", "preprocess", "evaluate")


def _finished_benchmark(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The configuration and leaderboard of a complete ``spatialclust benchmark`` run directory."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest.get("command") != "benchmark" or manifest.get("status") != "complete":
        found = "no run directory" if manifest is None else f"a `{manifest.get('command')}` run, status `{manifest.get('status')}`"
        raise ValueError(f"{str(run_dir)!r} is not a finished `spatialclust benchmark` run directory ({found}).")
    return read_yaml(run_dir / CONFIG_FILE), pd.read_csv(run_dir / LEADERBOARD_CSV)


def _merged_config(configs: Sequence[Mapping[str, Any]], run_dirs: Sequence[Path]) -> dict[str, Any]:
    """One configuration of several benchmark runs; ConfigError where they do not measure the same thing."""
    first, where = configs[0], str(run_dirs[0])
    merged = {**first, "budget_s": None, "datasets": [], "embedders": [], "embedder_methods": {}, "clusterers": [],
              "params": {}, "merged_from": [str(p) for p in run_dirs]}
    simulators: dict[str, tuple[Any, str]] = {}
    for cfg, run_dir in zip(configs, map(str, run_dirs)):
        for key in SHARED_SETTINGS:
            if cfg.get(key) != first.get(key):
                raise ConfigError(f"Runs {where!r} and {run_dir!r} differ in `{key}` ({first.get(key)!r} vs "
                                  f"{cfg.get(key)!r}); only runs of the same settings are merged.")
        for label, method in cfg["embedder_methods"].items():
            if merged["embedder_methods"].setdefault(label, method) != method:
                raise ConfigError(f"The embedder `{label}` is `{merged['embedder_methods'][label]}` in one run and "
                                  f"`{method}` in {run_dir!r}.")
        for name, params in cfg["params"].items():
            if merged["params"].setdefault(name, params) != params:
                raise ConfigError(f"Runs {where!r} and {run_dir!r} give `{name}` different parameters "
                                  f"({merged['params'][name]!r} vs {params!r}).")
        for item in cfg["datasets"]:
            simulate, seen_in = simulators.setdefault(item["group"], (item["simulate"], run_dir))
            if item["simulate"] != simulate:
                raise ConfigError(f"The `{item['group']}` datasets of {seen_in!r} and {run_dir!r} were simulated "
                                  f"differently ({simulate!r} vs {item['simulate']!r}); their mean would mix them.")
        merged["datasets"].extend(cfg["datasets"])
        merged["embedders"].extend(e for e in cfg["embedders"] if e not in merged["embedders"])
        merged["clusterers"].extend(c for c in cfg["clusterers"] if c not in merged["clusterers"])
    names = [item["name"] for item in merged["datasets"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"The dataset(s) {repeated} are in more than one of the runs; each may be counted once.")
    return merged


def merge_benchmarks(run_dirs: Sequence[str | os.PathLike], output_dir: str | Path = "spatialclust_benchmark", *,
                     overwrite: bool = False) -> Path:
    """One leaderboard from several finished benchmark runs (e.g. one seed per run), computing nothing.

    Long benchmarks are safer run one dataset at a time; this writes the leaderboard those runs
    would have written together: the rows of all of them, and the mean and sd over the datasets of
    a group. The runs may hold different datasets and methods (``n_datasets`` in ``summary.csv``
    says over how many datasets each row is averaged), but must share the seed, the
    preprocessing, the evaluation, the number of clusters, the parameters of every method they
    share and, per group of datasets, the simulator's parameters.

    Parameters
    ----------
    run_dirs
        Run directories written by :func:`run_benchmark` (complete runs only).
    output_dir
        Run directory to create (refused if it holds something, unless ``overwrite``).
    overwrite
        Replace an existing run directory (only once the new one is complete).

    Returns
    -------
    The run directory, with ``config.yaml`` (the merged configuration; ``merged_from`` lists the
    runs), ``run.log``, ``run.json``, ``leaderboard.csv``, ``summary.csv`` and ``leaderboard.html``
    as :func:`run_benchmark` writes them.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("Give at least one benchmark run directory to merge.")
    configs, boards = zip(*(_finished_benchmark(p) for p in run_dirs))
    cfg = _merged_config(configs, run_dirs)
    with run_directory(output_dir, cfg, command="benchmark", overwrite=overwrite, inputs=run_dirs) as tmp:
        board = pd.concat(boards, ignore_index=True).reindex(columns=list(COLUMNS))
        logger.info("Merged %d benchmark runs (%d datasets).", len(run_dirs), len(cfg["datasets"]))
        write_leaderboard(tmp, board, cfg)
    return Path(output_dir)
