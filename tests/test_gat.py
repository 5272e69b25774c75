"""Graph attention autoencoder and Gaussian smoothing augmentations of DARLC (seed 003, §3.2.1)."""

from __future__ import annotations

import numpy as np
import pytest

from spatialclust.models import gat_smooth, gaussian_smooth, pixel_graph


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny graphs: one torch thread is fastest, and much faster on a loaded 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pixel_graph_is_symmetric_with_self_loops():
    mask = np.ones((3, 3), dtype=bool)
    edges = pixel_graph(mask, radius=1.5)
    pairs = set(map(tuple, edges.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert all((i, i) in pairs for i in range(9))
    assert np.sum(edges[1] == 4) == 9  # the centre: 8 neighbours + itself
    assert np.sum(edges[1] == 0) == 4  # a corner: 3 neighbours + itself
    masked = pixel_graph(np.array([[True, False], [False, True]]), radius=1.5)
    assert masked.shape[1] == 4  # one diagonal edge both ways + two self loops
    with pytest.raises(ValueError, match="radius"):
        pixel_graph(mask, radius=0.5)


def noisy_patterns(n=12, size=12, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean = np.stack([np.exp(-((yy - 3 - 6 * (i % 2)) ** 2 + (xx - 6) ** 2) / 6.0) for i in range(n)]).astype(np.float32)
    noisy = clean + rng.normal(0, 0.3, clean.shape).astype(np.float32)
    return clean, np.clip(noisy, 0, None)


def test_gat_smooth_learns_and_denoises():
    clean, noisy = noisy_patterns()
    mask = np.ones(clean.shape[1:], dtype=bool)
    mask[0, :] = False
    smoothed, losses = gat_smooth(noisy, mask, hidden_dims=(32, 8), epochs=60, lr=1e-2, random_state=0)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    assert np.all(smoothed[:, ~mask] == 0)
    assert losses[-1] < 0.7 * losses[0]
    err_noisy = np.mean((noisy[:, mask] - clean[:, mask]) ** 2)
    err_smooth = np.mean((smoothed[:, mask] - clean[:, mask]) ** 2)
    assert err_smooth < err_noisy


def test_gat_smooth_bad_input():
    with pytest.raises(ValueError, match="images"):
        gat_smooth(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mask"):
        gat_smooth(np.zeros((2, 4, 4)), np.ones((3, 3), dtype=bool))


def test_gaussian_smooth_keeps_constant_images_and_mask():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 2:8] = True
    img = np.where(mask, 3.0, 7.0)[None].astype(np.float32)
    out = gaussian_smooth(img, mask, sigma=1.0)
    np.testing.assert_allclose(out[0][mask], 3.0, rtol=1e-5)
    assert np.all(out[0][~mask] == 0)
    clean, noisy = noisy_patterns()
    assert np.mean((gaussian_smooth(noisy) - clean) ** 2) < np.mean((noisy - clean) ** 2)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(img, sigma=0)
