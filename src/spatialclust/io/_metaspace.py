"""METASPACE interoperability: read datasets exported by metaspace-converter, export colocalization.

`METASPACE <https://metaspace2020.eu>`_ annotates MSI datasets (formula + adduct at an FDR) and
ranks co-localised annotations by the cosine similarity of their ion images after the colocML
preprocessing (Ovchinnikova et al. 2020, Bioinformatics 36:3215; median filter 3 x 3, then every
pixel below the image's median set to 0). ``metaspace_converter.metaspace_to_anndata`` stores a
dataset as AnnData with:

- ``X``: (n_pixels, n_ions), every cell of the ``(height, width)`` ion-image grid in row-major order;
- ``obs["ion_image_pixel_x"]``, ``obs["ion_image_pixel_y"]``, ``obs["ion_image_shape_x"]``,
  ``obs["ion_image_shape_y"]``; ``obsm["spatial"]`` (ion-image pixels, or optical-image
  coordinates when the optical image was added);
- ``var`` indexed by ``formula_adduct`` (``formula + adduct + chemMod + neutralLoss``) with
  ``formula``, ``adduct``, ``mz``, ``fdr``, ``msm``, ``moleculeNames`` (a JSON list), ...;
- ``uns["metaspace"]``: dataset id, name, polarity, ``image_size``, metadata;
- ``varp["colocalization"]`` after its ``colocalization`` function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import atomic_path
from .._logging import logger
from ._h5ad import read_h5ad
from ._images import images_to_adata

#: ``obs`` columns of metaspace-converter's AnnData layout.
METASPACE_PIXEL_X, METASPACE_PIXEL_Y = "ion_image_pixel_x", "ion_image_pixel_y"
METASPACE_SHAPE_X, METASPACE_SHAPE_Y = "ion_image_shape_x", "ion_image_shape_y"
METASPACE_UNS = "metaspace"
#: ``varp`` key of metaspace-converter's cosine colocalization matrix.
COLOCALIZATION = "colocalization"

_PREPROCESSING = ("colocml", "none")


def _text(column: pd.Series) -> pd.Series:
    """A text column with "" for missing values (h5ad gives categoricals back)."""
    return column.astype(object).where(column.notna(), "").astype(str)


def is_metaspace_anndata(adata: ad.AnnData) -> bool:
    """True for an AnnData in metaspace-converter's layout (pixel columns in ``obs``)."""
    return METASPACE_PIXEL_X in adata.obs and METASPACE_PIXEL_Y in adata.obs


def _molecule_names(value: Any) -> str:
    """``moleculeNames`` as stored by metaspace-converter (a JSON list) -> ``"a; b"``."""
    if not isinstance(value, str):
        return ""
    try:
        names = json.loads(value)
    except json.JSONDecodeError:
        return value
    return "; ".join(map(str, names)) if isinstance(names, list) else str(names)


