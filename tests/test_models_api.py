"""The public models API (issue 16): every part under one name, one implementation per helper."""

import math

import numpy as np
import pytest
import torch

import spatialclust as sc
from spatialclust import models
from spatialclust._registry import registry


def test_every_public_name_exists_once():
    assert len(models.__all__) == len(set(models.__all__))
    missing = [name for name in models.__all__ if not hasattr(models, name)]
    assert missing == []
    # the parts tl, translate and pl use
    for name in ("create_backbone", "Backbone", "list_backbones", "save_checkpoint", "load_checkpoint",
                 "load_optimizer_state", "CheckpointError", "NTXentLoss", "InfoNCELoss", "DINOLoss", "DINOHead",
                 "MultiCropTransform", "StudentMixture", "SparseImageViT", "gat_smooth", "gaussian_smooth",
                 "DINOTrainer", "autocast_context", "channels_last", "optimizer_step", "torch_threads"):
        assert name in models.__all__


@pytest.mark.parametrize("dof", [3.5, math.inf])
def test_torch_mixture_density_is_the_numpy_one(dof):
    """DARLC's differentiable density and the EM density are one formula (t and Gaussian)."""
    rng = np.random.default_rng(0)
    d, k = 4, 2
    z = rng.normal(size=(7, d))
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    chols = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + d * np.eye(d))
    dofs = np.array([dof, dof])
    log_w = np.log([0.3, 0.7])
    expected = np.stack(
        [models.t_log_density(z, means[j], chols[j], dofs[j])[0] + log_w[j] for j in range(k)], axis=1
    )
    got = models.t_mixture_log_prob(*(torch.as_tensor(v) for v in (z, means, chols)), dofs, torch.as_tensor(log_w))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    if math.isinf(dof):  # the Gaussian limit is the textbook density
        from scipy.stats import multivariate_normal

        cov = chols[0] @ chols[0].T
        np.testing.assert_allclose(expected[:, 0] - log_w[0], multivariate_normal(means[0], cov).logpdf(z), rtol=1e-10)


def test_info_nce_loss():
    q = torch.eye(4)
    aligned = models.InfoNCELoss(temperature=0.1)(q, q)
    shuffled = models.InfoNCELoss(temperature=0.1)(q, q.roll(1, dims=0))
    assert float(aligned) < 0.01 < float(shuffled)
    logits = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(q, dim=1).T / 0.1
    assert torch.isclose(aligned, torch.nn.functional.cross_entropy(logits, torch.arange(4)))
    for bad in (0, -1.0, True, "0.5"):
        with pytest.raises(ValueError, match="`temperature` must be a positive number"):
            models.InfoNCELoss(temperature=bad)


def test_torch_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with models.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with models.torch_threads(None):
        assert torch.get_num_threads() == before


def test_ema_update():
    target, online = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * t.detach().clone() + 0.1 * o.detach() for t, o in zip(target.parameters(), online.parameters())]
    models.ema_update(target, online, 0.9)
    for got, want in zip(target.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)
        assert got.requires_grad


def test_registries_by_kind_for_lower_layers():
    assert registry("embedder") is sc.tl.embedders and registry("clusterer") is sc.tl.clusterers
    assert "smm" in sc.tl.list_clusterers() and sc.tl.create_clusterer("smm").__class__ is sc.tl.SMMClusterer
    with pytest.raises(ValueError, match="Invalid option `embeder` for `kind`. Valid options are: .*`embedder`"):
        registry("embeder")
