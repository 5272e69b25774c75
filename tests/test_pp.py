"""Tests of ``sc.pp``: feature-image view and preprocessing steps, on hand-checked small cases."""

from __future__ import annotations

import dask.array as da
import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

import spatialclust as sc
from spatialclust import _keys as K

from .conftest import shared_data


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


def test_feature_images_backed(stack, tmp_path):
    import anndata as ad

    _grid_adata(stack).write_h5ad(tmp_path / "stack.h5ad")
    backed = ad.read_h5ad(tmp_path / "stack.h5ad", backed="r")
    np.testing.assert_array_equal(sc.pp.feature_images(backed), stack)
    np.testing.assert_array_equal(sc.pp.feature_images(backed, features=[3, 1, 3]), stack[[3, 1, 3]])
    backed.file.close()


def test_feature_images_orientation_and_fill():
    adata = AnnData(X=np.array([[1.0], [2.0]], dtype=np.float32))
    adata.obsm[K.SPATIAL] = np.array([[2, 0], [0, 1]])  # (x, y)
    adata.uns[K.GRID] = {"shape": [2, 3], "pixel_size": 10.0}
    images = sc.pp.feature_images(adata, fill=-1.0)
    np.testing.assert_array_equal(images[0], [[-1, -1, 1], [2, -1, -1]])


def test_feature_images_subset_and_chunks(stack, monkeypatch):
    from spatialclust.pp import _images

    monkeypatch.setattr(_images, "CHUNK_ENTRIES", 50)  # 42 pixels -> one feature per chunk
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


def _matrix_adata(X, **obs) -> AnnData:
    """AnnData with pixels on one row of a (1, n_obs) grid."""
    X = np.asarray(X, dtype=np.float32)
    adata = AnnData(X=X)
    adata.var_names = [f"f{j}" for j in range(X.shape[1])]
    adata.obsm[K.SPATIAL] = np.stack([np.arange(X.shape[0]), np.zeros(X.shape[0], dtype=int)], axis=1)
    adata.uns[K.GRID] = {"shape": [1, X.shape[0]], "pixel_size": None}
    for key, value in obs.items():
        adata.obs[key] = value
    return adata


def _as(kind: str, X: np.ndarray):
    if kind == "sparse":
        return sp.csr_matrix(X)
    if kind == "dask":
        return da.from_array(X, chunks=(2, 2))
    return X


def _dense(X) -> np.ndarray:
    if hasattr(X, "compute"):
        X = X.compute()
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("kind", ["dense", "sparse", "dask"])
def test_normalize_tic_hand_checked(kind):
    X = np.array([[1, 3, 0], [0, 0, 0], [2, 2, 4]], dtype=np.float32)
    adata = _matrix_adata(X)
    adata.X = _as(kind, X)
    sc.pp.normalize_tic(adata, target_sum=10.0)
    np.testing.assert_allclose(_dense(adata.X), [[2.5, 7.5, 0], [0, 0, 0], [2.5, 2.5, 5]])
    step = sc.pp.preprocessing_steps(adata)[-1]
    assert step["step"] == "normalize_tic" and step["params"]["n_zero_tic"] == 1


def test_normalize_tic_default_target_and_copy():
    adata = _matrix_adata([[1, 1], [3, 5], [2, 2]])  # TICs 2, 8, 4 -> median 4
    out = sc.pp.normalize_tic(adata, copy=True)
    np.testing.assert_allclose(out.X.sum(axis=1), 4.0)
    np.testing.assert_array_equal(adata.X, [[1, 1], [3, 5], [2, 2]])  # original untouched
    assert K.PREPROCESSING not in adata.uns


def test_normalize_tic_from_obs_and_rms():
    adata = _matrix_adata([[1, 1], [3, 4]], tic=[4.0, 10.0])
    sc.pp.normalize_tic(adata, tic_key=K.TIC, target_sum=1.0)
    np.testing.assert_allclose(adata.X, [[0.25, 0.25], [0.3, 0.4]])
    adata = _matrix_adata([[3, 4], [0, 0], [1, 7]])
    sc.pp.normalize_rms(adata)
    np.testing.assert_allclose(adata.X[0], np.array([3, 4]) / np.sqrt(12.5), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt((adata.X[[0, 2]] ** 2).mean(axis=1)), 1.0, rtol=1e-6)
    assert (adata.X[1] == 0).all()


