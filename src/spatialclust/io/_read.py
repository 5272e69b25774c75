"""One entry point that reads any supported spatial dataset by its file type."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from .. import _keys as K
from ._images import read_ion_images
from ._h5ad import read_h5ad
from ._imzml import read_imzml
from ._metaspace import METASPACE_PIXEL_X, is_metaspace_anndata, metaspace_to_adata
from ._spatialdata import read_spatialdata
from ._st import read_st_h5ad, read_visium
from ._zarr import is_imzml_store, read_imzml_store


def read(path: str | os.PathLike, **kwargs: Any) -> ad.AnnData:
    """Read a spatial dataset, choosing the reader from the file type.

    ``.imzML`` -> :func:`read_imzml`; a ``.zarr`` imzML store (``read_imzml(..., store=...)``) ->
    :func:`read_imzml_store` (lazy); another ``.zarr`` (SpatialData) -> :func:`read_spatialdata`; ``.npz``/``.npy``/``.tif``/``.tiff`` -> :func:`read_ion_images`;
    a folder -> :func:`read_visium` (Space Ranger output); ``.h5ad`` -> as stored when it already
    follows the data model (integer ``obsm["spatial"]`` grid and ``uns["grid"]``), as a METASPACE
    dataset (:func:`read_metaspace`) when in metaspace-converter's layout, otherwise
    :func:`read_st_h5ad`, which rasterises its spots onto their array grid. ``kwargs`` go to the
    chosen reader.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input {str(path)!r} does not exist.")
    if path.suffix.lower() == ".zarr":
        if is_imzml_store(path):
            if kwargs:
                raise ValueError(f"{str(path)!r} is an imzML Zarr store, binned when it was written: reader options "
                                 f"{sorted(kwargs)} do not apply (rebuild it with read_imzml(..., store=...)).")
            return read_imzml_store(path)
        return read_spatialdata(path, **kwargs)
    suffix = path.suffix.lower()
    if path.is_dir():
        if suffix == ".imzml":
            return read_imzml(path, **kwargs)  # raises: a directory is not an imzML file
        return read_visium(path, **kwargs)
    if suffix == ".imzml":
        return read_imzml(path, **kwargs)
    if suffix in (".npz", ".npy", ".tif", ".tiff"):
        return read_ion_images(path, **kwargs)
    if suffix == ".h5ad":
        if kwargs and not _is_metaspace_file(path):
            return read_st_h5ad(path, **kwargs)
        adata = read_h5ad(path)
        if is_metaspace_anndata(adata):
            return metaspace_to_adata(adata, path=path, **kwargs)
        coords = adata.obsm.get(K.SPATIAL)
        if coords is not None and K.GRID in adata.uns and np.issubdtype(np.asarray(coords).dtype, np.integer):
            return adata
        return read_st_h5ad(path)
    raise ValueError(
        f"Unsupported input {str(path)!r}: expected .imzML, .h5ad, .npz, .npy, .tif, .tiff, a SpatialData .zarr "
        "store or a Visium folder."
    )


def _is_metaspace_file(path: Path) -> bool:
    """Whether an h5ad holds metaspace-converter's pixel columns, read from its obs group only."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return "obs" in fh and METASPACE_PIXEL_X in fh["obs"]
    except OSError:  # not HDF5: read_h5ad names the file when it is read
        return False
