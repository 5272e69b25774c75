"""Patch grid of the neural ion images (seed 000, "Generation of neural ion images")."""

from __future__ import annotations

import numpy as np
import pytest

from spatialclust.pp import PatchGrid, extract_patches, patch_grid


def coverage(grid: PatchGrid) -> np.ndarray:
    count = np.zeros(grid.image_shape, int)
    for r, c in grid.origins:
        count[r : r + grid.patch_size, c : c + grid.patch_size] += 1
    return count


@pytest.mark.parametrize("shape", [(32, 48), (33, 50), (20, 20)])
@pytest.mark.parametrize("overlap", [0.4, 0.5])
def test_patches_cover_every_pixel_with_the_requested_overlap(shape, overlap):
    grid = patch_grid(shape, patch_size=16, overlap=overlap)
    assert grid.scale == 1.0 and grid.patch_size == 16
    assert coverage(grid).min() >= 1  # last row/column aligned to the border: no pixel lost
    assert grid.origins[:, 0].max() == shape[0] - 16 and grid.origins[:, 1].max() == shape[1] - 16
    assert 0.375 <= grid.overlap <= 0.5  # stride rounded to whole pixels
    rows = np.unique(grid.origins[:, 0])
    assert np.all(np.diff(rows) <= round(16 * (1 - overlap)))


def test_patch_size_in_micrometres_uses_the_pixel_size():
    grid = patch_grid((64, 64), patch_size_um=400.0, pixel_size=20.0)
    assert grid.patch_size == 20 and grid.patch_size_original == 20
    with pytest.raises(ValueError, match="`patch_size_um` needs the pixel size"):
        patch_grid((64, 64), patch_size_um=400.0)
    with pytest.raises(ValueError, match="either `patch_size`"):
        patch_grid((64, 64), patch_size=8, patch_size_um=400.0, pixel_size=20.0)


def test_default_patch_is_the_shorter_side():
    grid = patch_grid((30, 70), overlap=0.5)
    assert grid.patch_size == 30 and grid.n_patches == 4  # origins 0, 15, 30, 40


def test_small_patches_are_reached_by_up_sampling_the_image():
    # the paper: 50 µm data, ~1.85 mm patches = 37 px < 71 px Xception minimum -> up-sample ~x2
    grid = patch_grid((79, 79), patch_size_um=1850, pixel_size=50, min_size=71)
    assert grid.patch_size == 71
    assert grid.scale == pytest.approx(71 / 37)
    assert grid.image_shape == (152, 152)
    assert grid.patch_size_original == pytest.approx(37, abs=0.5)
    assert coverage(grid).min() >= 1
    patches = extract_patches(np.random.default_rng(0).random((2, 79, 79)), grid)
    assert patches.shape == (2, grid.n_patches, 71, 71)


def test_image_smaller_than_the_minimum_patch_after_up_sampling():
    with pytest.raises(ValueError, match="smaller than the backbone's minimum input of 71 px even after up-sampling"):
        patch_grid((12, 12), patch_size=12, min_size=71, max_upsample=4)
    with pytest.raises(ValueError, match="below the backbone's minimum input of 71 px even after up-sampling"):
        patch_grid((100, 100), patch_size=10, min_size=71, max_upsample=4)


def test_patch_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match=r"`patch_size`=40 px is larger than the image \(32 x 48 px\)"):
        patch_grid((32, 48), patch_size=40)
    with pytest.raises(ValueError, match="larger than the image"):
        patch_grid((32, 48), patch_size_um=1000, pixel_size=10)


def test_background_patches_are_skipped():
    mask = np.zeros((32, 48), bool)
    mask[:6, :6] = True  # tissue only in the top-left corner
    grid = patch_grid((32, 48), patch_size=16, mask=mask)
    assert grid.origins.tolist() == [[0, 0]]
    assert grid.n_skipped == patch_grid((32, 48), patch_size=16).n_patches - 1


def test_all_background_mask_is_refused():
    with pytest.raises(ValueError, match="all-background"):
        patch_grid((32, 48), patch_size=16, mask=np.zeros((32, 48), bool))


def test_extract_patches_cuts_the_grid():
    images = np.random.default_rng(0).random((3, 32, 48)).astype(np.float32)
    grid = patch_grid((32, 48), patch_size=16)
    patches = extract_patches(images, grid)
    assert patches.shape == (3, grid.n_patches, 16, 16) and patches.dtype == np.float32
    for k, (r, c) in enumerate(grid.origins):
        np.testing.assert_array_equal(patches[:, k], images[:, r : r + 16, c : c + 16])
    with pytest.raises(ValueError, match="do not match the patch grid"):
        extract_patches(images[:, :30], grid)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 8, "overlap": 1.0}, "`overlap` must be a fraction"),
        ({"patch_size": 0}, "`patch_size` must be a positive integer"),
        ({"patch_size": 8.5}, "`patch_size` must be a positive integer"),
        ({"patch_size_um": -5.0, "pixel_size": 10.0}, "`patch_size_um` must be a positive"),
        ({"patch_size": 8, "mask": np.ones((5, 5), bool)}, "`mask` must have the image shape"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        patch_grid((32, 48), **kwargs)
