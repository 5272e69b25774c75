"""SpatialData (scverse) in and out: read MSI or Visium stores, write a run as a SpatialData Zarr store.

`SpatialData <https://spatialdata.scverse.org>`_ (Marconato et al. 2024, Nat. Methods) stores images,
labels, shapes and AnnData tables in one Zarr store, each element with its coordinate
transformations. Reading accepts:

- **MSI** as written by thyra/msiconvert from imzML: a table whose ``obs`` holds the integer pixel
  position ``x``, ``y`` (and ``spatial_x``, ``spatial_y`` in µm), ``var["mz"]``, ``X`` over every
  cell of the pixel rectangle; also the stores :func:`write_spatialdata` writes;
- **Visium** as written by spatialdata-io: a table with ``obs["array_row"]``, ``obs["array_col"]``
  (rasterised on the hexagonal array like :func:`spatialclust.io.read_visium`).

Writing puts in one store: the table (the AnnData with clusters in ``var``, embeddings in ``varm``)
annotating a labels element ``pixels`` (label ``i + 1`` = obs row ``i``), the ion/gene images as a
multichannel image ``feature_images`` (channels = var names), one image ``<key>_means`` per
clustering (channel ``cluster_<id>`` = mean image of the members), and the H&E as ``histology``
with its transformation into the common ``global`` frame (µm when the pixel size is known), so that
napari-spatialdata and spatialdata-plot open a run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import atomic_path, remove
from .._compat import require
from .._logging import logger

#: Element names of the stores written by :func:`write_spatialdata`.
PIXELS, FEATURE_IMAGES, HISTOLOGY, TABLE = "pixels", "feature_images", "histology", "table"
#: Coordinate system shared by every element.
GLOBAL = "global"
_REGION_KEY, _INSTANCE_KEY = "region", "instance_id"
_NOT_DATA = ("average_spectrum",)  # thyra's side table


def _spatialdata():
    return require("spatialdata", purpose="reading and writing SpatialData Zarr stores (pip install spatialdata)")


def read_spatialdata(path: str | os.PathLike, *, table: str | None = None, mask: str = "nonzero") -> ad.AnnData:
    """Read the table of a SpatialData Zarr store (MSI or Visium) into the package's data model.

    Parameters
    ----------
    path
        The ``.zarr`` store.
    table
        Name of the table to read; default: the only table (thyra's ``average_spectrum`` aside).
    mask
        MSI tables over the whole pixel rectangle: ``"nonzero"`` keeps the pixels with any signal,
        ``"all"`` every cell.

    Returns
    -------
    AnnData as described in ``docs/data_model.md`` (MSI: pixels on their grid, ``var["mz"]``;
    Visium: spots rasterised on the array grid), ``uns["source"]`` naming the store and table.
    """
    sd = _spatialdata()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SpatialData store {str(path)!r} does not exist.")
    if mask not in ("nonzero", "all"):
        raise ValueError(f"Invalid option {mask!r} for `mask`. Valid options are: nonzero, all.")
    sdata = sd.read_zarr(path)
    names = [n for n in sdata.tables.keys() if n not in _NOT_DATA]
    if table is None:
        if len(names) != 1:
            raise ValueError(f"{str(path)!r} holds the tables {names}; choose one with `table=`.")
        table = names[0]
    elif table not in sdata.tables:
        raise ValueError(f"Invalid option {table!r} for `table`. Valid options are: {', '.join(sdata.tables.keys())}.")
    src = sdata.tables[table].copy()
    source = {"reader": "read_spatialdata", "path": str(path), "table": table}
    if "x" in src.obs and "y" in src.obs:
        adata = _msi_table(src, mask=mask, label=f"{path}:{table}")
    elif "array_row" in src.obs and "array_col" in src.obs:
        from ._st import VISIUM_SPOT_PITCH_UM, st_table_to_adata

        adata = st_table_to_adata(src, path=f"{path}:{table}", array_keys=("array_col", "array_row"), layout="hexagonal",
                                  pixel_size=VISIUM_SPOT_PITCH_UM, source=source)
    else:
        raise ValueError(
            f"Table {table!r} of {str(path)!r} has no pixel positions: expected obs columns 'x', 'y' (MSI, e.g. thyra) "
            f"or 'array_row', 'array_col' (Visium); found {list(src.obs.columns)}."
        )
    adata.uns[K.SOURCE] = source
    logger.info("Read table %r of %s: %d obs x %d features.", table, path, adata.n_obs, adata.n_vars)
    return adata


def _msi_table(src: ad.AnnData, *, mask: str, label: str) -> ad.AnnData:
    """An MSI table with integer ``obs["x"]``, ``obs["y"]`` -> data model (pixels on their grid)."""
    xs, ys = src.obs["x"].to_numpy(np.int64), src.obs["y"].to_numpy(np.int64)
    if xs.min() < 0 or ys.min() < 0:
        raise ValueError(f"{label}: negative pixel positions in obs['x'] / obs['y'].")
    grid = dict(src.uns.get(K.GRID, {}))
    height, width = grid.get("shape", (int(ys.max()) + 1, int(xs.max()) + 1))
    pixel_size = grid.get("pixel_size")
    if pixel_size is None and "spatial_x" in src.obs:
        steps = src.obs["spatial_x"].to_numpy(float)[xs > 0] / xs[xs > 0]
        pixel_size = float(np.median(steps)) if len(steps) else None
    X = src.X.tocsr() if hasattr(src.X, "tocsr") else np.asarray(src.X)
    keep = np.ones(src.n_obs, dtype=bool)
    if mask == "nonzero":
        keep = np.asarray((abs(X) > 0).sum(axis=1)).ravel() > 0
    adata = src[keep].copy()
    adata.obsm[K.SPATIAL] = np.column_stack([xs[keep], ys[keep]]).astype(np.int64)
    adata.uns[K.GRID] = {**grid, "shape": [int(height), int(width)], "pixel_size": None if pixel_size is None else float(pixel_size)}
    for column in ("x", "y", "spatial_x", "spatial_y", _REGION_KEY, _INSTANCE_KEY, "instance_key"):
        if column in adata.obs:
            del adata.obs[column]
    adata.uns.pop("spatialdata_attrs", None)
    if K.MZ not in adata.var:
        raise ValueError(f"{label}: the MSI table has no var['mz']; found {list(adata.var.columns)}.")
    adata.var[K.MZ] = adata.var[K.MZ].astype(np.float64)
    adata.X = adata.X.astype(np.float32)
    return adata


def _cluster_keys(adata: ad.AnnData) -> list[str]:
    """var columns written by ``sc.tl.cluster`` / ``sc.tl.self_label`` (integer labels with an uns record)."""
    return [k for k in adata.var.columns if k in adata.uns and np.issubdtype(adata.var[k].dtype, np.integer)]


def write_spatialdata(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    cluster_keys: list[str] | None = None,
    feature_images: bool = True,
    histology: str | os.PathLike | np.ndarray | None = None,
    histology_transform: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset and its results as a SpatialData Zarr store (atomically).

    Parameters
    ----------
    adata
        Spatial dataset in the package's data model (``obsm["spatial"]`` grid, ``uns["grid"]``).
    path
        The ``.zarr`` store to create.
    cluster_keys
        Clusterings (``var`` columns) to write as mean images; default: every clustering in ``var``.
    feature_images
        Write every ion/gene image as one channel of the ``feature_images`` image.
    histology
        H&E image (tiff/png/jpg file or array, read by :func:`spatialclust.io.read_histology`),
        stored as 8-bit RGB.
    histology_transform
        3 x 3 affine matrix from histology pixels (x, y, 1) to ion-image pixels; default: the
        histology stretched onto the ion-image extent (not registered, as in the report's overlay).
    overwrite
        Replace an existing store.

    Returns
    -------
    The store's path. Elements: ``pixels`` (labels), ``table``, ``feature_images``,
    ``<key>_means`` per clustering, ``histology``; all in the ``global`` frame (µm when
    ``uns["grid"]["pixel_size"]`` is known, else ion-image pixels).
    """
    sd = _spatialdata()
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel
    from spatialdata.transformations import Affine, Identity, Scale, Sequence

    from ..pp import feature_images as images_of

    path = Path(path)
    if K.SPATIAL not in adata.obsm or K.GRID not in adata.uns:
        raise ValueError("`adata` must follow the data model: obsm['spatial'] (integer grid) and uns['grid'] are required.")
    height, width = (int(v) for v in adata.uns[K.GRID]["shape"])
    xy = np.asarray(adata.obsm[K.SPATIAL], dtype=np.int64)
    pixel_size = adata.uns[K.GRID].get("pixel_size")
    to_global = Scale([pixel_size, pixel_size], axes=("y", "x")) if pixel_size else Identity()
    keys = _cluster_keys(adata) if cluster_keys is None else list(cluster_keys)
    missing = [k for k in keys if k not in adata.var]
    if missing:
        raise KeyError(f"`cluster_keys`: {missing} are not columns of var; clusterings in var: {_cluster_keys(adata)}.")

    labels = np.zeros((height, width), dtype=np.int32)
    labels[xy[:, 1], xy[:, 0]] = np.arange(1, adata.n_obs + 1, dtype=np.int32)
    elements: dict[str, Any] = {"labels": {PIXELS: Labels2DModel.parse(labels, dims=("y", "x"), transformations={GLOBAL: to_global})}}
    images: dict[str, Any] = {}
    stack = images_of(adata) if feature_images or keys else None  # the dense (n_vars, H, W) stack only when used
    if feature_images:
        images[FEATURE_IMAGES] = Image2DModel.parse(stack, dims=("c", "y", "x"), c_coords=list(map(str, adata.var_names)),
                                                   transformations={GLOBAL: to_global})
    for key in keys:
        clusters = [int(c) for c in sorted(set(adata.var[key].astype(int))) if c >= 0]
        if not clusters:
            continue
        labels_of = adata.var[key].to_numpy().astype(int)
        means = np.stack([stack[labels_of == c].mean(axis=0) for c in clusters])
        images[f"{key}_means"] = Image2DModel.parse(means, dims=("c", "y", "x"), c_coords=[f"cluster_{c}" for c in clusters],
                                                   transformations={GLOBAL: to_global})
    if histology is not None:
        from ._histology import read_histology  # the one histology reader (Pillow, then tifffile); RGB in [0, 1]

        he = np.round(read_histology(histology) * 255).astype(np.uint8)
        if histology_transform is None:
            histology_transform = np.diag([width / he.shape[1], height / he.shape[0], 1.0])
        matrix = np.asarray(histology_transform, dtype=np.float64)
        if matrix.shape != (3, 3):
            raise ValueError(f"`histology_transform` must be a 3 x 3 affine matrix, got shape {matrix.shape}.")
        he_to_grid = Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))
        images[HISTOLOGY] = Image2DModel.parse(he, dims=("y", "x", "c"), c_coords=["r", "g", "b"],
                                              transformations={GLOBAL: Sequence([he_to_grid, to_global])})
    elements["images"] = images

    table = adata.copy()
    table.obs["x"], table.obs["y"] = xy[:, 0], xy[:, 1]
    if pixel_size:
        table.obs["spatial_x"], table.obs["spatial_y"] = xy[:, 0] * pixel_size, xy[:, 1] * pixel_size
    table.obs[_REGION_KEY] = pd.Categorical([PIXELS] * table.n_obs)
    table.obs[_INSTANCE_KEY] = np.arange(1, table.n_obs + 1, dtype=np.int64)
    table.uns[K.GRID] = {"shape": [int(height), int(width)], "pixel_size": pixel_size}
    elements["tables"] = {TABLE: TableModel.parse(table, region=PIXELS, region_key=_REGION_KEY, instance_key=_INSTANCE_KEY)}
    sdata = sd.SpatialData(**elements)
    with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # notices of ome-zarr and zarr about their own future defaults: nothing a user can act on
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        warnings.filterwarnings("ignore", message="Call to deprecated class Scaler", category=DeprecationWarning)
        store = tmp.with_suffix(".zarr")  # SpatialData writes only to paths ending in .zarr
        try:
            sdata.write(store)
            store.rename(tmp)
        finally:
            remove(store)
    logger.info("Wrote SpatialData store %s (%s).", path, ", ".join([PIXELS, TABLE, *images]))
    return path
