"""Embedding interface: registry, ImageEmbedder base, regular embedder, sc.tl.embed."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust import _keys
from spatialclust.tl._embed import ImageEmbedder, RegularEmbedder


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((6, 8, 10), dtype=np.float32)


@pytest.fixture
def adata(images):
    mask = np.ones(images.shape[1:], dtype=bool)
    mask[0, :] = False  # first row is not a pixel of the dataset
    return sc.io.images_to_adata(images, mz=100.0 + np.arange(6), mask=mask, pixel_size=10.0)


def test_registry_lists_regular_and_rejects_unknown():
    assert "regular" in sc.tl.list_embedders()
    assert isinstance(sc.tl.create_embedder("regular"), ImageEmbedder)
    with pytest.raises(ValueError, match=r"Invalid option `nope` for `method`. Valid options are: .*`regular`"):
        sc.tl.create_embedder("nope")


@pytest.mark.parametrize("name", sc.tl.list_embedders())
def test_every_registered_embedder_is_an_image_embedder(name):
    """Embedders registered by any module subclass ImageEmbedder and are cloneable sklearn estimators."""
    from sklearn.base import clone

    cls = sc.tl.embedders.get(name)
    assert issubclass(cls, ImageEmbedder)
    clone(cls())


def test_regular_flattens_inside_mask(images):
    mask = np.zeros(images.shape[1:], dtype=bool)
    mask[2:4, 3:6] = True
    out = RegularEmbedder().fit_transform(images, mask=mask)
    assert out.dtype == np.float32 and out.shape == (6, 6)
    np.testing.assert_array_equal(out, images[:, 2:4, 3:6].reshape(6, -1))
    full = RegularEmbedder().fit_transform(images)
    np.testing.assert_array_equal(full, images.reshape(6, -1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": np.zeros((4, 5))}, r"`images` must have shape \(n_images, height, width\)"),
        ({"mask": np.ones((3, 3), bool)}, r"`mask` must have the image shape"),
        ({"mask": np.zeros((8, 10), bool)}, "tissue mask is empty"),
        ({"pixel_size": -1.0}, "`pixel_size` must be a positive"),
        ({"images": np.full((2, 8, 10), np.nan)}, "NaN"),
    ],
)
def test_regular_bad_input(images, kwargs, match):
    args = {"images": images, **kwargs}
    with pytest.raises(ValueError, match=match):
        RegularEmbedder().fit_transform(args.pop("images"), **args)


def test_embed_writes_varm_and_uns(adata, images):
    sc.tl.embed(adata)
    key = _keys.embedding_key("regular")
    assert key == "X_regular"
    emb = adata.varm[key]
    # the first grid row holds no pixel: it is outside the tissue mask
    np.testing.assert_allclose(emb, images[:, 1:, :].reshape(6, -1))
    assert adata.uns[key]["method"] == "regular"
    # the recorded parameters are the embedder's (no conditioning: the paper's regular ion images)
    assert adata.uns[key][_keys.PARAMS] == {"clip_percentile": "None", "contrast": "None", "denoise": "None",
                                            "denoise_size": 3.0, "n_components": "None", "postprocess": "None",
                                            "postprocess_components": "auto", "random_state": 0}


def test_embed_key_added_copy_and_instance(adata):
    out = sc.tl.embed(adata, RegularEmbedder(), key_added="X_mine", copy=True)
    assert "X_mine" in out.varm and "X_mine" not in adata.varm
    assert out.uns["X_mine"]["method"] == "regular"
    with pytest.raises(ValueError, match="embedder instance"):
        sc.tl.embed(adata, RegularEmbedder(), foo=1)
    with pytest.raises(ValueError, match="Invalid option `nope` for `method`"):
        sc.tl.embed(adata, "nope")


def test_regular_embedder_optional_conditioning():
    """`regular` is the paper's flattened image by default; with conditioning, the same pattern at
    another abundance and with a hot pixel maps to (nearly) the same vector."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    pattern = np.exp(-((yy - 5) ** 2 + (xx - 9) ** 2) / 8.0)
    strong = rng.poisson(40 * pattern).astype(np.float32)
    weak = rng.poisson(6 * pattern).astype(np.float32)
    weak[14, 1] = 60.0  # hot pixel
    images = np.stack([strong / strong.max(), weak / weak.max()])
    plain = sc.tl.create_embedder("regular").fit_transform(images)
    np.testing.assert_array_equal(plain, images.reshape(2, -1))
    cond = sc.tl.create_embedder("regular", denoise="gaussian", denoise_size=1.5, clip_percentile=99.0,
                                 contrast="minmax").fit_transform(images)
    corr = lambda v: float(np.corrcoef(v[0], v[1])[0, 1])  # noqa: E731
    assert corr(cond) > corr(plain) + 0.1


