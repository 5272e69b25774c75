"""One entry point that reads any supported spatial dataset by its file type."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anndata as ad

from .. import _keys as K
from ._images import read_ion_images
from ._imzml import read_imzml


def read(path: str | os.PathLike, **kwargs: Any) -> ad.AnnData:
    """Read a spatial dataset, choosing the reader from the file type.

    ``.imzML`` -> :func:`read_imzml`; ``.npz``/``.npy``/``.tif``/``.tiff`` -> :func:`read_ion_images`;
    ``.h5ad`` -> :func:`anndata.read_h5ad` (must already follow the data model: ``obsm["spatial"]``).
    ``kwargs`` go to the chosen reader.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".imzml":
        return read_imzml(path, **kwargs)
    if suffix in (".npz", ".npy", ".tif", ".tiff"):
        return read_ion_images(path, **kwargs)
    if suffix == ".h5ad":
        if kwargs:
            raise TypeError(f"Reading .h5ad takes no options, got {sorted(kwargs)}.")
        adata = ad.read_h5ad(path)
        if K.SPATIAL not in adata.obsm:
            raise ValueError(f"{str(path)!r} has no `obsm[{K.SPATIAL!r}]` with the spatial positions of its pixels/spots.")
        return adata
    raise ValueError(
        f"Unsupported input {str(path)!r}: expected .imzML, .h5ad, .npz, .npy, .tif or .tiff."
    )
