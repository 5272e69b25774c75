"""All clustering metrics of one AnnData clustering in one dict (for ``metrics.json`` and comparison tables)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anndata as ad
import numpy as np

from .. import _keys
from .._logging import logger
from ._external import ari, clustering_accuracy, nmi, purity
from ._internal import davies_bouldin, knn_purity, silhouette
from ._sam import cluster_quality_groups, spectral_angle_mapper
from ._isotopes import isotope_pairs, isotopic_recall, relative_isotope_ratio
from ._labels import check_labels, n_clusters, n_meaningful_clusters, noise_size


def _varm(adata: ad.AnnData, key: str, parameter: str) -> np.ndarray:
    if key not in adata.varm:
        available = ", ".join(f"`{k}`" for k in adata.varm.keys()) or "none"
        raise KeyError(f"`{parameter}`={key!r} is not in `adata.varm`. Available embeddings: {available}.")
    return np.asarray(adata.varm[key])


def _truth(adata: ad.AnnData, truth: str | Iterable | None) -> np.ndarray | None:
    if truth is None:
        return adata.var[_keys.PATTERN].to_numpy() if _keys.PATTERN in adata.var else None
    if isinstance(truth, str):
        if truth not in adata.var:
            raise KeyError(f"`truth`={truth!r} is not a column of `adata.var` (columns: {list(adata.var.columns)}).")
        return adata.var[truth].to_numpy()
    values = np.asarray(truth)
    if values.shape != (adata.n_vars,):
        raise ValueError(f"`truth` must have one class per feature, shape ({adata.n_vars},); received {values.shape}.")
    return values


def _record(out: dict[str, Any], undefined: dict[str, str], name: str, compute: Callable[[], Any]) -> None:
    """Store ``compute()`` under ``name``, or None and the reason when the metric is undefined here."""
    try:
        out[name] = compute()
    except ValueError as err:
        out[name] = None
        undefined[name] = str(err)


def evaluate_clustering(
    adata: ad.AnnData,
    key: str = _keys.CLUSTER,
    *,
    use_rep: str | None = None,
    truth: str | Iterable | None = None,
    layer: str | None = None,
    isotope_delta: float = 0.005,
    isotope_unit: str = "Da",
    isotope_min_corr: float = 0.85,
    n_boot: int = 1000,
    random_state: int | None = 0,
    ks: Iterable[int] = range(1, 31),
) -> dict[str, Any]:
    """Every applicable clustering metric for the clustering ``adata.var[key]``.

    Parameters
    ----------
    adata
        Dataset clustered with :func:`spatialclust.tl.cluster`.
    key
        ``var`` column of the cluster labels (``-1`` = noise).
    use_rep
        Representation for the internal metrics (Davies-Bouldin, silhouette): a ``varm`` key, or
        None for the preprocessed feature images flattened inside the tissue mask (the "regular"
        representation), which is the same for every method and so makes the numbers comparable
        across embeddings, as in seed 003.
    truth
        Ground-truth classes: a ``var`` column, an array, or None for ``var["pattern"]`` when present.
        Enables accuracy, purity, NMI, ARI and k-NN purity.
    layer
        Layer the feature images are built from.
    isotope_delta, isotope_unit, isotope_min_corr
        Isotope-pair criteria (:func:`isotope_pairs`); used when ``var["mz"]`` exists. The Pearson
        correlation is taken over every acquired pixel (the whole ion image, as in seed 000), not
        only the tissue.
    n_boot, random_state
        Bootstrap of the Relative Isotope Ratio.
    ks
        Neighbourhood sizes of the k-NN purity (computed on the clustering's own embedding
        ``uns[key]["use_rep"]`` when present, else on ``use_rep``).

    Returns
    -------
    dict with ``n_images``, ``n_clusters``, ``n_meaningful_clusters``, ``noise_size``, ``rir``,
    ``rir_f_cluster``, ``rir_f_random``, ``n_isotope_pairs``, ``isotopic_recall``,
    ``dbi_euclidean``, ``dbi_pearson``, ``silhouette``, ``sam`` (mean spectral angle per cluster,
    ``{str(cluster): radians}``), ``cluster_quality`` (``"high"``/``"medium"``, split at the
    median SAM) and ``n_high_quality_clusters`` and, with ground truth, ``accuracy``,
    ``purity``, ``nmi``, ``ari``, ``knn_purity`` (``{str(k): value}``). A metric that is undefined
    for this clustering is None and ``undefined[name]`` says why (e.g. all images are noise, no
    isotope pairs). All values are JSON-serialisable.
    """
    from .. import pp
    from .._registry import registry

    if key not in adata.var:
        raise KeyError(f"`key`={key!r} is not a column of `adata.var`; run `sc.tl.cluster(adata, key_added={key!r})` first.")
    labels = check_labels(adata.var[key].to_numpy(), name=f"adata.var[{key!r}]")
    cluster_rep = adata.uns.get(key, {}).get("use_rep") if isinstance(adata.uns.get(key), dict) else None
    rep = _varm(adata, use_rep, "use_rep") if use_rep is not None else None
    classes = _truth(adata, truth)

    out: dict[str, Any] = {
        "n_images": int(labels.size),
        "n_clusters": n_clusters(labels),
        "n_meaningful_clusters": n_meaningful_clusters(labels),
        "noise_size": noise_size(labels),
    }
    undefined: dict[str, str] = {}
    if out["n_clusters"] == 0:
        logger.warning("Clustering `%s` labels all %d images noise; most metrics are undefined.", key, labels.size)

    images, acquired = None, None
    matrix = pp.intensity_matrix(adata, layer)
    if pp.is_dask(matrix):  # a chunked matrix: its pixels (every acquired one) are streamed, never imaged
        images = matrix.T
        regular = [k for k in adata.varm if isinstance(adata.uns.get(k), dict) and adata.uns[k].get("method") == "regular"]
        if rep is None and regular:  # the regular embedding of this dataset, computed already
            rep = np.asarray(adata.varm[regular[0]])
            logger.info("Internal metrics of `%s` on the regular embedding `%s`.", key, regular[0])
        elif rep is None:
            pixels = pp.tissue_pixels(adata, matrix)
            fixed = pixels.shape[0] * pixels.shape[1] > pp.DENSE_MAX_ENTRIES
            regular = registry("embedder").create("regular", n_components=100 if fixed else None, random_state=random_state)
            rep = regular.fit_transform_pixels(pixels, keep_basis=False)
            if fixed:
                logger.info("Internal metrics of `%s` on 100 randomized-SVD components of the regular images.", key)
    elif rep is None or _keys.MZ in adata.var:
        images = pp.feature_images(adata, layer=layer)
        x, y = pp.pixel_coordinates(adata)
        acquired = np.zeros(images.shape[1:], dtype=bool)
        acquired[y, x] = True
        if rep is None:
            rep = registry("embedder").create("regular").fit_transform(images, mask=pp.tissue_mask_image(adata))

    # isotopes (seed 000, seed 001); seed 000 correlates the whole ion images: every acquired pixel
    if _keys.MZ in adata.var:
        pairs = isotope_pairs(adata.var[_keys.MZ].to_numpy(), images, delta=isotope_delta, unit=isotope_unit,
                              min_corr=isotope_min_corr, mask=acquired)
        rir = relative_isotope_ratio(labels, pairs, n_boot=n_boot, random_state=random_state)
        out.update(rir=rir.value, rir_f_cluster=rir.f_cluster, rir_f_random=rir.f_random, n_isotope_pairs=rir.n_pairs)
        if not rir.defined:
            undefined["rir"] = rir.reason
        _record(out, undefined, "isotopic_recall", lambda: isotopic_recall(labels, pairs))
    else:
        out.update(rir=None, rir_f_cluster=None, rir_f_random=None, n_isotope_pairs=None, isotopic_recall=None)
        undefined["rir"] = undefined["isotopic_recall"] = f"no m/z values (`adata.var[{_keys.MZ!r}]`)"

    # internal metrics (seed 003)
    _record(out, undefined, "dbi_euclidean", lambda: davies_bouldin(rep, labels, metric="euclidean"))
    _record(out, undefined, "dbi_pearson", lambda: davies_bouldin(rep, labels, metric="pearson"))
    _record(out, undefined, "silhouette", lambda: silhouette(rep, labels))
    # cluster quality by spectral angle to the cluster mean (seed 003, §4.2: median split)
    sam = spectral_angle_mapper(rep, labels)
    quality = cluster_quality_groups(sam)
    out["sam"] = {str(k): v for k, v in sam.items()}
    out["cluster_quality"] = {str(k): v for k, v in quality.items()}
    out["n_high_quality_clusters"] = sum(v == "high" for v in quality.values())

    # external metrics (seeds 001, 002, 003)
    if classes is not None:
        out["accuracy"] = clustering_accuracy(classes, labels)
        out["purity"] = purity(classes, labels)
        out["nmi"] = nmi(classes, labels)
        out["ari"] = ari(classes, labels)
        knn_rep = _varm(adata, cluster_rep, "uns[key]['use_rep']") if cluster_rep in adata.varm else rep
        codes = np.unique(classes.astype(str), return_inverse=True)[1]
        ks_list = [k for k in ks if k <= labels.size - 1]
        _record(out, undefined, "knn_purity",
                lambda: {str(k): v for k, v in knn_purity(knn_rep, codes, ks=ks_list, metric="cosine").items()})
    out["undefined"] = undefined
    return out