# --------------------------------------------------------------------------- winsorising and scaling
@pytest.mark.parametrize("kind", ["dense", "sparse", "dask"])
def test_winsorize_known_vector(kind):
    column = np.arange(21, dtype=np.float32)  # 95th percentile of 0..20 = 19
    X = np.stack([column, 2 * column], axis=1)
    adata = _matrix_adata(X)
    adata.X = _as(kind, X)
    sc.pp.winsorize(adata)
    out = _dense(adata.X)
    np.testing.assert_array_equal(out[:, 0], np.minimum(column, 19))
    np.testing.assert_array_equal(out[:, 1], np.minimum(2 * column, 38))


def test_winsorize_uses_tissue_pixels_only():
    column = np.array([1, 2, 3, 4, 100], dtype=np.float32)
    adata = _matrix_adata(column[:, None], tissue=[True, True, True, True, False])
    sc.pp.winsorize(adata, percentile=100)
    np.testing.assert_array_equal(adata.X[:, 0], [1, 2, 3, 4, 4])
    with pytest.raises(ValueError, match="percentile"):
        sc.pp.winsorize(adata, percentile=0)


@pytest.mark.parametrize("kind", ["dense", "sparse", "dask"])
def test_scale_images(kind):
    X = np.array([[2, 5, 0], [4, 5, 0], [6, 5, 3]], dtype=np.float32)
    adata = _matrix_adata(X)
    adata.X = _as(kind, X)
    sc.pp.scale_images(adata)
    np.testing.assert_allclose(_dense(adata.X), [[0, 0, 0], [0.5, 0, 0], [1, 0, 1]])
    assert sc.pp.preprocessing_steps(adata)[-1]["params"]["n_constant"] == 1


def test_scale_images_off_tissue_clipped():
    adata = _matrix_adata([[1], [3], [10], [0]], tissue=[True, True, False, False])
    sc.pp.scale_images(adata)
    np.testing.assert_allclose(adata.X[:, 0], [0, 1, 1, 0])


@pytest.mark.parametrize("kind", ["dense", "sparse", "dask"])
def test_winsorize_keeps_sparse_images(kind):
    """An image with signal in < 5 % of the pixels is winsorised at the percentile of its non-zero
    pixels (issue 13, item 7): the plain 95th percentile (0) would make it all zero."""
    sparse_column = np.zeros(100, dtype=np.float32)
    sparse_column[[3, 40, 77]] = [2.0, 5.0, 400.0]  # 3 % of the pixels, one hot pixel
    dense_column = np.arange(100, dtype=np.float32)
    X = np.stack([sparse_column, dense_column, np.zeros(100, np.float32)], axis=1)
    adata = _matrix_adata(X)
    adata.X = _as(kind, X)
    sc.pp.winsorize(adata)
    out = _dense(adata.X)
    threshold = np.percentile([2.0, 5.0, 400.0], 95)
    np.testing.assert_allclose(out[:, 0], np.minimum(sparse_column, threshold), rtol=1e-6)
    assert 5.0 < out[:, 0].max() < 400.0  # the hot pixel is clipped, the pattern kept
    np.testing.assert_allclose(out[:, 1], np.minimum(dense_column, np.percentile(dense_column, 95)), rtol=1e-6)
    assert (out[:, 2] == 0).all()
    assert sc.pp.preprocessing_steps(adata)[-1]["params"]["n_sparse"] == 1


