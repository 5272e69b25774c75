"""Readers for spatial transcriptomics: 10x Visium output folders, legacy ST arrays, ST h5ad files.

Every reader returns an AnnData in the package's data model (obs = spots, var = genes, X = raw
counts) with the spots already rasterised onto their array grid by
:func:`spatialclust.pp.rasterize_spots`, so that every gene is an image
(``sc.pp.feature_images``) and ``obs["tissue"]`` is the tissue mask:

- ``obsm["spatial"]``: int64 grid position (x, y) of every spot;
- ``obsm["spatial_array"]``: the spot's array position (column, row) as read;
- ``obsm["spatial_px"]``: the spot's position on the full-resolution tissue image, if known;
- ``uns["grid"]``: ``{"shape": [H, W], "pixel_size": spot pitch in µm, "layout": ...}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys
from .._logging import logger
from ._h5ad import read_h5ad

#: Spot pitch (centre-to-centre distance) of the arrays, in µm.
VISIUM_SPOT_PITCH_UM = 100.0
LEGACY_ST_SPOT_PITCH_UM = 200.0
LEGACY_2K_SPOT_PITCH_UM = 100.0

_POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv", "tissue_positions.parquet")
_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
_MATRIX_FILES = ("filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5")


def read_visium(
    path: str | Path,
    *,
    count_file: str | None = None,
    only_tissue: bool = False,
) -> ad.AnnData:
    """Read a 10x Genomics Space Ranger output folder (Visium).

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder, holding the count matrix (``filtered_feature_bc_matrix.h5``)
        and ``spatial/`` with ``tissue_positions.csv`` (Space Ranger >= 2.0, with header) or
        ``tissue_positions_list.csv`` (older, no header) and ``scalefactors_json.json``.
    count_file
        Name of the count matrix inside ``path`` (default: the filtered matrix, else the raw one).
    only_tissue
        Keep only spots under tissue. The default keeps every spot in the matrix (the filtered
        matrix already holds only tissue spots) and marks them in ``obs["tissue"]``.

    Returns
    -------
    AnnData with raw counts in ``X``, ``var["gene_ids"]``, rasterised spots (see module docstring),
    ``uns["spatial_scalefactors"]`` (the scale factors JSON) and ``uns["source"]``.

    Raises
    ------
    FileNotFoundError
        When the folder, the count matrix or the positions file is missing (the message lists the
        file names that were looked for).
    """
    import scanpy as sc

    from ..pp import rasterize_spots

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Visium folder {str(folder)!r} does not exist or is not a directory.")
    candidates = (count_file,) if count_file else _MATRIX_FILES
    matrix = next((folder / c for c in candidates if (folder / c).is_file()), None)
    if matrix is None:
        raise FileNotFoundError(
            f"Visium folder {str(folder)!r} has no count matrix; looked for {', '.join(map(repr, candidates))}."
        )
    spatial = folder / "spatial"
    positions_file = next((spatial / n for n in _POSITION_FILES if (spatial / n).is_file()), None)
    if positions_file is None:
        raise FileNotFoundError(
            f"Visium folder {str(folder)!r} is missing its spot positions file: looked for "
            f"{', '.join('spatial/' + n for n in _POSITION_FILES)}."
        )
    adata = sc.read_10x_h5(matrix)
    adata.var_names_make_unique()
    positions = _read_positions(positions_file)
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} spots of {matrix.name!r} have no coordinates in {str(positions_file)!r} "
            f"(first: {list(missing[:3])})."
        )
    positions = positions.loc[adata.obs_names]
    if only_tissue:
        keep = positions["in_tissue"].to_numpy().astype(bool)
        adata, positions = adata[keep].copy(), positions[keep]
    adata.obs[_keys.TISSUE] = positions["in_tissue"].to_numpy().astype(bool)
    adata.obsm[_keys.SPATIAL_ARRAY] = positions[["array_col", "array_row"]].to_numpy(np.int64)
    adata.obsm[_keys.SPATIAL_PX] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    scalefactors = spatial / "scalefactors_json.json"
    pixel_size = VISIUM_SPOT_PITCH_UM
    if scalefactors.is_file():
        factors = json.loads(scalefactors.read_text())
        adata.uns["spatial_scalefactors"] = factors
    else:
        logger.warning("Visium folder %s has no spatial/scalefactors_json.json; image scale unknown.", folder)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns[_keys.SOURCE] = {"reader": "read_visium", "path": str(folder), "count_file": matrix.name,
                               "positions_file": positions_file.name}
    rasterize_spots(adata, layout="hexagonal", pixel_size=pixel_size)
    return adata


def _read_positions(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        first = path.read_text().split("\n", 1)[0]
        has_header = "barcode" in first or "in_tissue" in first
        table = pd.read_csv(path, header=0 if has_header else None)
        if not has_header:
            table.columns = _POSITION_COLUMNS[: table.shape[1]]
    absent = [c for c in _POSITION_COLUMNS[:4] if c not in table.columns]
    if absent:
        raise ValueError(f"Positions file {str(path)!r} lacks the columns {absent}; found {list(table.columns)}.")
    for c in _POSITION_COLUMNS[4:]:
        if c not in table.columns:
            table[c] = np.nan
    return table.set_index("barcode")


_SPOT_NAME = re.compile(r"^\s*(-?\d+(?:\.\d+)?)x(-?\d+(?:\.\d+)?)\s*$")


def read_legacy_st(
    path: str | Path,
    *,
    spots: str | Path | None = None,
    array_keys: tuple[str, str] = ("array_x", "array_y"),
    tissue_key: str | None = "in_tissue",
) -> ad.AnnData:
    """Read a legacy Spatial Transcriptomics array (Ståhl et al., 2016; 100 µm spots).

    Two inputs are accepted:

    - an ``.h5ad`` file (e.g. the STUtility example data) with the array position of every spot in
      ``obs[array_keys]``;
    - a count matrix ``.tsv``/``.tsv.gz`` with one row per spot named ``"XxY"`` (the ST pipeline
      format) and one column per gene, optionally with the ST spot detector table ``spots``
      (columns ``x y new_x new_y pixel_x pixel_y``; the adjusted ``new_x``/``new_y`` are used).

    Adjusted (non-integer) array positions are rounded to the square array grid.

    Parameters
    ----------
    path
        The h5ad or tsv file.
    spots
        Optional spot detector table for a tsv count matrix; only spots listed there are kept
        (the spot detector lists the spots under tissue).
    array_keys
        ``obs`` columns with the array (x, y) position, for h5ad input.
    tissue_key
        ``obs`` column marking spots under tissue (h5ad input), or None to treat all as tissue.

    Returns
    -------
    AnnData with raw counts in ``X`` and rasterised spots (see module docstring).
    """
    from ..pp import rasterize_spots

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Legacy ST file {str(path)!r} does not exist.")
    if path.suffix == ".h5ad":
        adata = read_h5ad(path)
        coords = _array_coordinates(adata, array_keys, path)
        tissue = (
            adata.obs[tissue_key].to_numpy().astype(bool)
            if tissue_key and tissue_key in adata.obs
            else np.ones(adata.n_obs, dtype=bool)
        )
    else:
        table = pd.read_csv(path, sep="\t", index_col=0)
        coords = np.array([_parse_spot_name(name, path) for name in table.index.astype(str)])
        if spots is not None:
            detector = pd.read_csv(spots, sep="\t")
            need = ["x", "y", "new_x", "new_y"]
            if any(c not in detector.columns for c in need):
                raise ValueError(f"`spots` table {str(spots)!r} must have columns {need}; found {list(detector.columns)}.")
            lookup = {(int(r.x), int(r.y)): (r.new_x, r.new_y) for r in detector.itertuples()}
            keep = np.array([(int(x), int(y)) in lookup for x, y in coords])
            if not keep.any():
                raise ValueError(f"No spot of {str(path)!r} is listed in the `spots` table {str(spots)!r}.")
            table, coords = table[keep], np.array([lookup[(int(x), int(y))] for x, y in coords[keep]])
        adata = ad.AnnData(X=sp.csr_matrix(table.to_numpy(np.float32)), obs=pd.DataFrame(index=table.index.astype(str)),
                           var=pd.DataFrame(index=table.columns.astype(str)))
        tissue = np.ones(adata.n_obs, dtype=bool)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} spots of {str(path)!r} have no array coordinates (first: {list(adata.obs_names[bad][:3])}).")
    adata.obsm[_keys.SPATIAL_ARRAY] = np.rint(coords).astype(np.int64)
    adata.obs[_keys.TISSUE] = tissue
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    adata.X = adata.X.astype(np.float32)
    adata.uns[_keys.SOURCE] = {"reader": "read_legacy_st", "path": str(path)}
    rasterize_spots(adata, layout="auto")
    # square legacy arrays: 200 µm pitch; the hexagonal 2k array: 100 µm pitch
    hexagonal = adata.uns[_keys.GRID]["layout"] == "hexagonal"
    adata.uns[_keys.GRID]["pixel_size"] = LEGACY_2K_SPOT_PITCH_UM if hexagonal else LEGACY_ST_SPOT_PITCH_UM
    return adata


def _array_coordinates(adata: ad.AnnData, keys: tuple[str, str], path: Path) -> np.ndarray:
    """Array (x, y) positions from ``obs[keys]``; pixel positions in ``obsm["spatial"]`` move to
    ``obsm["spatial_px"]`` (``obsm["spatial"]`` becomes the integer grid when rasterised)."""
    absent = [k for k in keys if k not in adata.obs]
    if absent:
        raise ValueError(f"`array_keys`: {str(path)!r} has no obs columns {absent}; found {list(adata.obs.columns)}.")
    if _keys.SPATIAL in adata.obsm:
        adata.obsm[_keys.SPATIAL_PX] = np.asarray(adata.obsm[_keys.SPATIAL], dtype=np.float64)
        del adata.obsm[_keys.SPATIAL]
    return adata.obs[list(keys)].to_numpy(np.float64)


def _parse_spot_name(name: str, path: Path) -> tuple[float, float]:
    match = _SPOT_NAME.match(name)
    if match is None:
        raise ValueError(f"Spot {name!r} in {str(path)!r} is not named 'XxY' (e.g. '10x12'): its coordinates are unknown.")
    return float(match.group(1)), float(match.group(2))


def read_st_h5ad(
    path: str | Path,
    *,
    array_keys: tuple[str, str] | None = None,
    layout: str = "auto",
    pixel_size: float | None = None,
) -> ad.AnnData:
    """Read any spatial transcriptomics ``.h5ad`` and rasterise its spots onto their array grid.

    The array position of every spot is taken, in this order, from ``obs[array_keys]`` if given,
    from ``obs["array_col"], obs["array_row"]`` (scanpy/Space Ranger names), from
    ``obs["array_x"], obs["array_y"]`` (STUtility names), and otherwise inferred from
    ``obsm["spatial"]`` (e.g. full-resolution pixel positions) by snapping the spots to the lattice
    of their nearest-neighbour spacing (:func:`spatialclust.pp.rasterize_spots`).

    Parameters
    ----------
    path
        The h5ad file.
    array_keys
        ``obs`` columns holding the (column, row) array position.
    layout
        ``"auto"``, ``"square"`` or ``"hexagonal"``; see :func:`spatialclust.pp.rasterize_spots`.
    pixel_size
        Spot pitch in µm recorded in ``uns["grid"]`` (None if unknown).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"h5ad file {str(path)!r} does not exist.")
    return st_table_to_adata(read_h5ad(path), path=path, array_keys=array_keys, layout=layout, pixel_size=pixel_size,
                             source={"reader": "read_st_h5ad", "path": str(path)})


