"""Gene-family coherence: a label-free check of gene-image clusterings (issue 17, seed 003).

Ribosomal-protein, mitochondrially encoded and haemoglobin genes are co-expressed families in any
tissue: ribosomal genes follow translation activity, mitochondrial transcripts follow energy
demand, and haemoglobin transcripts follow the blood. A clustering of gene images by spatial
pattern should therefore keep each family together and apart from the others. The family of a
gene is read from its symbol, so the check works on any section with gene symbols and needs no
annotation. :data:`MARKER_GENES` gives the same kind of truth from known anatomy: the marker genes
of the structures of a tissue (the layers of the olfactory bulb), passed as ``families``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._external import nmi
from ._labels import NOISE, check_labels

#: Gene-symbol patterns of the default families (mouse and human nomenclature).
GENE_FAMILIES: dict[str, str] = {
    "ribosomal": r"^(RP[LS]P?\d+[A-Z]?\d*|Rp[ls]p?\d+[a-z]?\d*)$",
    "mitochondrial": r"^(MT-|mt-)",
    "haemoglobin": r"^(HB[AB]\d?|Hb[ab]-.*)$",
}

#: Marker genes of known anatomy, ``{tissue: {structure: symbol pattern}}``, usable as the
#: ``families`` of :func:`gene_families` and :func:`gene_family_coherence`: genes of one
#: structure share its spatial pattern. ``mouse_olfactory_bulb``: the three main layers of the main
#: olfactory bulb, from the cell types of each layer: olfactory sensory neuron axons and ensheathing
#: glia of the olfactory nerve layer (S100a5, Gng13: sensory neurons; Fabp7: ensheathing glia;
#: Kctd12), mitral and tufted cells (Cdhr1, Slc17a7 = VGLUT1, Doc2g, Reln, Cck) and the GABAergic
#: granule cells of the granule cell layer and their Dlx / Sp8 / Meis2 / Pbx3 lineage (Penk, Gad1).
#: On the legacy ST section MOB1 every one of these genes correlates best with the mean image of
#: its own layer (docs/benchmarks.md, "DARLC"), so the sets hold on real data at 100 µm spots.
MARKER_GENES: dict[str, dict[str, str]] = {
    "mouse_olfactory_bulb": {
        "olfactory nerve layer": r"^(S100a5|Fabp7|Gng13|Kctd12)$",
        "mitral cell layer": r"^(Cdhr1|Slc17a7|Doc2g|Reln|Cck)$",
        "granule cell layer": r"^(Penk|Dlx1|Sp8|Meis2|Pbx3|Gad1)$",
    },
}


def gene_families(names: Sequence[str], families: Mapping[str, str] | None = None) -> np.ndarray:
    """Family of every gene symbol in ``names`` (``""`` for none).

    Parameters
    ----------
    names
        Gene symbols.
    families
        ``{family: regular expression}`` matched against each symbol (default
        :data:`GENE_FAMILIES`). A symbol matching several families is an error.

    Returns
    -------
    An object array of family names, ``""`` where no family matches.
    """
    families = GENE_FAMILIES if families is None else dict(families)
    if not families:
        raise ValueError("`families` must name at least one family.")
    out = np.full(len(names), "", dtype=object)
    symbols = np.array([str(n) for n in names], dtype=object)
    for family, pattern in families.items():
        regex = re.compile(pattern)
        hit = np.array([regex.search(s) is not None for s in symbols], dtype=bool)
        clash = hit & (out != "")
        if clash.any():
            raise ValueError(f"Gene {symbols[clash][0]!r} matches the families {out[clash][0]!r} and {family!r}.")
        out[hit] = family
    return out


def gene_family_coherence(
    labels: Any,
    names: Sequence[str],
    *,
    families: Mapping[str, str] | None = None,
    min_genes: int = 3,
) -> dict[str, Any]:
    """How well a clustering of gene images keeps known co-expressed gene families together.

    Only the genes of families with at least ``min_genes`` members take part. ``nmi`` compares
    their clusters with their families (1: every family is one cluster of its own); ``coherence``
    of a family is the fraction of its genes in its most common cluster, and ``coherence`` overall
    the gene-weighted mean. Noise labels (-1) count as singletons (:func:`nmi`), so leaving family
    genes unclustered is not rewarded.

    Parameters
    ----------
    labels
        Cluster of every gene (same order as ``names``).
    names
        Gene symbols.
    families
        ``{family: regular expression}`` (default :data:`GENE_FAMILIES`).
    min_genes
        Families with fewer member genes are left out.

    Returns
    -------
    ``{"nmi": float, "coherence": float, "n_genes": int, "families": {family: {"n_genes": int,
    "coherence": float}}}``; NaN scores where fewer than two families take part.
    """
    lab = check_labels(labels, n=len(names))
    fam = gene_families(names, families)
    counts = pd.Series(fam[fam != ""]).value_counts()
    kept = [f for f, c in counts.items() if c >= min_genes]
    sel = np.isin(fam, kept)
    per_family: dict[str, dict[str, float | int]] = {}
    for family in kept:
        members = lab[fam == family]
        clustered = members[members != NOISE]
        top = np.bincount(clustered).max() if clustered.size else 0
        per_family[family] = {"n_genes": int(members.size), "coherence": float(top / members.size)}
    n = int(sel.sum())
    if len(kept) < 2:
        return {"nmi": float("nan"), "coherence": float("nan"), "n_genes": n, "families": per_family}
    coherence = sum(v["coherence"] * v["n_genes"] for v in per_family.values()) / n
    return {"nmi": nmi(fam[sel], lab[sel]), "coherence": float(coherence), "n_genes": n, "families": per_family}