def read_metaspace(path: str | os.PathLike, *, mask: str = "nonzero") -> ad.AnnData:
    """Read a METASPACE dataset saved as h5ad by metaspace-converter into the package's data model.

    Parameters
    ----------
    path
        ``.h5ad`` written from ``metaspace_converter.metaspace_to_anndata(...)``.
    mask
        ``"nonzero"`` (default): keep the grid cells where any annotated ion has signal (METASPACE
        stores every cell of the rectangle, 0 outside the acquired area); ``"all"``: every cell.

    Returns
    -------
    AnnData with obs = pixels, ``obsm["spatial"]`` = integer ion-image (x, y),
    ``uns["grid"]`` (``pixel_size`` from the METASPACE metadata when recorded), var = annotations
    (index: METASPACE ion ``formula_adduct``) with ``var["mz"]``, ``var["formula"]``,
    ``var["adduct"]``, ``var["molecule_names"]`` and METASPACE's other columns (``fdr``, ``msm``,
    ...), ``uns["metaspace"]`` kept, ``varp["colocalization"]`` kept when present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"METASPACE AnnData file {str(path)!r} does not exist.")
    return metaspace_to_adata(read_h5ad(path), path=path, mask=mask)


def metaspace_to_adata(src: ad.AnnData, *, path: str | os.PathLike = "<AnnData>", mask: str = "nonzero") -> ad.AnnData:
    """:func:`read_metaspace` for an AnnData already in memory (``path`` only names it in messages)."""
    path = Path(path)
    if mask not in ("nonzero", "all"):
        raise ValueError(f"Invalid option {mask!r} for `mask`. Valid options are: nonzero, all.")
    if not is_metaspace_anndata(src):
        raise ValueError(
            f"{str(path)!r} is not in metaspace-converter's layout: expected obs columns "
            f"{METASPACE_PIXEL_X!r} and {METASPACE_PIXEL_Y!r}, found {list(src.obs.columns)}."
        )
    for column in (K.MZ, "formula", "adduct"):
        if column not in src.var:
            raise ValueError(f"{str(path)!r}: METASPACE annotations lack var[{column!r}]; found {list(src.var.columns)}.")
    xs = src.obs[METASPACE_PIXEL_X].to_numpy(np.int64)
    ys = src.obs[METASPACE_PIXEL_Y].to_numpy(np.int64)
    if METASPACE_SHAPE_Y in src.obs and METASPACE_SHAPE_X in src.obs:
        height, width = int(src.obs[METASPACE_SHAPE_Y].iloc[0]), int(src.obs[METASPACE_SHAPE_X].iloc[0])
    else:
        height, width = int(ys.max()) + 1, int(xs.max()) + 1
    if xs.min() < 0 or ys.min() < 0 or xs.max() >= width or ys.max() >= height:
        raise ValueError(f"{str(path)!r}: pixel coordinates fall outside the ion-image shape {(height, width)}.")
    values = src.X.toarray() if hasattr(src.X, "toarray") else np.asarray(src.X)
    images = np.zeros((src.n_vars, height, width), dtype=np.float32)
    images[:, ys, xs] = values.T
    if not np.isfinite(images).all():
        raise ValueError(f"{str(path)!r}: non-finite intensities; METASPACE exports finite ion images.")
    grid_mask = (images != 0).any(axis=0) if mask == "nonzero" else None
    meta = src.uns.get(METASPACE_UNS, {})
    adata = images_to_adata(images, mz=src.var[K.MZ].to_numpy(np.float64), names=list(src.var_names),
                            mask=grid_mask, pixel_size=_pixel_size(meta))
    var = src.var.copy()
    var[K.FORMULA] = _text(var["formula"])
    var[K.ADDUCT] = _text(var["adduct"])
    var[K.MOLECULE_NAMES] = var["moleculeNames"].map(_molecule_names) if "moleculeNames" in var else ""
    adata.var = var.assign(**{K.MZ: adata.var[K.MZ].to_numpy()})
    if COLOCALIZATION in src.varp:
        adata.varp[COLOCALIZATION] = np.asarray(src.varp[COLOCALIZATION], dtype=np.float32)
    if meta:
        adata.uns[METASPACE_UNS] = meta
    adata.uns[K.SOURCE] = {"file": str(path), "reader": "read_metaspace", "dataset_id": str(meta.get("id", ""))}
    logger.info("Read METASPACE dataset %s: %d annotations, %d pixels.", meta.get("id", path.name), adata.n_vars, adata.n_obs)
    return adata


def _pixel_size(meta: Any) -> float | None:
    """Pixel size in µm from METASPACE metadata (``MS_Analysis.Pixel_Size.Xaxis``), if recorded."""
    try:
        metadata = meta["metadata"]
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        size = metadata["MS_Analysis"]["Pixel_Size"]
        x, y = float(size["Xaxis"]), float(size["Yaxis"])
    except (KeyError, TypeError, ValueError):
        return None
    return x if x == y and x > 0 else None


def colocml_images(images: np.ndarray, *, median_size: int = 3, quantile: float = 0.5) -> np.ndarray:
    """The colocML preprocessing of METASPACE: per-image median filter, then pixels below the
    image's ``quantile`` set to 0 (Ovchinnikova et al. 2020)."""
    from scipy import ndimage

    filtered = ndimage.median_filter(np.asarray(images, dtype=np.float32), size=(1, median_size, median_size))
    flat = filtered.reshape(len(filtered), -1)
    flat[flat < np.quantile(flat, quantile, axis=1, keepdims=True)] = 0
    return flat.reshape(filtered.shape)


def cosine_colocalization(adata: ad.AnnData, *, preprocessing: str = "colocml") -> np.ndarray:
    """Cosine similarity of every pair of ion images, as METASPACE ranks co-localised annotations.

    Parameters
    ----------
    adata
        Spatial dataset (ion images on its grid).
    preprocessing
        ``"colocml"`` (METASPACE's: median filter 3 x 3, 50 % quantile threshold) or ``"none"``.

    Returns
    -------
    float32 ``(n_vars, n_vars)``; an all-zero image has similarity 0 with every image.
    """
    from ..pp import feature_images

    if preprocessing not in _PREPROCESSING:
        raise ValueError(f"Invalid option {preprocessing!r} for `preprocessing`. Valid options are: {', '.join(_PREPROCESSING)}.")
    images = feature_images(adata)
    if preprocessing == "colocml":
        images = colocml_images(images)
    flat = images.reshape(len(images), -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)
    return (unit @ unit.T).astype(np.float32)


