"""Preprocessing of spatial transcriptomics counts, as in DARLC (Wang et al., 2024, seed 003, §4.1.2).

"We first remove mitochondrial and ERCC spike-in genes. Then, genes detected in fewer than 10 spots
are excluded. [...] we do not perform quality control on spatial spots. Finally, the gene expression
counts are normalized by library size, followed by log-transformation." -- implemented with scanpy.
"""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._logging import logger
from ._matrix import record_step

_MITO = re.compile(r"^(mt|MT|Mt)[-.:_]")
_ERCC = re.compile(r"^ERCC[-_]", re.IGNORECASE)


def preprocess_st(
    adata: ad.AnnData,
    *,
    min_spots: int = 10,
    drop_mito: bool = True,
    drop_ercc: bool = True,
    target_sum: float | None = None,
    n_top_genes: int | None = None,
    gene_symbols: str | None = "auto",
    copy: bool = False,
) -> ad.AnnData | None:
    """Filter genes, normalise library sizes and log-transform spot counts (scanpy procedure).

    Spots are never removed (spatial integrity, as in the paper); genes are.

    Parameters
    ----------
    adata
        Spots x genes with raw counts in ``X``.
    min_spots
        Keep genes detected (count > 0) in at least this many spots (paper: 10). Genes with zero
        counts everywhere are always removed.
    drop_mito, drop_ercc
        Remove mitochondrial (``mt-``/``MT-``) and ERCC spike-in genes.
    target_sum
        Library size after normalisation (None: the median library size, scanpy's default).
    n_top_genes
        If given, keep only this many highly variable genes (``scanpy.pp.highly_variable_genes``,
        flavour ``seurat`` on the log data); practical for 10,000-gene sections.
    gene_symbols
        ``var`` column holding gene symbols for the mito/ERCC rules; ``"auto"`` uses
        ``var["gene_name"]`` or ``var["gene_symbols"]`` when present, else the var names.
    copy
        Return a copy instead of modifying ``adata``.

    Returns
    -------
    None or the copy. ``X`` becomes float32 log1p(normalised counts); the step is appended to
    ``uns["preprocessing"]``.
    """
    import scanpy as sc

    if not isinstance(min_spots, (int, np.integer)) or min_spots < 1:
        raise ValueError(f"`min_spots` must be a positive integer; received {min_spots!r}.")
    if n_top_genes is not None and (not isinstance(n_top_genes, (int, np.integer)) or n_top_genes < 1):
        raise ValueError(f"`n_top_genes` must be a positive integer or None; received {n_top_genes!r}.")
    adata = adata.copy() if copy else adata
    x = adata.X
    if (sp.issparse(x) and x.data.size and x.data.min() < 0) or (not sp.issparse(x) and np.asarray(x).min() < 0):
        raise ValueError("preprocess_st expects raw counts in `X`; found negative values (already normalised?).")
    if gene_symbols == "auto":
        gene_symbols = next((c for c in ("gene_name", "gene_symbols") if c in adata.var), None)
    elif gene_symbols is not None and gene_symbols not in adata.var:
        raise ValueError(f"`gene_symbols`: var has no column {gene_symbols!r}; found {list(adata.var.columns)}.")
    names = (adata.var[gene_symbols] if gene_symbols else adata.var_names.to_series()).astype(str).to_numpy()
    drop = np.zeros(adata.n_vars, dtype=bool)
    if drop_mito:
        drop |= np.array([bool(_MITO.match(n)) for n in names])
    if drop_ercc:
        drop |= np.array([bool(_ERCC.match(n)) for n in names])
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    zero = detected == 0
    keep = ~drop & (detected >= min_spots)
    logger.info(
        "preprocess_st: dropping %d mitochondrial/ERCC genes, %d genes with zero counts, %d genes in < %d spots.",
        int(drop.sum()), int((zero & ~drop).sum()), int((~drop & ~zero & (detected < min_spots)).sum()), min_spots,
    )
    if not keep.any():
        raise ValueError(f"No gene is left after preprocessing (min_spots={min_spots}); lower `min_spots`.")
    adata._inplace_subset_var(keep)
    adata.X = adata.X.astype(np.float32)
    empty = np.asarray(adata.X.sum(axis=1)).ravel() == 0
    if empty.any():
        # scanpy would divide by zero; empty spots stay zero (they are kept for spatial integrity)
        logger.info("preprocess_st: %d spots have no counts in the kept genes; they stay 0.", int(empty.sum()))
    libsize = np.asarray(adata.X.sum(axis=1)).ravel()
    target = float(np.median(libsize[~empty])) if target_sum is None else float(target_sum)
    scale = np.divide(target, libsize, out=np.zeros_like(libsize, dtype=np.float64), where=libsize > 0)
    adata.X = (sp.diags(scale.astype(np.float32)) @ sp.csr_matrix(adata.X)).tocsr() if sp.issparse(adata.X) else adata.X * scale[:, None]
    sc.pp.log1p(adata)
    if n_top_genes is not None and n_top_genes < adata.n_vars:
        sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top_genes), flavor="seurat", subset=True)
    record_step(adata, "preprocess_st", {
        "min_spots": int(min_spots), "drop_mito": drop_mito, "drop_ercc": drop_ercc,
        "target_sum": target, "n_top_genes": None if n_top_genes is None else int(n_top_genes),
    })
    return adata if copy else None
