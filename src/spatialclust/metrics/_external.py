"""Metrics against ground-truth classes: clustering accuracy, purity, NMI, ARI.

Noise handling (label ``-1``): accuracy and purity count noise images as wrongly assigned (they
stay in ``N``); NMI and ARI treat every noise image as its own singleton cluster by default
(``noise="singletons"``), so that lumping unclustered images together is not rewarded, or the
noise as one cluster (``noise="cluster"``, scikit-learn's behaviour on raw labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .._registry import invalid_option
from ._labels import NOISE, check_labels, encode_classes


def _pair(truth: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    lab = check_labels(labels)
    cls = encode_classes(truth, n=lab.size)
    return cls, lab


def contingency(truth: Any, labels: Any) -> np.ndarray:
    """Counts ``|ω_k ∩ c_j|``: rows = non-noise clusters (sorted), columns = classes (sorted)."""
    cls, lab = _pair(truth, labels)
    keep = lab != NOISE
    _, k = np.unique(lab[keep], return_inverse=True)
    table = np.zeros((int(k.max()) + 1 if k.size else 0, int(cls.max()) + 1), dtype=np.int64)
    np.add.at(table, (k, cls[keep]), 1)
    return table


def clustering_accuracy(truth: Any, labels: Any) -> float:
    """Unsupervised clustering accuracy with the Hungarian matching (Kuhn 1955; Xie et al. 2016).

    ``ACC = max_m (1/N) sum_i 1[c_i = m(ω_i)]`` over one-to-one maps ``m`` from clusters to classes,
    found by ``scipy.optimize.linear_sum_assignment`` on the contingency table. Clusters left
    unmatched (more clusters than classes) and noise images count as errors. Used by Hu et al.
    (2022, seed 001, Table 1).
    """
    table = contingency(truth, labels)
    n = np.asarray(labels).size
    if table.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / n)


def purity(truth: Any, labels: Any) -> float:
    """Cluster purity (Manning, Raghavan & Schütze 2008; seed 002, Sec. 3.6).

    ``purity(Ω, C) = (1/N) sum_k max_j |ω_k ∩ c_j|``: every cluster is assigned its most frequent
    class. Noise images belong to no cluster and count as wrongly assigned (they stay in ``N``).
    """
    table = contingency(truth, labels)
    n = np.asarray(labels).size
    return float(table.max(axis=1).sum() / n) if table.size else 0.0


def _noise_labels(lab: np.ndarray, noise: str) -> np.ndarray:
    if noise == "cluster":
        return lab
    if noise == "singletons":
        out = lab.copy()
        is_noise = out == NOISE
        out[is_noise] = out.max() + 1 + np.arange(int(is_noise.sum()))
        return out
    raise invalid_option(noise, "noise", ["singletons", "cluster"])


def nmi(truth: Any, labels: Any, *, noise: str = "singletons") -> float:
    """Normalised mutual information ``I(Ω; C) / mean(H(Ω), H(C))`` (arithmetic mean; Strehl & Ghosh 2002).

    Reported by Song et al. (seed 003) for labelled datasets. ``noise`` sets how ``-1`` is treated.
    """
    from sklearn.metrics import normalized_mutual_info_score

    cls, lab = _pair(truth, labels)
    return float(normalized_mutual_info_score(cls, _noise_labels(lab, noise)))


def ari(truth: Any, labels: Any, *, noise: str = "singletons") -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): the Rand index corrected for chance, 0 for random labels.

    Reported by Song et al. (seed 003) for labelled datasets. ``noise`` sets how ``-1`` is treated.
    """
    from sklearn.metrics import adjusted_rand_score

    cls, lab = _pair(truth, labels)
    return float(adjusted_rand_score(cls, _noise_labels(lab, noise)))