def st_table_to_adata(
    adata: ad.AnnData,
    *,
    path: str | Path,
    array_keys: tuple[str, str] | None = None,
    layout: str = "auto",
    pixel_size: float | None = None,
    source: dict,
) -> ad.AnnData:
    """:func:`read_st_h5ad` for an AnnData in memory (e.g. the table of a SpatialData store);
    ``path`` names it in messages, ``source`` becomes ``uns["source"]``."""
    from ..pp import rasterize_spots

    path = Path(path)
    keys = array_keys
    if keys is None:
        keys = next((k for k in (("array_col", "array_row"), ("array_x", "array_y")) if all(c in adata.obs for c in k)), None)
    if keys is not None:
        coords = _array_coordinates(adata, keys, path)
    elif _keys.SPATIAL in adata.obsm:
        coords = np.asarray(adata.obsm[_keys.SPATIAL], dtype=np.float64)
        adata.obsm[_keys.SPATIAL_PX] = coords
        del adata.obsm[_keys.SPATIAL]
    else:
        raise ValueError(f"{str(path)!r} has neither obs array columns nor obsm['spatial']: the spots have no coordinates.")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} spots of {str(path)!r} have no coordinates (first: {list(adata.obs_names[bad][:3])}).")
    if keys is not None:
        adata.obsm[_keys.SPATIAL_ARRAY] = np.rint(coords).astype(np.int64)
    if _keys.TISSUE not in adata.obs:
        tissue_col = next((c for c in ("in_tissue", "tissue") if c in adata.obs), None)
        adata.obs[_keys.TISSUE] = adata.obs[tissue_col].to_numpy().astype(bool) if tissue_col else True
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(np.asarray(adata.X, dtype=np.float32))
    adata.uns[_keys.SOURCE] = source
    rasterize_spots(adata, layout=layout, pixel_size=pixel_size, from_key=_keys.SPATIAL_ARRAY if keys else _keys.SPATIAL_PX)
    return adata
