"""The real datasets of the benchmarks, read with the ``sc.datasets`` loaders.

Without a folder (``--data-path``) a loader reads its cache (``$SPATIALCLUST_DATA``, else
``sc.datasets.data_home()``) and downloads what is missing; with one, it reads the converted files
there. A dataset that can be neither downloaded nor found there is skipped with one printed line,
so that a benchmark goes on with its other datasets.
"""

from __future__ import annotations

from pathlib import Path

import spatialclust as sc

#: Subfolder of each dataset in the parent folder given to the benchmarks that read several datasets.
FOLDERS = {"mouse_bladder": "msi_mouse_bladder", "legacy_st": "st_legacy_stutility",
           "lung_godfrey": "st_msi_lung_godfrey", "mouse_brain_vicari": "st_msi_mouse_brain_vicari"}


def subfolder(parent: str | Path | None, loader: str) -> Path | None:
    """The folder of ``loader``'s converted files in ``parent`` (None: the loader's cache)."""
    return None if parent is None else Path(parent) / FOLDERS[loader]


def load_public(loader: str, *args, **kwargs):
    """``sc.datasets.<loader>(*args, **kwargs)``, or None after one line saying why it is skipped."""
    try:
        return getattr(sc.datasets, loader)(*args, **kwargs)
    except (sc.datasets.DatasetDownloadError, FileNotFoundError) as err:
        print(f"({loader}({', '.join(map(repr, args))}) skipped: {err})", flush=True)
        return None


def bladder_grid(path: str | Path | None = None, *, pixel_size: float | None = None):
    """The mouse bladder ion images on all 134 x 260 cells of their grid, or None when skipped.

    Every cell is a pixel of the published data (``ssc_segments >= 0``); ``sc.datasets.mouse_bladder``
    keeps the 34,732 with signal, these benchmarks also the 108 without, as in their figures.
    """
    bladder = load_public("mouse_bladder", path=path)
    if bladder is None:
        return None
    return sc.io.images_to_adata(sc.pp.feature_images(bladder), mz=bladder.var["mz"].to_numpy(), pixel_size=pixel_size)
