"""The clustering pipeline (``spatialclust run``, ``demo``): read -> preprocess -> embed -> cluster ->
evaluate -> figures -> report.

Implements the four pipelines of Zhang et al. (2024, seed 000) (regular/neural ion images x
UMAP-DBSCAN/k-means) and any other combination of registered embedders and clusterers, and writes
everything into one run directory (built in a temporary folder and renamed into place only when
complete, see :func:`spatialclust._rundir.run_directory`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys as K
from .._compat import seed_everything
from .._compute import check_compute, chunked, compute_context, store_matrix
from .._config import ConfigError
from .._logging import logger, progress
from .._rundir import (
    CHECKPOINTS_DIR, CLUSTERING_FIGURE, CLUSTERS_FILE, COMPARISON_FILE, EMBEDDINGS, EMBEDDINGS_FIGURE, EMBEDDINGS_FILE,
    FIGURES_DIR, MATRIX_STORE, METRICS_FILE, REPORT_FILE, RESULTS_FILE, run_directory,
)
from .._validation import check_unique_names
from ..report import CLUSTERING_NAMES, clustering_title
from ._config import load_config
from ._plan import check_plan

__all__ = ["load_input", "preprocess", "run_pipeline", "write_results"]


def run_pipeline(
    config: str | Path | Mapping[str, Any] | None = None,
    output_dir: str | Path = "spatialclust_run",
    *,
    overwrite: bool = False,
    command: str = "run",
) -> Path:
    """Run the whole clustering pipeline and write a run directory.

    Parameters
    ----------
    config
        A pipeline configuration: YAML file, (partial) mapping, or None for the packaged defaults
        (``spatialclust/pipeline/config.yaml``, which documents every key). Unknown keys and
        unknown methods raise :class:`~spatialclust._config.ConfigError` before any work is done.
    output_dir
        Run directory to create. An existing non-empty directory is refused unless ``overwrite``.
    overwrite
        Replace an existing run directory (only once the new run has completed).
    command
        Name of the command recorded in ``run.json``.

    Returns
    -------
    pathlib.Path
        The run directory, holding

        ``config.yaml``
            The resolved configuration (re-runnable with ``spatialclust run config.yaml``).
        ``run.log``, ``run.json``
            Debug log; command, version, duration and status.
        ``results.h5ad``
            The preprocessed dataset with ``layers["raw"]``, every embedding in ``varm`` and every
            clustering in ``var`` (keys ``cluster_<embedding>_<clusterer>``, and
            ``cluster_<embedding>_own`` for the clusters an embedder finds while it learns: DARLC's
            Module II, SimCLR's self-labeling) and ``uns``. For a chunked (dask) ``X`` without its
            matrices: ``X`` is in ``preprocessed.zarr``, the raw intensities in the input store.
        ``preprocessed.zarr``
            Chunked runs only: the preprocessed ``X``, a float32 Zarr array written once after the
            preprocessing (every later pass reads it; ``dask.array.from_zarr`` opens it).
        ``clusters.csv``
            One row per feature (m/z): its cluster in every clustering and the Pearson correlation
            of its image with its cluster's mean image (``<key>_corr``).
        ``metrics.json``
            Every metric of every clustering (:func:`spatialclust.metrics.evaluate_clustering`)
            plus per-cluster sizes and mean member correlations.
        ``comparison.csv``
            One row per clustering, like Table 1 of seed 000 (dataset, clustering, images,
            clusters, RIR, noise images, ...).
        ``checkpoints/<embedding>/``
            Models trained per dataset that can be saved (DARLC), reloadable with
            ``DARLCEmbedder.from_checkpoint``.
        ``figures/*.png``, ``report.html``
            Figures of every clustering and the self-contained HTML report.
    """
    from .. import pp, tl
    from ..report import write_run_report

    cfg = load_config(config)
    check_plan(cfg)  # every embedder's and clusterer's parameters, before the data are read (issue 16)
    output_dir = Path(output_dir)
    plans = _plan(cfg)  # builds every estimator first: bad parameters fail before any work
    compute = check_compute(cfg["compute"])
    inputs = (cfg["input"]["path"], cfg["report"]["histology"])
    with run_directory(output_dir, cfg, command=command, overwrite=overwrite, inputs=inputs) as tmp, \
            compute_context(compute):
        seed = cfg["seed"]
        seed_everything(seed)
        adata, dataset = load_input(cfg["input"], seed=seed)
        chunked(adata, compute["chunk_pixels"])
        preprocess(adata, cfg["preprocess"])
        if pp.is_dask(adata.X):  # computed once; every later pass reads it instead of the raw store
            store_matrix(adata, tmp / MATRIX_STORE)
        # what cannot run on this many images fails before the first embedding starts
        for key, embedder in plans["embeddings"]:
            tl.check_n_images(embedder, adata.n_vars, where=f"Embedding `{key}`")
        for item in plans["clusterings"]:
            tl.check_n_images(item["estimator"], adata.n_vars, where=f"Clustering `{item['key']}` ({item['method']})")
        timings: dict[str, float] = {}
        clusterings = []
        for key, embedder in progress(plans["embeddings"], desc="embedding", total=len(plans["embeddings"])):
            start = time.perf_counter()
            tl.embed(adata, embedder, key_added=key)
            timings[key] = time.perf_counter() - start
            if hasattr(embedder, "save"):  # a model trained on this dataset: keep it with the run
                embedder.save(tmp / CHECKPOINTS_DIR / K.check_name(key, what="An embedding key (the checkpoint folder name)"))
                adata.uns[key]["checkpoint"] = f"{CHECKPOINTS_DIR}/{key}"
            own = _own_clustering(adata, key, embedder, seconds=timings[key])
            if own is not None:
                clusterings.append(own)
        for item in progress(plans["clusterings"], desc="clustering", total=len(plans["clusterings"])):
            start = time.perf_counter()
            tl.cluster(adata, item["estimator"], use_rep=item["use_rep"], key_added=item["key"])
            clusterings.append({**item, "seconds": time.perf_counter() - start + timings[item["use_rep"]]})
        partners = thinned_partners(adata, plans["embeddings"], cfg)
        results = evaluate(adata, clusterings, cfg, dataset=dataset, partners=partners)
        write_tables(tmp, adata, results)
        figures = make_figures(tmp / FIGURES_DIR, adata, clusterings, cfg["report"], means=results["means"],
                               correlations=results["correlations"])
        table = embedding_table(adata, [key for key, _ in plans["embeddings"]], truth=results["truth"], seed=seed)
        if table is not None:
            table.to_csv(tmp / EMBEDDINGS_FILE, index=False)
        figures[EMBEDDINGS] = make_embedding_figures(
            tmp / FIGURES_DIR, adata, [key for key, _ in plans["embeddings"]], cfg, truth=results["truth"]
        )
        write_results(tmp / RESULTS_FILE, adata)
        write_run_report(tmp, adata=adata, config=cfg, figures=figures, correlations=results["correlations"],
                         means=results["means"])
        logger.info("Report: %s", (output_dir / REPORT_FILE).resolve())
    return output_dir


def _own_clustering(adata: AnnData, key: str, embedder: Any, *, seconds: float) -> dict[str, Any] | None:
    """The clusters an embedder found while learning (DARLC's Module II, SimCLR's self-labeling),
    stored as clustering ``cluster_<embedding>_own`` and evaluated with the others."""
    labels = getattr(embedder, "labels_", None)
    if labels is None:
        return None
    from .. import tl

    name = key.removeprefix("X_")
    cluster_key = f"cluster_{name}_own"
    tl.record_clusters(adata, cluster_key, labels, method="own", use_rep=key, params=adata.uns[key][K.PARAMS])
    return {"key": cluster_key, "use_rep": key, "embedding": name, "method": "own", "estimator": None, "seconds": seconds}


def _call(step, what: str, errors: tuple[type[Exception], ...] = (TypeError,)):
    """Run a step taking free-form configuration parameters; a TypeError (unknown or missing
    parameter; also the other ``errors``) is reported as a configuration error naming ``what``."""
    try:
        return step()
    except errors as err:
        raise ConfigError(f"{what} failed: {err}") from err


def _plan(cfg: Mapping[str, Any]) -> dict[str, list]:
    """Embedding and clusterer instances (validated params, seeded) and the unique cluster keys."""
    from .. import tl

    seed = cfg["seed"]
    embeddings: list[tuple[str, Any]] = []
    for i, item in enumerate(cfg["embedding"]):
        params = _seeded(tl.embedders.get(item["method"]), item["params"], seed)
        embedder = _call(lambda: tl.create_embedder(item["method"], **params), f"`embedding[{i}].params`")
        key = K.check_name(item["key"] or K.embedding_key(item["method"]), what=f"`embedding[{i}].key`")
        embeddings.append((key, embedder))
    clusterings: list[dict[str, Any]] = []
    for i, item in enumerate(cfg["cluster"]):
        wanted = item["embeddings"]
        for key, _ in embeddings:
            name = key.removeprefix("X_")
            if wanted is not None and key not in wanted and name not in wanted:
                continue
            params = _seeded(tl.clusterers.get(item["method"]), item["params"], seed)
            estimator = _call(lambda: tl.create_clusterer(item["method"], **params), f"`cluster[{i}].params`")
            template = item["key"] or "cluster_{embedding}_{method}"
            try:
                cluster_key = template.format(embedding=name, method=item["method"])
            except (KeyError, IndexError) as err:
                raise ConfigError(f"`cluster[{i}].key` may only use {{embedding}} and {{method}}; got {template!r}.") from err
            K.check_name(cluster_key, what=f"`cluster[{i}].key` ({template!r} for {key})")
            clusterings.append({"key": cluster_key, "use_rep": key, "embedding": name, "method": item["method"],
                                "estimator": estimator})
    keys = [c["key"] for c in clusterings]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"Cluster keys must be unique; {duplicates} occur more than once. Use {{embedding}} "
                          "and {method} in the `key` of the `cluster` items.")
    if not clusterings:
        raise ConfigError("No clustering to run: every `cluster[i].embeddings` excludes every embedding.")
    return {"embeddings": embeddings, "clusterings": clusterings}


def _seeded(factory: Any, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``params`` plus the run's seed as ``random_state`` (or ``seed``) when the factory takes one
    and the configuration did not set it."""
    params = dict(params)
    accepted = inspect.signature(factory).parameters
    name = next((n for n in ("random_state", "seed") if n in accepted), None)
    if name is not None and name not in params:
        params[name] = seed
    return params


def load_input(section: Mapping[str, Any], *, seed: int) -> tuple[AnnData, str]:
    """The dataset of the ``input`` section (a file, or a simulation) and its display name."""
    from .. import datasets, io

    if section["dataset"] is not None:
        name = section["dataset"]
        adata = _call(lambda: datasets.load(name, path=section["path"], **section["read"]), f"loading dataset {name!r} with `input.read`")
        return adata, section["name"] or name
    if section["path"] is None:
        if section["read"]:
            raise ConfigError(f"`input.read` ({sorted(section['read'])}) sets options of the file reader, but no input file or "
                              "`input.dataset` is given, so the data would be simulated: give the file (`spatialclust run FILE`) "
                              "or drop `input.read`.")
        logger.info("Simulating an MSI dataset (seed %d).", seed)
        # the simulator reads no file: any ValueError is about a parameter of `input.simulate`
        adata = _call(lambda: datasets.simulate_msi(seed=seed, **section["simulate"]), "`input.simulate`",
                      errors=(TypeError, ValueError))
        return adata, section["name"] or "simulated"
    path = Path(section["path"])
    logger.info("Reading %s.", path)
    adata = _call(lambda: io.read(path, **section["read"]), f"reading {str(path)!r} with `input.read`")
    if adata.n_vars < 2:
        raise ValueError(f"Input {str(path)!r} holds {adata.n_vars} feature image(s); clustering needs at least 2.")
    check_unique_names(adata.var_names, f"The feature images of input {str(path)!r}")
    return adata, section["name"] or path.name


def preprocess(adata: AnnData, section: Mapping[str, Any]) -> None:
    """Tissue mask, then :func:`spatialclust.pp.preprocess_ion_images` (raw kept in ``layers["raw"]``)."""
    from .. import pp

    n_read = adata.n_vars
    mode = section["tissue_mask"]
    if mode == "none" and K.TISSUE in adata.obs:
        del adata.obs[K.TISSUE]
    elif mode == "otsu" or (mode == "auto" and K.TISSUE not in adata.obs):
        pp.tissue_mask(adata, method="otsu")
    pp.preprocess_ion_images(
        adata,
        normalize=section["normalize"],
        winsorize=section["winsorize"],
        scale=section["scale"],
        remove_empty=section["remove_empty"],
        tissue_only=section["tissue_only"],
        keep_raw=True,
    )
    if adata.n_vars < n_read:
        logger.warning("Preprocessing removed %d of the %d feature images (empty or constant on the tissue, "
                       "`preprocess.remove_empty`); %d are clustered.", n_read - adata.n_vars, n_read, adata.n_vars)
    if adata.n_vars < 2:
        raise ValueError(f"{adata.n_vars} of the {n_read} feature image(s) left after preprocessing; clustering needs at least 2.")


#: Images of the thinned-partner check on a chunked (dask) X: a random sample of at most this many,
#: of at most ``THINNED_SAMPLE_ENTRIES`` raw entries but at least ``THINNED_MIN_SAMPLE`` images (the
#: check holds the sample and its partners, preprocessed, in memory: ~1 GB at 500,000 pixels).
THINNED_SAMPLE, THINNED_MIN_SAMPLE, THINNED_SAMPLE_ENTRIES = 200, 100, 2**25


def thinned_partners(adata: AnnData, embeddings: list, cfg: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Partner recall@1/@10 of every embedding on abundance-thinned partners of the raw counts
    (:func:`spatialclust.metrics.thinned_partner_check`, each embedder as fitted in the run);
    empty without ``layers["raw"]``. For a chunked (dask) X, on a random sample of the images
    (``THINNED_SAMPLE``), loaded from the chunks."""
    from .. import metrics, pp

    if K.RAW not in adata.layers:
        return {}
    n_images = None
    if pp.is_dask(adata.layers[K.RAW]):  # the check re-preprocesses thinned images in memory: a sample of them
        n_images = min(THINNED_SAMPLE, max(THINNED_MIN_SAMPLE, THINNED_SAMPLE_ENTRIES // max(adata.n_obs, 1)))
        logger.info("Chunked X: the thinned-partner check on a random sample of %d of the %d images.",
                    min(n_images, adata.n_vars), adata.n_vars)
    section = cfg["preprocess"]
    preprocess = {name: section[name] for name in ("normalize", "winsorize", "scale", "tissue_only")}
    return {
        key: {name: value for name, value in metrics.thinned_partner_check(
            adata, embedder=embedder, clusterer=None, layer=K.RAW, preprocess=preprocess, refit=False,
            n_images=n_images, seed=cfg["seed"],
        ).to_dict().items() if name.startswith("partner_recall")}
        for key, embedder in embeddings
    }  # fmt: skip


def evaluate(
    adata: AnnData, clusterings: list[dict[str, Any]], cfg: Mapping[str, Any], *, dataset: str,
    partners: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Metrics, cluster mean images and member correlations of every clustering (with the partner
    recall of its embedding from :func:`thinned_partners`)."""
    from .. import metrics, pl

    section = cfg["evaluate"]
    winsorize = cfg["report"]["winsorize"]
    per_key: dict[str, dict[str, Any]] = {}
    means, correlations, rows = {}, {}, []
    for item in progress(clusterings, desc="evaluating", total=len(clusterings)):
        key = item["key"]
        values = metrics.evaluate_clustering(
            adata, key, truth=section["truth"], isotope_delta=section["isotope_delta"],
            isotope_unit=section["isotope_unit"], isotope_min_corr=section["isotope_min_corr"],
            n_boot=section["n_boot"], random_state=cfg["seed"],
        )
        values.update((partners or {}).get(item["use_rep"], {}))
        means[key] = pl.cluster_means(adata, key, winsorize=winsorize)
        correlations[key] = pl.mean_image_correlation(adata, key, winsorize=winsorize, means=means[key])
        labels = adata.var[key].to_numpy()
        clusters = [
            {"cluster": int(c), "size": int((labels == c).sum()),
             "mean_correlation": finite_mean(correlations[key][labels == c]),
             "sam": values["sam"].get(str(int(c))), "quality": values["cluster_quality"].get(str(int(c)))}
            for c in means[key][0]
        ]
        values["mean_image_correlation"] = finite_mean(correlations[key][labels >= 0])
        per_key[key] = {"embedding": item["use_rep"], "method": item["method"],
                        "params": adata.uns[key][K.PARAMS], "seconds": round(item["seconds"], 2),
                        "metrics": values, "clusters": clusters}
        rows.append(_comparison_row(dataset, item, values))
        rir = "undefined" if values.get("rir") is None else f"{values['rir']:.3g}"
        logger.info("%s: %d clusters, RIR %s, %d noise images.", key, values["n_clusters"], rir, values["noise_size"])
    summary = {"dataset": dataset, "n_images": int(adata.n_vars), "n_pixels": int(adata.n_obs),
               "grid": [int(v) for v in adata.uns[K.GRID]["shape"]], "clusterings": per_key}
    truth = section["truth"] or (K.PATTERN if K.PATTERN in adata.var else None)
    return {"metrics": summary, "comparison": pd.DataFrame(rows), "means": means, "correlations": correlations,
            "truth": truth}


def _comparison_row(dataset: str, item: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the comparison table, with the columns of seed 000 Table 1 first."""
    row = {
        "dataset": dataset,
        "clustering": CLUSTERING_NAMES.get(item["method"], item["method"]),
        "images": item["embedding"],
        "clusters": values["n_clusters"],
        "RIR": values.get("rir"),
        "noise images": values["noise_size"],
        "meaningful clusters": values["n_meaningful_clusters"],
        "isotope pairs": values.get("n_isotope_pairs"),
        "mean image correlation": values.get("mean_image_correlation"),
        "DBI-E": values.get("dbi_euclidean"),
        "DBI-P": values.get("dbi_pearson"),
        "high-quality clusters (SAM)": values.get("n_high_quality_clusters"),
    }
    for name in ("accuracy", "nmi", "ari"):
        if name in values:
            row[name.upper() if name != "accuracy" else name] = values[name]
    row["seconds"] = round(item["seconds"], 1)
    row["key"] = item["key"]
    return row


def write_tables(run_dir: Path, adata: AnnData, results: Mapping[str, Any]) -> None:
    """``clusters.csv``, ``metrics.json`` and ``comparison.csv``."""
    table = pd.DataFrame(index=pd.Index(adata.var_names, name="feature"))
    for column in (K.MZ, K.PATTERN, K.ISOTOPE_OF):
        if column in adata.var:
            table[column] = adata.var[column].to_numpy()
    for key, correlation in results["correlations"].items():
        table[key] = adata.var[key].to_numpy()
        table[f"{key}_corr"] = np.round(correlation, 4)
    table.to_csv(run_dir / CLUSTERS_FILE)
    (run_dir / METRICS_FILE).write_text(json.dumps(results["metrics"], indent=2, default=_json_default))
    results["comparison"].to_csv(run_dir / COMPARISON_FILE, index=False)


def make_embedding_figures(
    figures_dir: Path, adata: AnnData, keys: list[str], cfg: Mapping[str, Any], *, truth: str | None
) -> list[tuple[str, Path]]:
    """Run-level figures comparing the embeddings ``keys`` (``report.embedding_figures``).

    Both need ground-truth classes (``truth``); without them none is made (logged).
    """
    import matplotlib.pyplot as plt

    from .. import pl

    names = cfg["report"]["embedding_figures"]
    if not names:
        return []
    if truth is None:
        logger.info("No ground-truth classes: no k-NN purity, t-SNE or ion-pair figures of the embeddings.")
        return []
    figures_dir.mkdir(parents=True, exist_ok=True)
    dpi = cfg["report"]["dpi"]
    out = []
    for name in names:
        path = figures_dir / EMBEDDINGS_FIGURE.format(name=name)
        try:
            if name == "knn_purity":
                ks = range(1, min(30, adata.n_vars - 1) + 1)
                pl.knn_purity_curve(adata, keys, truth=truth, ks=ks, save=path, dpi=dpi)
            elif name == "representations":
                pl.representations(adata, keys, color=truth, random_state=cfg["seed"], save=path, dpi=dpi)
            else:
                pairs = reference_ion_pairs(adata, cfg["evaluate"], truth=truth)
                if not pairs:
                    logger.info("No isotope pair found: no ion-pair similarity figure.")
                    continue
                pl.ion_pair_similarity(adata, pairs, keys, save=path, dpi=dpi)
        except ValueError as err:  # e.g. too few images for t-SNE; the clustering results stand without it
            logger.warning("No %s figure: %s", name, err)
            continue
        finally:
            plt.close("all")
        out.append((name, path))
    return out


def reference_ion_pairs(
    adata: AnnData, section: Mapping[str, Any], *, truth: str, n_references: int = 2
) -> list[tuple[int, int]]:
    """Ion pairs for the similarity figure of seed 001 (Fig. 4): for up to ``n_references`` ions with a
    13C isotope partner (``section``'s isotope criteria), the pair (ion, isotope), which shares the
    spatial pattern, and the pair (ion, first ion of another ground-truth class), which does not."""
    from .. import metrics, pp

    if K.MZ not in adata.var:
        return []
    found = metrics.isotope_pairs(
        adata.var[K.MZ].to_numpy(), pp.feature_images(adata), delta=section["isotope_delta"],
        unit=section["isotope_unit"], min_corr=section["isotope_min_corr"],
    )
    classes = adata.var[truth].astype(str).to_numpy()
    pairs: list[tuple[int, int]] = []
    for i, j in found[:n_references]:
        other = np.flatnonzero(classes != classes[i])
        pairs.append((int(i), int(j)))
        if other.size:
            pairs.append((int(i), int(other[0])))
    return pairs


def embedding_table(adata: AnnData, keys: list[str], *, truth: str | None, seed: int) -> pd.DataFrame | None:
    """Linear evaluation accuracy (seed 001) and 10-NN purity of every embedding, when classes are known."""
    from .. import metrics

    if truth is None:
        return None
    codes = pd.factorize(adata.var[truth].astype(str))[0]
    rows = []
    for key in keys:
        X = np.asarray(adata.varm[key], dtype=np.float64)
        k = min(10, adata.n_vars - 1)
        row: dict[str, Any] = {"embedding": key, "dimensions": X.shape[1]}
        for column, score in (("linear evaluation accuracy", lambda: metrics.linear_evaluation(X, codes, random_state=seed)),
                              (f"{k}-NN purity", lambda: metrics.knn_purity(X, codes, ks=[k])[k])):
            try:
                row[column] = score()
            except ValueError as err:  # e.g. a class with a single image: reported as undefined
                logger.warning("%s of %s undefined: %s", column, key, err)
                row[column] = None
        rows.append(row)
    return pd.DataFrame(rows)


def make_figures(
    figures_dir: Path,
    adata: AnnData,
    clusterings: list[dict[str, Any]],
    section: Mapping[str, Any],
    *,
    means: Mapping[str, tuple[np.ndarray, np.ndarray]],
    correlations: Mapping[str, np.ndarray],
) -> dict[str, list[tuple[str, Path]]]:
    """Figures of every clustering (``section["figures"]``) from the cluster means and member correlations
    of :func:`evaluate`; returns ``{key: [(figure name, path)]}``."""
    import matplotlib.pyplot as plt

    from .. import pl

    figures_dir.mkdir(parents=True, exist_ok=True)
    dpi = section["dpi"]
    layer = K.RAW if K.RAW in adata.layers else None
    zoom = tuple(section["zoom"]) if isinstance(section["zoom"], list) else section["zoom"]
    out: dict[str, list[tuple[str, Path]]] = {}
    for item in progress(clusterings, desc="figures", total=len(clusterings)):
        key = item["key"]
        labels = adata.var[key].to_numpy()
        ids = means[key][0]
        out[key] = []
        words = clustering_title(item)
        for name in section["figures"]:
            path = figures_dir / K.check_name(CLUSTERING_FIGURE.format(key=key, name=name), what="A cluster key (in a figure file name)")
            if name == "cluster_means":
                pl.cluster_mean_images(adata, key, means=means[key], title=f"Cluster mean images: {words}", save=path, dpi=dpi)
            elif name == "spectrum":
                pl.spectrum(adata, key, layer=layer, zoom=zoom, title=f"Mean spectrum coloured by cluster: {words}",
                            save=path, dpi=dpi)
            elif name == "embedding":
                pl.embedding(adata, key, random_state=0, title=f"Ion images in the embedding: {words}", save=path, dpi=dpi)
            elif name == "rgb_composite":
                if not len(ids):
                    logger.warning("%s has no clusters; no RGB composite.", key)
                    continue
                pl.rgb_composite(adata, key, section["rgb_clusters"], histology=section["histology"],
                                 winsorize=section["winsorize"], means=means[key], save=path, dpi=dpi)
            elif name == "members":
                if not len(ids):
                    continue
                largest = int(ids[np.argmax([(labels == c).sum() for c in ids])])
                pl.cluster_members(adata, key, largest, winsorize=section["winsorize"], title=words, means=means[key],
                                   correlation=correlations[key], save=path, dpi=dpi)
            plt.close("all")
            out[key].append((name, path))
    return out


def write_results(path: Path, adata: AnnData) -> None:
    """Write ``adata`` as h5ad; ``uns`` values h5ad cannot store are converted (see :func:`h5ad_safe`).

    A chunked (dask) ``X`` and its layers are not copied into the file (for a whole slide they are two
    dense matrices of tens of GB): ``X`` lies in the run's ``preprocessed.zarr`` and the raw intensities
    in the input store (``uns["source"]``).
    """
    from .. import pp

    adata.uns = h5ad_safe(dict(adata.uns))
    if pp.is_dask(adata.X):
        adata = AnnData(obs=adata.obs, var=adata.var, uns=adata.uns, obsm=dict(adata.obsm), varm=dict(adata.varm),
                        obsp=dict(adata.obsp), varp=dict(adata.varp))
    adata.write_h5ad(path)


def h5ad_safe(value: Any) -> Any:
    """``value`` with lists of mappings (e.g. ``uns["preprocessing"]``) stored as ``{"0": ..., "1": ...}``
    and tuples as lists, which h5ad can store."""
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (Mapping, list, tuple)) or v is None for v in value):
            return {str(i): h5ad_safe(v) for i, v in enumerate(value)}
        return list(value)
    return value


def finite_mean(values: np.ndarray) -> float | None:
    """Mean of the finite entries of ``values``; None when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