def test_preprocess_never_leaves_all_zero_images():
    """Finely binned data: many images with signal in a few tissue pixels, one with signal only off
    the tissue; after the default preprocessing no image is all zero or constant, every sparse
    image is kept (UMAP's cosine distance on the result: tests/test_default_pipeline.py)."""
    rng = np.random.default_rng(0)
    n_sparse, shape = 40, (10, 10)
    images = np.zeros((n_sparse + 3, *shape), dtype=np.float32)
    for j in range(n_sparse):  # 1-3 pixels of 80 tissue pixels: below 5 %
        pixels = rng.choice(80, size=rng.integers(1, 4), replace=False)
        images[j].reshape(-1)[pixels] = rng.gamma(2.0, 50.0, size=pixels.size)
    images[n_sparse : n_sparse + 2] = rng.gamma(5.0, 10.0, size=(2, *shape))  # dense ions
    images[-1].reshape(-1)[85] = 7.0  # signal off the tissue only
    adata = _grid_adata(images)
    adata.obs[K.TISSUE] = np.arange(adata.n_obs) < 80
    # statistics over all pixels: the off-tissue image is not constant, but the embeddings see none of it
    everywhere = sc.pp.preprocess_ion_images(adata, tissue_only=False, copy=True)
    assert list(everywhere.var_names) == [f"f{j}" for j in range(n_sparse + 2)]
    sc.pp.preprocess_ion_images(adata)
    X = np.asarray(adata.X)
    assert adata.n_vars == n_sparse + 2 and f"f{n_sparse + 2}" not in adata.var_names
    assert (X.max(axis=0) > X.min(axis=0)).all() and (np.abs(X).sum(axis=0) > 0).all()
    steps = sc.pp.preprocessing_steps(adata)
    assert steps[2]["params"]["n_sparse"] == n_sparse
    assert steps[-1]["step"] == "remove_empty_features" and steps[-1]["params"]["removed"] == [f"f{n_sparse + 2}"]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "step", [sc.pp.normalize_tic, sc.pp.normalize_rms, sc.pp.winsorize, sc.pp.scale_images, sc.pp.preprocess_ion_images]
)
@pytest.mark.parametrize("chunked", [False, True])
def test_non_finite_intensities_raise(step, bad, chunked):
    """Also off the tissue (where no statistic looks) and for a dask matrix (where the check shares the
    statistic's pass over the data); nothing is changed before the error."""
    X = np.ones((4, 3), dtype=np.float32)
    X[:, 1] = [1, 2, 3, 4]
    X[1, 2] = bad
    X[3, 2] = bad
    adata = _matrix_adata(X)
    adata.obs["tissue"] = [True, False, True, False]
    if chunked:
        import dask.array as da

        adata.X = da.from_array(X, chunks=(2, 2))
    with pytest.raises(ValueError, match=r"2 non-finite .* 1 feature\(s\): \['f2'\]"):
        step(adata)
    assert adata.n_vars == 3 and not adata.layers and "preprocessing" not in adata.uns


def test_remove_empty_features():
    X = np.array([[0, 1, 2, 5, 0], [0, 1, 3, 5, np.nan], [0, 1, 0, 5, 1]], dtype=np.float32)
    adata = _matrix_adata(X)
    adata.obs_names = ["a", "b", "c"]
    sc.pp.remove_empty_features(adata)
    assert list(adata.var_names) == ["f2"]
    params = sc.pp.preprocessing_steps(adata)[-1]["params"]
    assert params["n_removed"] == 4 and params["removed"] == ["f0", "f1", "f3", "f4"]
    adata = _matrix_adata([[3, 1], [0, 0], [2, 0]])
    out = sc.pp.remove_empty_features(adata, min_nonzero=2, copy=True)
    assert list(out.var_names) == ["f0"] and adata.n_vars == 2


# --------------------------------------------------------------------------- tissue mask
def test_otsu_threshold_bimodal():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(2.0, 0.3, 500), rng.normal(8.0, 0.5, 300)])
    threshold = sc.pp.otsu_threshold(values)
    assert values[:500].max() <= threshold < values[500:].min()
    assert ((values > threshold) == (np.arange(800) >= 500)).all()
    # unequal spreads: the cut maximising the between-class variance, checked by brute force
    values = np.array([0, 1, 1, 2, 2, 2, 3, 6, 7, 9, 10], dtype=float)
    cuts = (values[:-1] + values[1:]) / 2
    variance = [(values <= c).mean() * (values > c).mean() * (values[values <= c].mean() - values[values > c].mean()) ** 2 for c in cuts]
    best = cuts[int(np.argmax(variance))]
    threshold = sc.pp.otsu_threshold(values, n_bins=1000)
    assert ((values > threshold) == (values > best)).all()