def _ion_names(adata: ad.AnnData) -> list[str]:
    """METASPACE ion names ``formula + adduct`` ("C6H12O6+K") where annotated, else the var name."""
    blank = pd.Series("", index=adata.var_names)
    formulas = _text(adata.var[K.FORMULA]) if K.FORMULA in adata.var else blank
    adducts = _text(adata.var[K.ADDUCT]) if K.ADDUCT in adata.var else blank
    names = []
    for name, formula, adduct in zip(adata.var_names, formulas, adducts):
        if not formula:
            names.append(str(name))
            continue
        # candidate lists "C39H79N2O6P; C40H79O7P" with one adduct or one adduct per candidate
        candidates, adducts_ = formula.split("; "), adduct.split("; ")
        if len(adducts_) != len(candidates):
            adducts_ = adducts_[:1] * len(candidates)
        # "M+K" -> "+K", as METASPACE writes adducts
        names.append("; ".join(f + (a[1:] if a.startswith("M") else a) for f, a in zip(candidates, adducts_)))
    return names


def colocalization_tables(
    adata: ad.AnnData,
    *,
    key: str = "cluster",
    preprocessing: str = "colocml",
    n_top: int = 5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-ion cluster table and co-localised ion pairs, in the terms METASPACE users work with.

    Parameters
    ----------
    adata
        Dataset with a clustering of its ion images in ``var[key]`` (``sc.tl.cluster``).
    key
        Cluster column of ``var`` (``-1`` = noise).
    preprocessing
        Image preprocessing before the cosine similarity, see :func:`cosine_colocalization`.
    n_top
        Co-localised partners listed per ion.

    Returns
    -------
    ions
        One row per ion: ``ion`` (formula + adduct, else the var name), ``mz``, ``formula``,
        ``adduct``, ``molecule_names`` (when annotated), ``cluster``, ``cluster_size``,
        ``cosine_to_cluster`` (mean cosine similarity to the other members of its cluster; NaN for
        noise and single-member clusters), ``top_colocalized`` (``"ion (0.93); ..."``).
    pairs
        ``ion``, ``partner``, ``rank``, ``cosine``, ``same_cluster``: the ``n_top`` most
        co-localised partners of every ion.
    """
    if key not in adata.var:
        raise KeyError(f"`key`={key!r} is not a column of var; run sc.tl.cluster first (var has {list(adata.var.columns)}).")
    if n_top < 1:
        raise ValueError(f"`n_top` must be >= 1, got {n_top}.")
    labels = adata.var[key].to_numpy().astype(int)
    cosine = cosine_colocalization(adata, preprocessing=preprocessing)
    names = _ion_names(adata)
    ions = pd.DataFrame({"ion": names, "var_name": adata.var_names.astype(str)})
    ions[K.MZ] = adata.var[K.MZ].to_numpy() if K.MZ in adata.var else np.nan
    for column in (K.FORMULA, K.ADDUCT, K.MOLECULE_NAMES):
        if column in adata.var:
            ions[column] = _text(adata.var[column]).to_numpy()
    ions["cluster"] = labels
    sizes = pd.Series(labels).value_counts()
    ions["cluster_size"] = [int(sizes[c]) if c >= 0 else 0 for c in labels]
    within = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        others = (labels == c) & (np.arange(len(labels)) != i)
        if c >= 0 and others.any():
            within[i] = float(cosine[i, others].mean())
    ions["cosine_to_cluster"] = within
    off = cosine.astype(np.float64)
    np.fill_diagonal(off, -np.inf)
    n_top = min(n_top, len(labels) - 1)
    order = np.argsort(-off, axis=1, kind="stable")[:, :n_top]
    ions["top_colocalized"] = ["; ".join(f"{names[j]} ({cosine[i, j]:.2f})" for j in row) for i, row in enumerate(order)]
    pairs = pd.DataFrame({
        "ion": np.repeat(names, n_top),
        "partner": [names[j] for row in order for j in row],
        "rank": np.tile(np.arange(1, n_top + 1), len(names)),
        "cosine": [float(cosine[i, j]) for i, row in enumerate(order) for j in row],
        "same_cluster": [bool(labels[i] == labels[j] and labels[i] >= 0) for i, row in enumerate(order) for j in row],
    })
    return ions, pairs


def write_metaspace_colocalization(
    adata: ad.AnnData,
    folder: str | os.PathLike,
    *,
    key: str = "cluster",
    preprocessing: str = "colocml",
    n_top: int = 5,
) -> dict[str, Path]:
    """Write :func:`colocalization_tables` as ``<folder>/<key>_ions.csv`` and ``<key>_colocalization.csv``.

    Each file is written atomically. Parameters as for :func:`colocalization_tables`.

    Returns
    -------
    ``{"ions": path, "pairs": path}``.
    """
    ions, pairs = colocalization_tables(adata, key=key, preprocessing=preprocessing, n_top=n_top)
    folder = Path(folder)
    paths = {"ions": folder / f"{key}_ions.csv", "pairs": folder / f"{key}_colocalization.csv"}
    for name, table in (("ions", ions), ("pairs", pairs)):
        with atomic_path(paths[name]) as tmp:
            table.to_csv(tmp, index=False)
    logger.info("Wrote METASPACE-style colocalization tables %s and %s.", paths["ions"], paths["pairs"])
    return paths
