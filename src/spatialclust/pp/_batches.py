"""Feature images a batch at a time: the image embedders on a chunked (dask) matrix.

A whole slide (e.g. 500,000 pixels x 8,000 m/z) has an image stack ``(n_images, H, W)`` too large
to hold; a batch of images is a column block of the matrix over every pixel (a few m/z chunks of a
Zarr store chunked along m/z), placed on the grid. :class:`FeatureImageBatches` loads such batches
in order (:meth:`~FeatureImageBatches.load`, iteration) or as dask tasks that a
``dask.distributed`` worker computes itself (:meth:`~FeatureImageBatches.delayed`), and
:func:`conditioned_tissue_pixels` turns per-image conditioning into a lazy dask map over the blocks.
The images are those of :func:`~spatialclust.pp.feature_images`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from anndata import AnnData

from ._images import CHUNK_ENTRIES, dense_columns, grid_shape, intensity_matrix, pixel_coordinates, tissue_mask_image
from ._patches import condition_images


@dataclass(frozen=True)
class GridLayout:
    """Where the rows of a matrix go on the image grid: ``images.reshape(n, -1)[:, flat] = block.T``."""

    shape: tuple[int, int]
    flat: np.ndarray
    fill: float = 0.0

    def images(self, block: np.ndarray) -> np.ndarray:
        """float32 ``(n_columns, H, W)`` images of a dense ``(n_obs, n_columns)`` block."""
        block = np.asarray(block, dtype=np.float32)
        images = np.full((block.shape[1], self.shape[0] * self.shape[1]), self.fill, dtype=np.float32)
        images[:, self.flat] = block.T
        return images.reshape(block.shape[1], *self.shape)


def grid_layout(adata: AnnData, *, fill: float = 0.0) -> GridLayout:
    """The :class:`GridLayout` of the pixels of ``adata`` (``obsm["spatial"]``, ``uns["grid"]``)."""
    height, width = grid_shape(adata)
    x, y = pixel_coordinates(adata)
    index_type = np.int32 if height * width < 2**31 else np.int64
    return GridLayout((height, width), (y * width + x).astype(index_type), fill)


class FeatureImageBatches:
    """The feature images of a spatial AnnData, a batch of consecutive images at a time.

    Parameters
    ----------
    adata
        Spatial dataset (obs = pixels, var = features) with ``obsm["spatial"]`` and ``uns["grid"]``.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    batch_size
        Images per batch. None: as many as fit ``CHUNK_ENTRIES`` matrix entries (every pixel of a
        few images), rounded down to whole column chunks of a dask matrix so that a batch reads
        each chunk of the store once.
    fill
        Value of grid cells without a pixel.

    Attributes
    ----------
    n_images
        Number of feature images.
    shape
        ``(height, width)`` of the images.
    bounds
        ``slice`` of the feature indices of every batch, in order.
    """

    def __init__(self, adata: AnnData, *, layer: str | None = None, batch_size: int | None = None,
                 fill: float = 0.0) -> None:
        self.matrix = intensity_matrix(adata, layer)
        self.layout = grid_layout(adata, fill=fill)
        self.n_images = int(adata.n_vars)
        self.shape = self.layout.shape
        if batch_size is None:
            batch_size = max(1, CHUNK_ENTRIES // max(adata.n_obs, 1))
            column_chunk = int(self.matrix.chunksize[1]) if hasattr(self.matrix, "chunksize") else 1
            if batch_size >= column_chunk:
                batch_size -= batch_size % column_chunk
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer or None; received {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.bounds = [slice(start, min(start + self.batch_size, self.n_images))
                       for start in range(0, self.n_images, self.batch_size)]

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The images of every batch in order, float32 ``(n_batch, H, W)``; one batch in memory at a time."""
        for columns in self.bounds:
            yield self.load(columns)

    def load(self, features: slice | np.ndarray) -> np.ndarray:
        """float32 images ``(n, H, W)`` of the feature indices ``features`` (a slice or integer indices,
        in the order given)."""
        return self.layout.images(dense_columns(self.matrix, features))

    def delayed(self) -> list[Any]:
        """One ``dask.delayed`` per batch, computing its images ``(n_batch, H, W)`` from the matrix
        (for a dask matrix the worker that computes it reads the chunks itself); the grid layout is
        one shared dependency of all of them."""
        import dask
        import dask.array as da

        matrix = self.matrix if hasattr(self.matrix, "rechunk") else da.from_array(self.matrix, chunks=(-1, self.batch_size))
        blocks = matrix.rechunk({0: -1, 1: self.batch_size}).to_delayed().ravel()
        layout = dask.delayed(self.layout, pure=True)
        return [dask.delayed(_block_images)(layout, block) for block in blocks]


def _block_images(layout: GridLayout, block: Any) -> np.ndarray:
    return layout.images(block.toarray() if hasattr(block, "toarray") else block)


def conditioned_tissue_pixels(adata: AnnData, *, layer: str | None = None, **conditioning: Any):
    """The on-tissue pixels of the conditioned images (:func:`spatialclust.pp.condition_images`), as
    a lazy dask ``(n_tissue_pixels, n_images)`` matrix in the order of
    :func:`~spatialclust.pp.tissue_pixels`: ``condition_images(images, mask=mask)[:, mask].T``
    without the image stack.

    Each column block (every pixel of a batch of images, see :class:`FeatureImageBatches`) is
    placed on the grid, conditioned image by image and reduced to its tissue pixels when a dask
    computation needs it; nothing is computed here.
    """
    import dask.array as da

    batches = FeatureImageBatches(adata, layer=layer)
    mask = tissue_mask_image(adata)
    matrix = batches.matrix
    if not hasattr(matrix, "rechunk"):
        matrix = da.from_array(matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix),
                               chunks=(-1, batches.batch_size))
    blocks = matrix.rechunk({0: -1, 1: batches.batch_size})
    condition = partial(_conditioned_block, layout=batches.layout, mask=mask, conditioning=conditioning)
    pixels = blocks.map_blocks(condition, chunks=((int(mask.sum()),), blocks.chunks[1]), dtype=np.float32,
                               meta=np.empty((0, 0), dtype=np.float32))
    # back to the matrix's pixel chunks, so that a product over the images sums chunk-sized partial results
    return pixels.rechunk({0: int(matrix.chunksize[0])})


def _conditioned_block(block: np.ndarray, *, layout: GridLayout, mask: np.ndarray, conditioning: dict[str, Any]) -> np.ndarray:
    images = condition_images(layout.images(block), mask=mask, **conditioning)
    return np.ascontiguousarray(images[:, mask].T)