def test_tissue_mask_otsu_and_given():
    images = np.full((3, 8, 8), 0.1, dtype=np.float32)
    images[:, 2:6, 1:5] = 50.0
    truth = images[0] > 1
    adata = _grid_adata(images)
    sc.pp.tissue_mask(adata)
    np.testing.assert_array_equal(sc.pp.tissue_mask_image(adata), truth)
    assert sc.pp.preprocessing_steps(adata)[-1]["params"]["n_tissue"] == 16
    sc.pp.tissue_mask(adata, mask=~truth)  # (H, W) image
    np.testing.assert_array_equal(sc.pp.tissue_mask_image(adata), ~truth)
    adata.obs["given"] = ~adata.obs[K.TISSUE].to_numpy()
    sc.pp.tissue_mask(adata, mask="given")  # obs column
    np.testing.assert_array_equal(sc.pp.tissue_mask_image(adata), truth)
    sc.pp.tissue_mask(adata, mask=np.arange(64) < 5)  # (n_obs,) vector
    assert sc.pp.tissue_mask_image(adata).sum() == 5
    with pytest.raises(ValueError, match="shape"):
        sc.pp.tissue_mask(adata, mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="Invalid option `magic` for `method`"):
        sc.pp.tissue_mask(adata, method="magic")


# --------------------------------------------------------------------------- the chain
def test_preprocess_ion_images_chain():
    rng = np.random.default_rng(1)
    images = rng.poisson(5.0, size=(4, 10, 10)).astype(np.float32)
    images[1] = 0.0  # empty image
    images[2, 0, 0] = 1000.0  # hot pixel
    adata = _grid_adata(images)
    raw = adata.X.copy()
    out = sc.pp.preprocess_ion_images(adata, copy=True)
    assert list(out.var_names) == ["f0", "f2", "f3"]
    np.testing.assert_array_equal(out.layers[K.RAW], raw[:, [0, 2, 3]])
    assert [s["step"] for s in sc.pp.preprocessing_steps(out)] == [
        "remove_empty_features", "normalize_tic", "winsorize", "scale_images", "remove_empty_features"]
    assert out.X.min() == 0.0 and np.allclose(out.X.max(axis=0), 1.0)
    hot = sc.pp.feature_images(out, features=["f2"])[0]
    assert (hot == 1.0).sum() >= 5  # the hot pixel no longer dominates the scaled image
    with pytest.raises(ValueError, match="Invalid option `l1` for `normalize`"):
        sc.pp.preprocess_ion_images(adata, normalize="l1")
    with pytest.raises(ValueError, match="empty or constant"):
        sc.pp.preprocess_ion_images(_grid_adata(np.zeros((2, 4, 4))))


def test_steps_on_a_view_modify_the_object_passed():
    adata = _matrix_adata([[1, 1, 9], [3, 5, 9], [2, 2, 9]])
    view = adata[:, :2]
    assert view.is_view
    sc.pp.normalize_tic(view, target_sum=1.0)
    assert not view.is_view
    np.testing.assert_allclose(view.X.sum(axis=1), 1.0)
    np.testing.assert_array_equal(adata.X[:, 0], [1, 3, 2])  # the parent is untouched


def test_preprocessing_steps_survive_h5ad_in_order(tmp_path):
    adata = _matrix_adata([[1, 2], [3, 4]])
    adata.uns[K.PREPROCESSING] = {str(i): {"step": f"s{i}", "params": {}} for i in range(11)}
    sc.pp.normalize_rms(adata)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = anndata.read_h5ad(tmp_path / "a.h5ad")
    steps = sc.pp.preprocessing_steps(back)
    assert [s["step"] for s in steps] == [f"s{i}" for i in range(11)] + ["normalize_rms"]


@pytest.mark.realdata
def test_real_bladder_cube_round_trip_and_preprocessing():
    path = shared_data("msi_mouse_bladder", "bladder_cube.npz")
    cube = np.load(path)["cube"]
    adata = sc.io.read_ion_images(path)
    np.testing.assert_array_equal(sc.pp.feature_images(adata), cube)
    sc.pp.preprocess_ion_images(adata)
    images = sc.pp.feature_images(adata)
    assert adata.n_vars == cube.shape[0] and np.isfinite(images).all()
    assert images.min() == 0.0 and np.allclose(images.reshape(len(images), -1).max(axis=1), 1.0)
    # winsorised at the 95th percentile: at least 5% of the pixels of every image sit at the maximum
    assert ((adata.X >= 1.0 - 1e-6).mean(axis=0) >= 0.045).all()


