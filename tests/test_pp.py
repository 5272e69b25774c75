"""Tests of ``sc.pp``: feature-image view and preprocessing steps, on hand-checked small cases."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

import spatialclust as sc
from spatialclust import _keys as K


def _grid_adata(images: np.ndarray, *, keep: np.ndarray | None = None) -> AnnData:
    """AnnData whose obs are the grid cells of ``images`` (n, H, W) where ``keep`` is True."""
    n, height, width = images.shape
    keep = np.ones((height, width), dtype=bool) if keep is None else keep
    y, x = np.nonzero(keep)
    adata = AnnData(X=images[:, y, x].T.astype(np.float32))
    adata.obs_names = [f"px-{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"f{j}" for j in range(n)]
    adata.obsm[K.SPATIAL] = np.stack([x, y], axis=1).astype(np.int64)
    adata.uns[K.GRID] = {"shape": [height, width], "pixel_size": None}
    return adata


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.gamma(2.0, size=(5, 6, 7)).astype(np.float32)


# --------------------------------------------------------------------------- feature images
@pytest.mark.parametrize("kind", ["dense", "sparse", "dask"])
def test_feature_images_round_trip(stack, kind):
    adata = _grid_adata(stack)
    if kind == "sparse":
        adata.X = sp.csr_matrix(adata.X)
    elif kind == "dask":
        adata.X = da.from_array(np.asarray(adata.X), chunks=(10, 2))
    images = sc.pp.feature_images(adata)
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, stack)


def test_feature_images_orientation_and_fill():
    adata = AnnData(X=np.array([[1.0], [2.0]], dtype=np.float32))
    adata.obsm[K.SPATIAL] = np.array([[2, 0], [0, 1]])  # (x, y)
    adata.uns[K.GRID] = {"shape": [2, 3], "pixel_size": 10.0}
    images = sc.pp.feature_images(adata, fill=-1.0)
    np.testing.assert_array_equal(images[0], [[-1, -1, 1], [2, -1, -1]])


def test_feature_images_subset_and_chunks(stack, monkeypatch):
    from spatialclust.pp import _images

    monkeypatch.setattr(_images, "_CHUNK_ENTRIES", 50)  # 42 pixels -> one feature per chunk
    adata = _grid_adata(stack)
    np.testing.assert_array_equal(sc.pp.feature_images(adata, features=["f3", "f1"]), stack[[3, 1]])
    np.testing.assert_array_equal(sc.pp.feature_images(adata, features=[4]), stack[[4]])
    mask = np.array([True, False, True, False, False])
    np.testing.assert_array_equal(sc.pp.feature_images(adata, features=mask), stack[mask])
    with pytest.raises(KeyError, match="nope"):
        sc.pp.feature_images(adata, features=["nope"])


def test_feature_images_partial_grid_and_tissue_mask(stack):
    keep = np.zeros(stack.shape[1:], dtype=bool)
    keep[1:4, 2:6] = True
    adata = _grid_adata(stack, keep=keep)
    images = sc.pp.feature_images(adata)
    np.testing.assert_array_equal(images[:, keep], stack[:, keep])
    assert (images[:, ~keep] == 0).all()
    np.testing.assert_array_equal(sc.pp.tissue_mask_image(adata), keep)
    adata.obs[K.TISSUE] = np.arange(adata.n_obs) < 3
    mask = sc.pp.tissue_mask_image(adata)
    assert mask.sum() == 3 and mask[1, 2:5].all()


def test_feature_images_bad_coordinates(stack):
    adata = _grid_adata(stack)
    adata.uns[K.GRID]["shape"] = [3, 3]
    with pytest.raises(ValueError, match="outside the grid"):
        sc.pp.feature_images(adata)
    del adata.obsm[K.SPATIAL]
    with pytest.raises(KeyError, match="spatial"):
        sc.pp.feature_images(adata)
