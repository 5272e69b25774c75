"""Neural ion images (NeuralEmbedder, ``method="neural"``) with the tiny test backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spatialclust as sc
from spatialclust.models import create_backbone
from spatialclust.pp import extract_patches, patch_grid
from spatialclust.tl import NeuralEmbedder, create_embedder, list_embedders


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
    embedder = NeuralEmbedder("test_tiny", patch_size=16, overlap=0.5, pooling=pooling, batch_size=batch_size)
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
    embedder = NeuralEmbedder("test_tiny", patch_size_um=80.0).fit(images, pixel_size=20.0)
    vectors = embedder.transform(images, pixel_size=20.0)
    assert embedder.grid_.scale == 2.0 and embedder.grid_.patch_size == 8
    np.testing.assert_allclose(vectors, naive(images, embedder.grid_), rtol=1e-5, atol=1e-5)


def test_patches_resized_to_input_size(images):
    embedder = NeuralEmbedder("test_tiny", patch_size=16, input_size=24)
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
    sc.tl.embed(adata, method="neural", backbone="test_tiny", patch_size_um=120.0, num_threads=1)
    assert adata.varm["X_neural"].shape == (6, 16)
    params = adata.uns["X_neural"]["params"]
    assert params["backbone"] == "test_tiny" and params["pooling"] == "max" and params["patch_size_um"] == 120.0


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