@pytest.mark.parametrize("kind", ["sparse", "dask"])
def test_preprocess_chain_same_result_for_sparse_and_dask(kind):
    adata = sc.datasets.simulate_msi(shape=(32, 32), n_patterns=3, ions_per_pattern=4, n_matrix_ions=2, seed=1)
    adata.X[:, 3] = 0.0
    expected = sc.pp.preprocess_ion_images(adata, copy=True)
    adata.X = _as(kind, adata.X) if kind == "sparse" else da.from_array(adata.X, chunks=(256, 5))
    sc.pp.preprocess_ion_images(adata)
    assert adata.n_vars == expected.n_vars == 19  # 14 ions + 6 isotopes, one emptied
    np.testing.assert_allclose(_dense(adata.X), expected.X, atol=1e-6)
    np.testing.assert_array_equal(_dense(adata.layers[K.RAW]), expected.layers[K.RAW])


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_all_zero_image_stays_zero_and_is_removed(kind):
    X = np.array([[0, 1], [0, 4], [0, 2]], dtype=np.float32)
    adata = _matrix_adata(X)
    adata.X = _as(kind, X)
    sc.pp.normalize_tic(adata)
    sc.pp.winsorize(adata)
    sc.pp.scale_images(adata)
    np.testing.assert_array_equal(_dense(adata.X)[:, 0], 0.0)
    assert sc.pp.preprocessing_steps(adata)[-1]["params"]["n_constant"] == 2  # after TIC both images are constant
    sc.pp.remove_empty_features(adata)
    assert adata.n_vars == 0 and sc.pp.preprocessing_steps(adata)[-1]["params"]["removed"] == ["f0", "f1"]


def test_layer_argument_and_integer_counts():
    adata = AnnData(X=np.array([[1, 3], [2, 2]], dtype=np.int64))
    adata.var_names = ["f0", "f1"]
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_tic(adata, layer="counts", target_sum=1.0)
    np.testing.assert_array_equal(adata.X, [[1, 3], [2, 2]])  # X untouched
    assert adata.layers["counts"].dtype == np.float32
    np.testing.assert_allclose(adata.layers["counts"], [[0.25, 0.75], [0.5, 0.5]])
    assert sc.pp.preprocessing_steps(adata)[-1]["params"]["layer"] == "counts"
    with pytest.raises(KeyError, match="`layer`='nope'"):
        sc.pp.winsorize(adata, layer="nope")


def test_preprocessing_equals_its_steps_one_by_one():
    """The fused path (scaling and the last removal from the statistics of winsorising) gives exactly
    the matrix, images and records of the public steps run one after the other."""
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=4, n_matrix_ions=2, seed=3)
    X = np.asarray(adata.X).copy()
    X[~adata.obs[K.TISSUE].to_numpy(), 1] = 2.0
    X[adata.obs[K.TISSUE].to_numpy(), 1] = 0.0  # signal off the tissue only: removed at the end
    adata.X = X
    fused, steps = adata.copy(), adata.copy()
    sc.pp.preprocess_ion_images(fused)
    steps.layers[K.RAW] = steps.X.copy()
    sc.pp.remove_empty_features(steps)
    sc.pp.normalize_tic(steps)
    sc.pp.winsorize(steps)
    sc.pp.scale_images(steps)
    sc.pp.remove_empty_features(steps, tissue_only=True)
    assert list(fused.var_names) == list(steps.var_names) and adata.var_names[1] not in fused.var_names
    np.testing.assert_array_equal(fused.X, steps.X)
    np.testing.assert_array_equal(fused.layers[K.RAW], steps.layers[K.RAW])
    assert sc.pp.preprocessing_steps(fused) == sc.pp.preprocessing_steps(steps)


def test_an_image_of_one_pixel_gets_a_tissue_mask_error_naming_the_cli_key(tmp_path):
    """A 1 x 1 px image stack stopped `spatialclust run` with "pass an explicit `mask`", a Python argument."""
    np.save(tmp_path / "tiny.npy", np.arange(1.0, 7.0, dtype=np.float32).reshape(6, 1, 1))
    adata = sc.io.read(tmp_path / "tiny.npy")
    with pytest.raises(ValueError, match=r"none of the 1 pixels .*`spatialclust run --set preprocess.tissue_mask=none`"):
        sc.pp.tissue_mask(adata)
