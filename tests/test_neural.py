"""Neural ion images (NeuralEmbedder, ``method="neural"``) with the tiny test backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spatialclust as sc
from spatialclust.models import create_backbone
from spatialclust.pp import extract_patches, patch_grid
from spatialclust.tl import NeuralEmbedder, create_embedder, list_embedders


#: The paper's configuration: images fed as given, vectors not post-processed (the mechanics tests).
AS_GIVEN = dict(denoise=None, clip_percentile=None, contrast=None, postprocess=None, tissue_only=True)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((12, 32, 40)).astype(np.float32)


def naive(images, grid, pooling="max", **backbone_kwargs):
    """Reference: every image's patches through the network one image at a time, then pooled."""
    backbone = create_backbone("test_tiny", **backbone_kwargs).eval()
    patches = extract_patches(images, grid)
    with torch.inference_mode():
        out = [backbone(backbone.preprocess(p, size=grid.patch_size)) for p in patches]
    return np.stack([(f.amax(0) if pooling == "max" else f.mean(0)).numpy() for f in out])


def test_registered_as_neural():
    assert "neural" in list_embedders()
    assert isinstance(create_embedder("neural", backbone="test_tiny"), NeuralEmbedder)


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("batch_size", [5, 500])
def test_batched_embedding_equals_per_image_pooling(images, pooling, batch_size):
    mask = np.ones(images.shape[1:], bool)
    mask[14:, :] = False  # the bottom row of patches lies on background and is skipped
    embedder = NeuralEmbedder("test_tiny", patch_size=16, overlap=0.5, pooling=pooling, batch_size=batch_size, **AS_GIVEN)
    vectors = embedder.fit_transform(images, mask=mask)
    assert vectors.shape == (12, 16) and vectors.dtype == np.float32
    assert embedder.grid_.n_skipped > 0
    np.testing.assert_allclose(vectors, naive(images, embedder.grid_, pooling), rtol=1e-5, atol=1e-5)


def test_max_pooling_detects_a_localised_pattern():
    """Max-pooling (the paper's choice) keeps a feature seen in one patch; mean dilutes it."""
    base = np.zeros((2, 64, 64), np.float32)
    base[1, 4:12, 4:12] = 1.0  # a small spot in one corner
    grid = patch_grid((64, 64), patch_size=16)
    tiny = naive(base, grid, "max")
    mean = naive(base, grid, "mean")
    assert np.abs(tiny[1] - tiny[0]).max() > 2 * np.abs(mean[1] - mean[0]).max()


def test_patch_size_um_and_upsampling(images):
    # 80 µm at 20 µm/px = 4 px < 8 px minimum of test_tiny -> images up-sampled x2
    embedder = NeuralEmbedder("test_tiny", patch_size_um=80.0, pooling="max", **AS_GIVEN).fit(images, pixel_size=20.0)
    vectors = embedder.transform(images, pixel_size=20.0)
    assert embedder.grid_.scale == 2.0 and embedder.grid_.patch_size == 8
    np.testing.assert_allclose(vectors, naive(images, embedder.grid_), rtol=1e-5, atol=1e-5)


def test_patches_resized_to_input_size(images):
    embedder = NeuralEmbedder("test_tiny", patch_size=16, input_size=24, pooling="max", **AS_GIVEN)
    vectors = embedder.fit_transform(images)
    backbone = embedder.backbone_
    patches = extract_patches(images, embedder.grid_)
    with torch.inference_mode():
        expected = np.stack([backbone(backbone.preprocess(p, size=24)).amax(0).numpy() for p in patches])
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5)


def test_embed_writes_varm_and_params():
    adata = sc.io.images_to_adata(
        np.random.default_rng(1).random((6, 24, 24)).astype(np.float32), mz=np.arange(6) + 100.0, pixel_size=10.0
    )
    sc.tl.embed(adata, method="neural", backbone="test_tiny", patch_size_um=120.0, num_threads=1, postprocess="l2")
    # 120 µm = 12 px patches, 50 % overlap on 24 px: 3 x 3 patches of 16 features, concatenated
    assert adata.varm["X_neural"].shape == (6, 9 * 16)
    np.testing.assert_allclose(np.linalg.norm(adata.varm["X_neural"], axis=1), 1.0, rtol=1e-5)
    sc.tl.embed(adata, method="neural", backbone="test_tiny", patch_size_um=120.0, num_threads=1, key_added="X_pca")
    assert adata.varm["X_pca"].shape == (6, 5)  # default: L2, PCA (at most n_images - 1 components), L2
    np.testing.assert_allclose(np.linalg.norm(adata.varm["X_pca"], axis=1), 1.0, rtol=1e-5)
    params = adata.uns["X_neural"]["params"]
    assert params["backbone"] == "test_tiny" and params["pooling"] == "concat" and params["patch_size_um"] == 120.0


