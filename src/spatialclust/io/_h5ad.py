"""Reading an ``.h5ad`` file with errors that name it."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad


def read_h5ad(path: str | os.PathLike, *, backed: str | None = None) -> ad.AnnData:
    """:func:`anndata.read_h5ad`, failing with the file's name when it is missing, truncated or not an h5ad.

    anndata reports a truncated or foreign file with an h5py ``OSError`` ("file signature not found",
    "truncated file: eof = ...") or a ``KeyError`` from deep inside the reader, neither of which says
    which of a run's inputs was broken. Every reader in spatialclust goes through this one.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` exists but is not a readable h5ad (the cause is chained).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AnnData file {str(path)!r} does not exist.")
    try:
        return ad.read_h5ad(path, backed=backed)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{str(path)!r} is not a readable .h5ad file (truncated, corrupt or another format): {err}") from err
