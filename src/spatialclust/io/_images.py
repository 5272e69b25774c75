"""Ion-image stacks (npz / npy / tiff) <-> AnnData."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys as K
from .._logging import logger

_STACK_KEYS = ("images", "cube", "X", "stack")
_MZ_KEYS = ("mz", "mzs")
_MASK_KEYS = ("mask", "tissue")


def feature_names_from_mz(mz: np.ndarray) -> list[str]:
    """Unique var names ``"mz-426.9289"`` for m/z values (more decimals where needed)."""
    for decimals in (4, 5, 6, 8):
        names = [f"mz-{m:.{decimals}f}" for m in mz]
        if len(set(names)) == len(names):
            return names
    return [f"mz-{m!r}-{i}" for i, m in enumerate(mz)]


def images_to_adata(
    images: np.ndarray,
    *,
    mz: Sequence[float] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    pixel_size: float | None = None,
    obs_images: dict[str, np.ndarray] | None = None,
) -> ad.AnnData:
    """Build a spatial AnnData from a stack of feature images.

    Parameters
    ----------
    images
        Array ``(n_features, height, width)``.
    mz
        m/z of each image (written to ``var["mz"]`` and used for the var names).
    names
        Feature names (default: from ``mz``, else ``"feature-<i>"``).
    mask
        Bool ``(height, width)``: which grid cells are pixels of the dataset (obs).
        Default: every cell.
    pixel_size
        Pixel size in µm, stored in ``uns["grid"]["pixel_size"]``.
    obs_images
        Extra per-pixel images ``(height, width)`` stored as obs columns (e.g. a segmentation).

    Returns
    -------
    AnnData with obs = pixels (row-major order), var = features, ``X`` float32
    ``(n_pixels, n_features)``, ``obsm["spatial"]`` = integer (x, y), ``uns["grid"]``.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (n_features, height, width), got shape {images.shape}.")
    n, height, width = images.shape
    if mask is None:
        mask = np.ones((height, width), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (height, width):
        raise ValueError(f"`mask` must have shape {(height, width)} like the images, got {mask.shape}.")
    if not mask.any():
        raise ValueError("`mask` selects no pixel: the dataset would be empty.")
    ys, xs = np.nonzero(mask)
    X = np.ascontiguousarray(images[:, ys, xs].T, dtype=np.float32)

    if mz is not None:
        mz = np.asarray(mz, dtype=np.float64)
        if mz.shape != (n,):
            raise ValueError(f"`mz` must have one value per image ({n}), got shape {mz.shape}.")
    if names is None:
        names = feature_names_from_mz(mz) if mz is not None else [f"feature-{i}" for i in range(n)]
    elif len(names) != n:
        raise ValueError(f"`names` must have one entry per image ({n}), got {len(names)}.")
    var = pd.DataFrame(index=pd.Index([str(s) for s in names]))
    if mz is not None:
        var[K.MZ] = mz
    obs = pd.DataFrame(index=pd.Index([f"{x}_{y}" for x, y in zip(xs, ys)], name="pixel"))
    for key, image in (obs_images or {}).items():
        image = np.asarray(image)
        if image.shape != (height, width):
            raise ValueError(f"obs image `{key}` must have shape {(height, width)}, got {image.shape}.")
        obs[key] = image[ys, xs]
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm[K.SPATIAL] = np.column_stack([xs, ys]).astype(np.int64)
    adata.uns[K.GRID] = {"shape": [int(height), int(width)], "pixel_size": None if pixel_size is None else float(pixel_size)}
    return adata


def read_ion_images(
    path: str | os.PathLike,
    *,
    mz: Sequence[float] | str | os.PathLike | None = None,
    mask: np.ndarray | str | None = "nonzero",
    pixel_size: float | None = None,
) -> ad.AnnData:
    """Read a stack of ion images from ``.npz``, ``.npy`` or ``.tif``/``.tiff``.

    Parameters
    ----------
    path
        ``.npz`` holding the stack under one of ``images``, ``cube``, ``X``, ``stack`` (shape
        ``(n, height, width)``), optionally ``mz``, ``mask``/``tissue`` and further ``(height, width)``
        arrays (stored as obs columns, e.g. a segmentation); or a ``.npy`` / multipage TIFF stack.
    mz
        m/z values (array) or a text/CSV file with one value per image. Overrides an ``mz`` array
        stored in the npz.
    mask
        Which grid cells are pixels: ``"nonzero"`` (default: cells where any image is non-zero,
        the convention of exported cubes with 0 where no pixel), ``"all"``, the name of a mask array
        in the npz, or a bool ``(height, width)`` array. A ``mask``/``tissue`` array in the npz
        also becomes ``obs["tissue"]``.
    pixel_size
        Pixel size in µm (``uns["grid"]["pixel_size"]``).

    Returns
    -------
    AnnData as described in ``docs/data_model.md``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ion-image file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    extras: dict[str, np.ndarray] = {}
    stored_mz = None
    tissue = None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in _STACK_KEYS if k in data.files), None)
            if key is None:
                raise ValueError(
                    f"{str(path)!r} holds no image stack: expected one of the arrays {list(_STACK_KEYS)}, "
                    f"found {data.files}."
                )
            images = np.asarray(data[key])
            stored_mz = next((np.asarray(data[k]) for k in _MZ_KEYS if k in data.files), None)
            for k in data.files:
                arr = data[k]
                if k in _MASK_KEYS and arr.shape == images.shape[1:]:
                    tissue = np.asarray(arr, dtype=bool)
                elif k != key and arr.ndim == 2 and arr.shape == images.shape[1:]:
                    extras[k] = np.asarray(arr)
    elif suffix == ".npy":
        images = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        from .._compat import require

        tifffile = require("tifffile", purpose="reading TIFF image stacks")
        images = tifffile.imread(path)
        if images.ndim == 2:
            images = images[None]
    else:
        raise ValueError(f"Unsupported ion-image file {str(path)!r}: expected .npz, .npy, .tif or .tiff.")
    if images.ndim != 3:
        raise ValueError(f"{str(path)!r}: expected an image stack (n, height, width), got shape {images.shape}.")
    images = images.astype(np.float32, copy=False)
    bad = ~np.isfinite(images)
    if bad.any():
        which = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{str(path)!r}: {int(bad.sum())} non-finite (NaN/inf) intensities in images {which[:10].tolist()}"
            f"{' ...' if len(which) > 10 else ''}; clean or impute them before reading."
        )

    if isinstance(mz, (str, os.PathLike)):
        mz = np.loadtxt(mz, delimiter="," if str(mz).endswith(".csv") else None, ndmin=1)
    if mz is None:
        mz = stored_mz

    if isinstance(mask, str) and mask == "nonzero":
        mask_arr = (images != 0).any(axis=0)
        if tissue is not None:
            mask_arr |= tissue
    elif isinstance(mask, str) and mask == "all":
        mask_arr = None
    elif isinstance(mask, str):
        if mask not in extras:
            raise ValueError(f"`mask`={mask!r} is not an array of {str(path)!r}; available: {sorted(extras)}.")
        mask_arr = extras[mask].astype(bool)
    else:
        mask_arr = mask
    if tissue is not None:
        extras[K.TISSUE] = tissue
    adata = images_to_adata(images, mz=mz, mask=mask_arr, pixel_size=pixel_size, obs_images=extras)
    adata.uns[K.SOURCE] = {"file": str(path), "reader": "read_ion_images"}
    logger.info("Read %d ion images of %d x %d pixels (%d pixels) from %s", adata.n_vars, *images.shape[1:], adata.n_obs, path)
    return adata