def test_cache_avoids_re_embedding(images, tmp_path, monkeypatch):
    first = NeuralEmbedder("test_tiny", patch_size=16, cache_dir=tmp_path).fit_transform(images)
    assert len(list(tmp_path.glob("neural-*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("re-embedded although the result is cached")

    monkeypatch.setattr(NeuralEmbedder, "_embed", fail)
    again = NeuralEmbedder("test_tiny", patch_size=16, batch_size=3, cache_dir=tmp_path).fit_transform(images)
    np.testing.assert_array_equal(first, again)
    # other data, parameters or weights are other keys
    for embedder, data in [
        (NeuralEmbedder("test_tiny", patch_size=16, cache_dir=tmp_path), images[:5]),
        (NeuralEmbedder("test_tiny", patch_size=16, pooling="mean", cache_dir=tmp_path), images),
        (NeuralEmbedder(create_backbone("test_tiny", seed=3), patch_size=16, cache_dir=tmp_path), images),
    ]:
        with pytest.raises(AssertionError, match="re-embedded"):
            embedder.fit_transform(data)


def test_zero_images_are_embedded_with_a_warning(images, caplog):
    data = images.copy()
    data[3] = 0.0
    vectors = NeuralEmbedder("test_tiny", patch_size=16).fit_transform(data)
    assert np.isfinite(vectors).all()
    assert "1 of 12 images are all zero" in caplog.text


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        NeuralEmbedder("test_tiny").transform(np.zeros((1, 16, 16), np.float32))


# ---- bad input (issue 4): each case names what was wrong ----------------------------------


def test_non_finite_pixels(images):
    data = images.copy()
    data[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        NeuralEmbedder("test_tiny", patch_size=16).fit_transform(data)


def test_all_background_image(images):
    empty = np.zeros(images.shape[1:], bool)
    with pytest.raises(ValueError, match="`mask` selects no pixel"):
        NeuralEmbedder("test_tiny", patch_size=16).fit_transform(images, mask=empty)


def test_unknown_backbone(images):
    with pytest.raises(ValueError, match="Invalid option `alexnet_xl` for `backbone`"):
        NeuralEmbedder("alexnet_xl").fit(images)


def test_patch_size_larger_than_image(images):
    with pytest.raises(ValueError, match="larger than the image"):
        NeuralEmbedder("test_tiny", patch_size=64).fit_transform(images)


def test_image_smaller_than_minimum_patch_after_upsampling():
    tiny_images = np.random.default_rng(0).random((2, 2, 2)).astype(np.float32)  # 2 px x 4 < 8 px minimum
    with pytest.raises(ValueError, match="smaller than the backbone's minimum input of 8 px even after up-sampling"):
        NeuralEmbedder("test_tiny", max_upsample=3).fit_transform(tiny_images)


def test_weights_of_wrong_architecture(images, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(create_backbone("test_tiny", num_features=4).model.state_dict(), str(path))
    with pytest.raises(sc.models.WeightsError, match=r"shape mismatches: features\.6\.weight"):
        NeuralEmbedder("test_tiny", weights=path).fit(images)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pooling": "median"}, "Invalid option `median` for `pooling`"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer"),
        ({"num_threads": 0}, "`num_threads` must be a positive integer"),
        ({"overlap": 1.5}, "`overlap` must be a fraction"),
        ({"input_size": 0}, "`input_size` must be a positive integer"),
    ],
)
def test_bad_parameters(images, params, message):
    with pytest.raises(ValueError, match=message):
        NeuralEmbedder("test_tiny", **params).fit(images)


# --- issue 12: physical patch size by default, conditioning, concatenation, post-processing ------------


def test_default_patch_is_one_millimetre_or_the_shorter_side(images, caplog):
    caplog.set_level("INFO", logger="spatialclust")
    square = np.random.default_rng(2).random((3, 120, 120)).astype(np.float32)
    embedder = NeuralEmbedder("test_tiny", pooling="max").fit(square, pixel_size=20.0)
    embedder.transform(square, pixel_size=20.0)
    assert embedder.grid_.patch_size == 50  # 1000 µm at 20 µm/px
    embedder.transform(square)  # no pixel size: the shorter side, logged
    assert embedder.grid_.patch_size == 120 and "No pixel size known" in caplog.text
    embedder.transform(square, pixel_size=5.0)  # 1 mm = 200 px > 120 px: the shorter side
    assert embedder.grid_.patch_size == 120 and "larger than the image" in caplog.text
    fixed = NeuralEmbedder("test_tiny", patch_size=16).fit(images)
    fixed.transform(images, pixel_size=20.0)  # patch_size wins over the default patch_size_um
    assert fixed.grid_.patch_size == 16


def test_concat_keeps_where_a_pattern_is_and_matches_the_patches(images):
    embedder = NeuralEmbedder("test_tiny", patch_size=16, pooling="concat", **AS_GIVEN).fit(images)
    vectors = embedder.transform(images)
    grid = embedder.grid_
    backbone = embedder.backbone_
    with torch.inference_mode():
        expected = np.stack([backbone(backbone.preprocess(p, size=16)).reshape(-1).numpy() for p in extract_patches(images, grid)])
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5)
    # a spot moved from the top-left to the top-right patch: max-pooling cannot tell, concatenation can
    left = np.zeros((1, 32, 32), np.float32)
    left[0, 2:8, 2:8] = 1.0
    pair = np.concatenate([left, np.roll(left, 16, axis=2)])  # 2 x 2 patches of 16 px; the spot in patch 0 / 1
    params = dict(patch_size=16, overlap=0.0, **AS_GIVEN)
    pooled = NeuralEmbedder("test_tiny", pooling="max", **params).fit_transform(pair)
    np.testing.assert_allclose(pooled[0], pooled[1], rtol=1e-5, atol=1e-6)
    blocks = NeuralEmbedder("test_tiny", pooling="concat", **params).fit_transform(pair).reshape(2, 4, -1)
    np.testing.assert_allclose(blocks[0, 0], blocks[1, 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(blocks[0], blocks[1], atol=1e-3)


def test_conditioning_is_applied_before_the_network(images):
    mask = np.ones(images.shape[1:], bool)
    conditioning = dict(denoise="gaussian", denoise_size=2.0, clip_percentile=99.0, contrast="minmax")
    embedder = NeuralEmbedder("test_tiny", patch_size=16, pooling="max", postprocess=None, tissue_only=True, **conditioning)
    vectors = embedder.fit_transform(images, mask=mask)
    conditioned = sc.pp.condition_images(images, mask=mask, **conditioning)
    np.testing.assert_allclose(vectors, naive(conditioned, embedder.grid_), rtol=1e-5, atol=1e-5)
    assert not np.allclose(vectors, naive(images, embedder.grid_), atol=1e-3)


def test_condition_images_options():
    rng = np.random.default_rng(0)
    image = rng.poisson(2.0, size=(1, 32, 32)).astype(np.float32)
    image[0, 5, 5] = 500.0  # a hot pixel
    clipped = sc.pp.condition_images(image, clip_percentile=99.0)
    assert clipped.max() == 1.0 and clipped[0, 5, 5] == 1.0 and clipped.mean() > 5 * sc.pp.condition_images(image).mean()
    smooth = sc.pp.condition_images(image, denoise="gaussian", denoise_size=2.0, contrast=None)
    assert smooth[0].std() < image[0].std() / 5
    median = sc.pp.condition_images(image, denoise="median", denoise_size=3, contrast=None)
    assert median[0, 5, 5] < 10  # the hot pixel is gone
    # rank contrast is invariant to a gamma change; min-max is not
    gamma = image ** 2.5
    np.testing.assert_allclose(sc.pp.condition_images(gamma, contrast="rank"), sc.pp.condition_images(image, contrast="rank"))
    assert not np.allclose(sc.pp.condition_images(gamma), sc.pp.condition_images(image))
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    masked = sc.pp.condition_images(image, mask=mask, contrast="rank")
    assert masked[0][~mask].max() == 0 and masked[0][mask].min() > 0
    with pytest.raises(ValueError, match="Invalid option `wiener` for `denoise`"):
        sc.pp.condition_images(image, denoise="wiener")
    with pytest.raises(ValueError, match="`clip_percentile` must be in"):
        sc.pp.condition_images(image, clip_percentile=0)


def test_l2_and_pca_whitening(images):
    l2 = NeuralEmbedder("test_tiny", patch_size=16, pooling="max", postprocess="l2").fit_transform(images)
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-5)
    embedder = NeuralEmbedder("test_tiny", patch_size=16, pooling="concat", postprocess="pca_whiten", n_components=5)
    whitened = embedder.fit_transform(images)
    assert whitened.shape == (12, 5) and embedder.n_features_out_ == 5
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.transform(images), whitened, rtol=1e-4, atol=1e-5)  # the fitted PCA
    refit = NeuralEmbedder("test_tiny", patch_size=16, pooling="concat", postprocess="pca_whiten", n_components=5).fit(images)
    np.testing.assert_allclose(refit.transform(images), whitened, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"denoise": "wiener"}, "Invalid option `wiener` for `denoise`"), ({"contrast": "log"}, "Invalid option `log` for `contrast`"),
     ({"postprocess": "zca"}, "Invalid option `zca` for `postprocess`"), ({"n_components": 0}, "`n_components` must be")],
)  # fmt: skip
def test_bad_new_parameters(images, params, message):
    with pytest.raises(ValueError, match=message):
        NeuralEmbedder("test_tiny", **params).fit(images)


def test_tissue_mask_is_ignored_unless_tissue_only(images):
    mask = np.ones(images.shape[1:], bool)
    mask[14:, :] = False
    everywhere = NeuralEmbedder("test_tiny", patch_size=16, pooling="max").fit(images)
    everywhere.transform(images, mask=mask)
    assert everywhere.grid_.n_skipped == 0
    restricted = NeuralEmbedder("test_tiny", patch_size=16, pooling="max", tissue_only=True).fit(images)
    restricted.transform(images, mask=mask)
    assert restricted.grid_.n_skipped > 0