@pytest.mark.parametrize("postprocess", ["l2", "pca_l2", "pca_whiten"])
def test_regular_postprocessing_is_fitted_once(postprocess):
    """The post-processing PCA is fitted on the images of `fit`; `transform` of other images (the
    thinned partners, new data) projects them on it."""
    rng = np.random.default_rng(0)
    images = rng.random((12, 8, 8)).astype(np.float32)
    embedder = sc.tl.create_embedder("regular", postprocess=postprocess, postprocess_components=5)
    vectors = embedder.fit_transform(images)
    flat = images.reshape(12, -1).astype(np.float64)
    np.testing.assert_allclose(vectors, sc.tl.postprocess_vectors(flat, postprocess, embedder.pca_), atol=1e-6)
    assert vectors.shape == ((12, 5) if postprocess != "l2" else (12, 64))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.transform(images[:4]), vectors[:4], atol=1e-5)
    if postprocess == "pca_whiten":  # whitened: every component has the same variance before the last L2
        scores = embedder.pca_.transform(flat / np.linalg.norm(flat, axis=1, keepdims=True))
        np.testing.assert_allclose(scores.var(axis=0, ddof=1), 1.0, rtol=1e-6)
    if postprocess != "l2":
        with pytest.raises(RuntimeError, match="call `fit` or `fit_transform` first"):
            sc.tl.create_embedder("regular", postprocess=postprocess).transform(images)


def test_regular_svd_components_are_fitted_once():
    """With `n_components` the pixel-side singular vectors are fitted by `fit`: `transform` projects
    on them, so a fitted image gets its `fit_transform` vector and other images share its basis."""
    rng = np.random.default_rng(0)
    images = rng.random((12, 8, 8)).astype(np.float32)
    mask = np.ones((8, 8), dtype=bool)
    mask[0] = False
    embedder = sc.tl.create_embedder("regular", n_components=4)
    vectors = embedder.fit_transform(images, mask=mask)
    assert vectors.shape == (12, 4) and embedder.components_.shape == (56, 4)
    np.testing.assert_allclose(embedder.components_.T @ embedder.components_, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(embedder.transform(images, mask=mask), vectors, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embedder.transform(images[:3], mask=mask), vectors[:3], rtol=1e-4, atol=1e-4)
    exact = np.linalg.svd(images[:, mask].astype(np.float64), compute_uv=False)[:4]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), exact, rtol=1e-3)  # the leading singular values
    with pytest.raises(ValueError, match="fitted on images of 56"):
        embedder.transform(images)
    with pytest.raises(RuntimeError, match="singular vectors fitted by `fit`"):
        sc.tl.create_embedder("regular", n_components=4).transform(images)
    assert sc.tl.create_embedder("regular").fit(images).components_ is None


@pytest.mark.parametrize("rank", [None, 2])
def test_regular_svd_components_with_more_images_than_the_sketch_and_rank_deficient(rank):
    """60 images (wider than the k + 20 sketch) and a rank-2 stack with k = 5: the fitted images are
    their projections on `components_`, whose directions beyond the rank are zero."""
    rng = np.random.default_rng(3)
    images = rng.random((60, 9, 9)).astype(np.float32)
    if rank is not None:
        images = np.einsum("ir,rhw->ihw", rng.random((60, rank)), rng.random((rank, 9, 9))).astype(np.float32)
    embedder = sc.tl.create_embedder("regular", n_components=5)
    vectors = embedder.fit_transform(images)
    np.testing.assert_allclose(embedder.transform(images), vectors, rtol=1e-4, atol=1e-4 * np.abs(vectors).max())
    kept = 5 if rank is None else rank
    np.testing.assert_allclose(embedder.components_[:, :kept].T @ embedder.components_[:, :kept], np.eye(kept), atol=1e-5)
    if rank is not None:
        assert not embedder.components_[:, rank:].any() and not vectors[:, rank:].any()


