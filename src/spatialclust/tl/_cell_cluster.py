"""Leiden clustering of cells (scanpy) and its evaluation against labels (Palli 2023, sec. 3.6 and 4).

The paper builds scanpy's kNN graph on a representation (PCA of the scaled features, its
metric-learned transform, or an image embedding), clusters it with Leiden at a fixed resolution
and scores the clusters with purity. Here the resolution can also be scanned and chosen without
labels, by the silhouette coefficient (as the paper's discussion recommends) or by stability (the
finest resolution whose partition Leiden reproduces across random seeds), and NMI, ARI and k-NN
accuracy are reported next to purity.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger
from .._registry import invalid_option

__all__ = ["DEFAULT_RESOLUTIONS", "SCAN_CRITERIA", "evaluate_cells", "leiden_cells"]

#: Resolutions tried by ``resolution="scan"``.
DEFAULT_RESOLUTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
#: Label-free criteria of the resolution scan.
SCAN_CRITERIA = ("silhouette", "stability")
#: Leiden seeds compared by the stability criterion.
_STABILITY_SEEDS = 3
#: Leiden runs of the resolution search for a given number of clusters.
_BISECTION_STEPS = 30


def _representation(adata: ad.AnnData, use_rep: str) -> np.ndarray:
    if use_rep == "X":
        return np.asarray(adata.X)
    if use_rep not in adata.obsm:
        raise KeyError(f"`use_rep`={use_rep!r} is not in adata.obsm (keys: {list(adata.obsm)}) and is not 'X'.")
    return np.asarray(adata.obsm[use_rep])


def leiden_cells(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_pca",
    resolution: float | str = 1.0,
    resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
    criterion: str = "silhouette",
    stability_threshold: float = 0.9,
    n_clusters: int | None = None,
    n_neighbors: int = 15,
    neighbors_method: str = "umap",
    random_state: int = 0,
    key_added: str = _keys.LEIDEN,
) -> None:
    """Leiden clustering of the cells on the kNN graph of ``obsm[use_rep]`` (scanpy).

    Parameters
    ----------
    adata
        AnnData with obs = cells.
    use_rep
        Representation for the kNN graph (``"X_pca"``, ``"X_nca"``, ``"X_dino"``, ...).
    resolution
        Leiden resolution, or ``"scan"``: try ``resolutions`` and keep one by ``criterion`` (label-free).
    resolutions
        Candidates of the scan.
    criterion
        ``"silhouette"``: the highest silhouette coefficient on ``use_rep`` (it favours few, coarse
        clusters); ``"stability"``: the largest resolution whose partitions from 3 Leiden seeds agree
        with a mean pairwise ARI of at least ``stability_threshold`` (the finest reproducible
        partition; the most stable one if none reaches the threshold).
    stability_threshold
        Minimum mean pairwise ARI of the stability criterion.
    n_clusters
        When given, ``resolution`` and ``criterion`` are not used: the resolution is found by bisection
        (in ``[0.01, 10]``, at most ``_BISECTION_STEPS`` Leiden runs) so that Leiden gives this many
        clusters, as k-means is given its k; if no resolution gives exactly ``n_clusters``, the closest
        count is kept, with a warning. For comparing representations at the same number of clusters
        (purity grows with the number of clusters).
    n_neighbors
        Neighbours of the kNN graph (scanpy default 15).
    neighbors_method
        Connectivities of ``sc.pp.neighbors``: ``"umap"`` (scanpy default, as in the paper; its
        numba code is compiled on first use, ~20-30 s) or ``"gauss"``.
    random_state
        Seed of Leiden.
    key_added
        obs column of the clusters.

    Returns
    -------
    None; writes ``obs[key_added]`` (categorical), ``obsp["<key_added>_connectivities"]`` /
    ``_distances`` and ``uns[key_added]`` = ``{"use_rep", "resolution", "n_clusters", "params",
    "scan"}`` (``scan``: resolution, n_clusters, silhouette, stability of each candidate).
    """
    import scanpy as sc

    from ..metrics import ari, silhouette

    if criterion not in SCAN_CRITERIA:
        raise invalid_option(criterion, "criterion", list(SCAN_CRITERIA))
    if not 0 < stability_threshold <= 1:
        raise ValueError(f"`stability_threshold` must be in (0, 1], got {stability_threshold!r}.")
    if n_clusters is not None and not (isinstance(n_clusters, (int, np.integer)) and 2 <= n_clusters < adata.n_obs):
        raise ValueError(f"`n_clusters` must be an integer in [2, n_cells - 1] = [2, {adata.n_obs - 1}], got {n_clusters!r}.")
    X = _representation(adata, use_rep)
    if not np.isfinite(X).all():
        raise ValueError(f"obsm[{use_rep!r}] contains NaN or infinite values.")
    if not 1 < n_neighbors < adata.n_obs:
        raise ValueError(f"`n_neighbors` must be in [2, n_cells - 1] = [2, {adata.n_obs - 1}], got {n_neighbors}.")
    neighbors_key = f"{key_added}_neighbors"
    transformer = "sklearn" if adata.n_obs < 4096 else None  # exact neighbours for small data (no pynndescent JIT)
    sc.pp.neighbors(
        adata, n_neighbors=n_neighbors, use_rep=use_rep, method=neighbors_method, transformer=transformer,
        random_state=random_state, key_added=neighbors_key,
    )

    def run(res: float, seed: int = random_state) -> np.ndarray:
        sc.tl.leiden(
            adata, resolution=res, random_state=seed, key_added=key_added, neighbors_key=neighbors_key,
            flavor="igraph", n_iterations=2, directed=False,
        )
        return adata.obs[key_added].cat.codes.to_numpy()

    scan: list[dict[str, Any]] = []
    if n_clusters is not None:
        chosen = _bisect_resolution(run, int(n_clusters), scan)
    elif isinstance(resolution, str):
        if resolution != "scan":
            raise ValueError(f"`resolution` must be a positive number or 'scan', got {resolution!r}.")
        if not resolutions:
            raise ValueError("`resolutions` is empty.")
        for res in resolutions:
            labels = run(float(res))
            n_clusters = int(labels.max()) + 1
            valid = 1 < n_clusters < adata.n_obs
            score = silhouette(X, labels) if valid else float("nan")
            stability = float("nan")
            if criterion == "stability" and valid:
                runs = [labels] + [run(float(res), random_state + 1 + i) for i in range(_STABILITY_SEEDS - 1)]
                stability = float(np.mean([ari(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]))
            scan.append({"resolution": float(res), "n_clusters": n_clusters, "silhouette": score, "stability": stability})
            logger.debug("leiden resolution %.2f: %d clusters, silhouette %.3f, stability %.3f", res, n_clusters, score, stability)
        scores = np.array([row["silhouette"] for row in scan])
        if np.isnan(scores).all():
            raise ValueError(f"No resolution in {list(resolutions)} gave between 2 and n_cells - 1 clusters.")
        if criterion == "silhouette":
            chosen = float(scan[int(np.nanargmax(scores))]["resolution"])
        else:
            stable = [row for row in scan if row["stability"] >= stability_threshold]
            best = max(stable, key=lambda row: row["resolution"]) if stable else max(
                (row for row in scan if not np.isnan(row["stability"])), key=lambda row: row["stability"])
            chosen = float(best["resolution"])
    else:
        if not float(resolution) > 0:
            raise ValueError(f"`resolution` must be positive, got {resolution!r}.")
        chosen = float(resolution)
    labels = run(chosen)
    adata.uns[key_added] = {
        "use_rep": use_rep,
        "resolution": chosen,
        "n_clusters": int(labels.max()) + 1,
        "scan": scan,
        _keys.PARAMS: {
            "resolution": resolution, "criterion": criterion, "stability_threshold": stability_threshold,
            "n_clusters": n_clusters, "n_neighbors": n_neighbors, "neighbors_method": neighbors_method,
            "random_state": random_state,
        },
    }
    logger.info("leiden on %s (resolution %.2f): %d clusters", use_rep, chosen, int(labels.max()) + 1)


def _bisect_resolution(run: Any, n_clusters: int, scan: list[dict[str, Any]]) -> float:
    """The resolution at which ``run(resolution)`` gives ``n_clusters`` clusters, by bisection on a log
    scale (the count grows with the resolution, not strictly); every try is appended to ``scan``."""
    low, high = 0.01, 10.0
    best: tuple[int, float] | None = None
    for _ in range(_BISECTION_STEPS):
        res = float(np.sqrt(low * high))
        found = int(run(res).max()) + 1
        scan.append({"resolution": res, "n_clusters": found, "silhouette": float("nan"), "stability": float("nan")})
        if best is None or abs(found - n_clusters) < abs(best[0] - n_clusters):
            best = (found, res)
        if found == n_clusters:
            return res
        low, high = (res, high) if found < n_clusters else (low, res)
    assert best is not None
    warnings.warn(f"Leiden gave no resolution with exactly {n_clusters} clusters; kept {best[0]} clusters "
                  f"(resolution {best[1]:.3g}).", UserWarning, stacklevel=3)
    return best[1]


def evaluate_cells(
    adata: ad.AnnData,
    *,
    cluster_key: str = _keys.LEIDEN,
    label_key: str = _keys.LABEL,
    use_rep: str | None = None,
    subset: np.ndarray | None = None,
    k: int = 5,
) -> dict[str, float]:
    """Score a clustering of cells against labels: purity (the paper's metric), NMI, ARI, silhouette, k-NN accuracy.

    Parameters
    ----------
    adata
        AnnData with ``obs[cluster_key]`` and ``obs[label_key]``.
    cluster_key, label_key
        obs columns of clusters and labels; cells without a label are left out of the label-based scores.
    use_rep
        Representation for the silhouette and k-NN accuracy (default: the one clustered, from
        ``uns[cluster_key]["use_rep"]``).
    subset
        Boolean mask of the cells to score (e.g. the cells a metric learner did not see).
    k
        Neighbours of the k-NN accuracy.

    Returns
    -------
    ``{"purity", "nmi", "ari", "silhouette", "knn_accuracy", "n_clusters", "n_cells"}``. Purity,
    NMI, ARI and k-NN accuracy use the labelled cells; the silhouette uses all cells of ``subset``.
    """
    from ..metrics import ari, knn_accuracy, nmi, purity, silhouette

    for key, name in ((cluster_key, "cluster_key"), (label_key, "label_key")):
        if key not in adata.obs:
            raise KeyError(f"`{name}`={key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    rep = use_rep or adata.uns.get(cluster_key, {}).get("use_rep", "X_pca")
    X = _representation(adata, rep)
    mask = np.ones(adata.n_obs, dtype=bool) if subset is None else np.asarray(subset, dtype=bool)
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"`subset` must be a boolean mask of length {adata.n_obs}, got shape {mask.shape}.")
    clusters = pd.Series(adata.obs[cluster_key]).astype("category").cat.codes.to_numpy()
    labels = pd.Series(adata.obs[label_key].to_numpy(), dtype=object)
    labelled = mask & labels.notna().to_numpy()
    if labelled.sum() < 2:
        raise ValueError(f"Fewer than 2 labelled cells in obs[{label_key!r}] to evaluate against.")
    truth = labels[labelled].astype(str).to_numpy()
    out = {
        "purity": purity(truth, clusters[labelled]),
        "nmi": nmi(truth, clusters[labelled]),
        "ari": ari(truth, clusters[labelled]),
        "knn_accuracy": knn_accuracy(X[labelled], truth, k=min(k, int(labelled.sum()) - 1)),
        "n_clusters": int(np.unique(clusters[mask]).size),
        "n_cells": int(mask.sum()),
    }
    n_sub = np.unique(clusters[mask]).size
    out["silhouette"] = silhouette(X[mask], clusters[mask]) if 1 < n_sub < mask.sum() else float("nan")
    return out