def test_unit_rows_precision():
    """float64 rows (norms in float64, also for float32 input) unless a float32 matrix is large."""
    from spatialclust.tl import _embed

    small = np.array([[3.0, 4.0], [0.0, 0.0], [1e20, 1e20]], dtype=np.float32)
    out = _embed.unit_rows(small)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [2**-0.5, 2**-0.5]], rtol=1e-6)
    large = np.ones((_embed.FLOAT32_ENTRIES // 4 + 1, 4), dtype=np.float32)
    assert _embed.unit_rows(large).dtype == np.float32
    assert _embed.unit_rows(np.array([[1, 1]])).dtype == np.float64


def test_auto_postprocessing_components_follow_the_number_of_images():
    rng = np.random.default_rng(1)
    for n_images, expected in ((12, 4), (80, 11), (390, 24), (1000, 38), (2000, 50)):
        pca = sc.tl.fit_postprocessing(rng.random((n_images, 60)), "pca_whiten", "auto")
        assert pca.n_components_ == expected
    assert sc.tl.fit_postprocessing(rng.random((5, 60)), "pca_l2", 50).n_components_ == 4  # at most n_images - 1
    assert sc.tl.fit_postprocessing(rng.random((5, 60)), "l2", 50) is None
    with pytest.raises(ValueError, match="needs at least 2 images"):
        sc.tl.fit_postprocessing(rng.random((1, 60)), "pca_l2", 50)


#: Tiny settings of every registered ion-image embedder for the transform contract below.
TINY_EMBEDDERS = {
    "regular": {},
    "regular, randomized SVD": {"n_components": 5},
    "regular, whitening PCA": {"postprocess": "pca_whiten"},
    "neural": {"backbone": "test_tiny", "patch_size": 12, "device": "cpu"},
    "simclr": {"backbone": "test_tiny", "epochs": 1, "batch_size": 8, "image_size": None, "device": "cpu"},
    "darlc": {"pretrain_epochs": 1, "cluster_epochs": 1, "gat_epochs": 2, "n_clusters": 3, "device": "cpu",
              "embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 4},
}


@pytest.mark.parametrize("case", list(TINY_EMBEDDERS))
def test_every_embedder_transforms_fitted_images_as_it_fitted_them(case):
    """The contract the thinned-partner check and `transform` of new data rely on: after `fit_transform`,
    `transform` of the same images, or of a subset, gives their fitted vectors (one basis, one PCA,
    one network), whatever the other images of the call."""
    pytest.importorskip("torch")
    assert {name.split(",")[0] for name in TINY_EMBEDDERS} == set(sc.tl.list_embedders())  # every registered one
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=5, n_matrix_ions=2, seed=0)
    sc.pp.preprocess_ion_images(adata)
    images, mask = sc.pp.feature_images(adata), sc.pp.tissue_mask_image(adata)
    embedder = sc.tl.create_embedder(case.split(",")[0], **TINY_EMBEDDERS[case])
    fitted = embedder.fit_transform(images, mask=mask, pixel_size=adata.uns["grid"]["pixel_size"])
    scale = np.abs(fitted).max()
    np.testing.assert_allclose(embedder.transform(images, mask=mask, pixel_size=adata.uns["grid"]["pixel_size"]),
                               fitted, atol=1e-5 * scale)
    np.testing.assert_allclose(embedder.transform(images[[4, 0, 7]], mask=mask, pixel_size=adata.uns["grid"]["pixel_size"]),
                               fitted[[4, 0, 7]], atol=1e-5 * scale)
