"""DARLC embedder (seed 003): tiny settings, eigengap, ablation switches, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust.models import gaussian_smooth
from spatialclust.tl._darlc import (DARLCEmbedder, init_head_from_pca, pad_to_patches, resolve_patch_size, seeding_similarity,
                                    tissue_patches)

# 16 x 16 images, 4 x 4 patches: the encoder keeps the 4 x 4 token grid, 16 * 16 = 256 dimensions
TINY_DIM = 256
TINY = dict(patch_size=4, embed_dim=16, depth=1, num_heads=2, head_dim=8, pretrain_epochs=1, cluster_epochs=1,
            batch_size=12, gat_epochs=3, gat_hidden_dims=(16, 4), em_iter=2, n_clusters=2, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is fastest, and much faster on a loaded 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pattern_images(n_per=6, k=2, size=16, seed=0, dropout=0.5):
    """Sparse noisy images: each class a Gaussian blob at its own position, Poisson counts + dropout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = [(4, 4), (11, 11), (4, 11), (11, 4), (8, 8)][:k]
    images, labels = [], []
    for c, (cy, cx) in enumerate(centres):
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
        for _ in range(n_per):
            images.append(rng.poisson(4 * blob) * (rng.random(blob.shape) >= dropout))
            labels.append(c)
    return np.asarray(images, np.float32), np.asarray(labels)


def test_eigengap_of_seeding_similarity_recovers_number_of_clusters():
    images, _ = pattern_images(n_per=10, k=4, dropout=0.0)
    smoothed = gaussian_smooth(images, sigma=1.0)
    similarity = seeding_similarity(smoothed, n_neighbors=5)
    assert np.allclose(similarity, similarity.T) and np.all(np.diag(similarity) == 0)
    assert sc.tl.estimate_n_clusters(similarity, affinity="precomputed", max_clusters=10) == 4


def test_darlc_tiny_fit_produces_embeddings_and_clusters():
    images, labels = pattern_images()
    model = DARLCEmbedder(**TINY)
    emb = model.fit_transform(images)
    assert emb.shape == (len(images), TINY_DIM) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert model.labels_.shape == (len(images),) and model.n_clusters_ == 2
    assert set(model.labels_) <= {0, 1}
    assert len(model.history_["pretrain"]) == 1 and len(model.history_["epoch_level"]) == 1
    assert all(np.isfinite(v).all() for v in model.history_.values())
    assert set(model.timings_) == {"augmentation", "pretraining", "clustering"} and min(model.timings_.values()) >= 0
    assert model.smoothed_.shape == images.shape
    proj = DARLCEmbedder(**{**TINY, "output": "projection"}).fit_transform(images)
    assert proj.shape == (len(images), 8)


def test_vit_representation_keeps_the_token_grid():
    import torch

    from spatialclust.models import SparseImageViT

    vit = SparseImageViT((32, 48), patch_size=4, embed_dim=8, depth=1, num_heads=2, pool_grid=4)
    assert vit.grid == (8, 12) and vit.pooled_grid == (4, 4) and vit.out_dim == 8 * 16
    x = torch.zeros(2, 1, 32, 48)
    x[0, 0, :8, :8] = 1.0  # same blob, different place
    x[1, 0, -8:, -8:] = 1.0
    out = vit(x)
    assert out.shape == (2, vit.out_dim)
    # a mean over the tokens would give two (nearly) equal vectors; the grid keeps them apart
    assert (out[0] - out[1]).abs().max() > 0.1
    assert SparseImageViT((8, 8), patch_size=4, embed_dim=8, depth=1, num_heads=2).out_dim == 8 * 2 * 2


def test_vit_token_mask_ignores_the_patches_off_tissue():
    import torch

    from spatialclust.models import SparseImageViT

    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[:, :2] = True  # the left half of a 16 x 16 image is tissue
    vit = SparseImageViT((16, 16), patch_size=4, embed_dim=8, depth=1, num_heads=2, pool_grid=4, token_mask=keep).eval()
    assert vit.num_patches == 8
    x = torch.rand(2, 1, 16, 16)
    y = x.clone()
    y[..., 8:] = 100.0  # whatever lies off the tissue
    torch.testing.assert_close(vit(x), vit(y))
    grid = vit(x).reshape(2, 8, 4, 4)
    assert (grid[..., 2:] == 0).all() and (grid[..., :2] != 0).any()  # pooled cells without tissue are 0
    assert vit.patchify(x).shape == (2, 8, 16) and vit.random_mask(2, 0.5).shape == (2, 8)
    loss, cls = vit.mim_loss(x, 0.5)
    assert torch.isfinite(loss) and cls.shape == (2, 8)
    # every patch kept = no mask at all
    torch.manual_seed(0)
    full = SparseImageViT((16, 16), patch_size=4, embed_dim=8, depth=1, num_heads=2, token_mask=torch.ones(4, 4, dtype=torch.bool))
    torch.manual_seed(0)
    plain = SparseImageViT((16, 16), patch_size=4, embed_dim=8, depth=1, num_heads=2)
    torch.testing.assert_close(full.eval()(x), plain.eval()(x))
    with pytest.raises(ValueError, match="patch grid's shape"):
        SparseImageViT((16, 16), patch_size=4, embed_dim=8, depth=1, num_heads=2, token_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 patches"):
        SparseImageViT((16, 16), patch_size=4, embed_dim=8, depth=1, num_heads=2, token_mask=torch.zeros(4, 4, dtype=torch.bool))


def test_darlc_tissue_tokens_survive_the_checkpoint(tmp_path):
    images, _ = pattern_images()
    mask = np.zeros(images.shape[1:], dtype=bool)
    mask[:, :7] = True  # 7 px of tissue: the patches of columns 0-3 and 4-7 overlap it
    assert tissue_patches(None, 4) is None
    np.testing.assert_array_equal(tissue_patches(mask, 4), np.repeat([[True, True, False, False]], 4, axis=0))
    assert tissue_patches(mask, 16) is None  # a single patch: every patch
    model = DARLCEmbedder(**{**TINY, "augmentation": "gaussian", "tissue_tokens": True}).fit(images, mask=mask)
    assert model._net["encoder"].num_patches == 8
    everything = DARLCEmbedder(**{**TINY, "augmentation": "gaussian", "tissue_tokens": False}).fit(images, mask=mask)
    assert everything._net["encoder"].num_patches == 16
    loaded = DARLCEmbedder.from_checkpoint(model.save(tmp_path / "darlc"), device="cpu")
    assert loaded._net["encoder"].num_patches == 8 and loaded.get_params()["tissue_tokens"]
    np.testing.assert_allclose(loaded.transform(images, mask=mask), model.transform(images, mask=mask), atol=1e-5)


def test_head_starts_from_the_principal_axes():
    import torch

    from spatialclust.tl._darlc import _build_networks

    rng = np.random.default_rng(0)
    h = rng.normal(size=(40, 64)) * np.linspace(3, 0.1, 64)
    params = dict(patch_size=4, embed_dim=16, depth=1, num_heads=2, pool_grid=2, head_dim=8)
    net, _ = _build_networks((8, 8), params, "cpu")  # encoder output 16 * 2 * 2 = 64
    init_head_from_pca(net["head"], h)
    with torch.no_grad():
        z = net["head"](torch.as_tensor(h, dtype=torch.float32)).numpy()
    centred = h - h.mean(axis=0)
    pcs = centred @ np.linalg.svd(centred, full_matrices=False)[2][:8].T
    expected = torch.nn.functional.selu(torch.as_tensor(pcs / pcs[:, 0].std())).numpy()
    # the leading axes pass through with their relative spread kept (not whitened)
    np.testing.assert_allclose(z, expected, atol=1e-3)


def test_joint_training_does_not_merge_the_clusters():
    """Regression: with the summed log-likelihood (eq. 18) the components merged (NMI 0.39 here)."""
    adata = sc.datasets.simulate_st(shape=(32, 32), n_patterns=5, genes_per_pattern=30, seed=0)
    sc.pp.preprocess_st(adata, min_spots=10)
    truth = adata.var[sc._keys.PATTERN].to_numpy()
    params = {**TINY, "n_clusters": 5, "augmentation": "gaussian", "embed_dim": 32, "head_dim": 32, "batch_size": 64,
              "pretrain_epochs": 5, "cluster_epochs": 20, "em_iter": 5}
    model = DARLCEmbedder(**params).fit(sc.pp.feature_images(adata), mask=sc.pp.tissue_mask_image(adata))
    assert np.bincount(model.labels_, minlength=5).min() >= 10
    assert sc.metrics.nmi(truth, model.labels_) > 0.65  # 0.78 measured; k-means on the raw images: 0.63


@pytest.mark.parametrize(
    "switch",
    [dict(contrastive=False), dict(augmentation="gaussian"), dict(mixture="gaussian"),
     dict(joint_clustering=False), dict(pretrain_epochs=0)],
    ids=["wo_contrastive", "gat_to_gaussian", "smm_to_gmm", "wo_module2", "wo_pretraining"],
)
def test_each_ablation_switch_runs(switch):
    images, _ = pattern_images()
    model = DARLCEmbedder(**{**TINY, **switch}).fit(images)
    assert model.labels_.shape == (len(images),)
    assert np.isfinite(model.transform(images)).all()
    if switch.get("mixture") == "gaussian":
        assert np.isinf(model.mixture_.dof_).all()
    if switch.get("pretrain_epochs") == 0:
        assert model.history_["pretrain"] == []


def test_darlc_through_sc_tl_embed_and_smm_clusterer():
    adata = sc.datasets.simulate_st(shape=(16, 16), n_patterns=2, genes_per_pattern=6, seed=0)
    sc.tl.embed(adata, method="darlc", **TINY)
    assert adata.varm["X_darlc"].shape == (adata.n_vars, TINY_DIM)
    assert adata.uns["X_darlc"]["method"] == "darlc"
    sc.tl.cluster(adata, method="smm", use_rep="X_darlc", n_clusters=2)
    assert set(np.unique(adata.var["cluster"])) <= {0, 1}


def test_grid_padding_and_too_small_grid():
    images, _ = pattern_images(size=14)
    assert pad_to_patches(images, 4).shape[1:] == (16, 16)  # padded to a multiple of the patch size
    model = DARLCEmbedder(**TINY).fit(images)
    assert model.transform(images).shape == (len(images), TINY_DIM)
    with pytest.raises(ValueError, match="smaller than `patch_size`"):
        DARLCEmbedder(**{**TINY, "patch_size": 16}).fit(images)


def test_default_patch_size_adapts_to_a_grid_smaller_than_a_patch(caplog, tmp_path, monkeypatch):
    assert resolve_patch_size("auto", (61, 32)) == 4  # the default on any grid of at least 4 x 4 px
    assert resolve_patch_size("auto", (3, 12)) == 1 and resolve_patch_size("auto", (2, 2)) == 1
    images = pattern_images(size=16)[0][:, ::6, ::6]  # 3 x 3 px
    tiny = {k: v for k, v in TINY.items() if k != "patch_size"}
    with caplog.at_level("WARNING", logger="spatialclust"):
        model = DARLCEmbedder(**tiny, pool_grid=4).fit(images)
    assert model.patch_size == "auto" and model.patch_size_ == 1
    assert "3 x 3 is smaller than the default `patch_size`=4; using `patch_size`=1" in caplog.text
    assert model._net["encoder"].grid == (3, 3) and model.transform(images).shape[0] == len(images)
    loaded = DARLCEmbedder.from_checkpoint(model.save(tmp_path / "small"), device="cpu")
    assert loaded.patch_size_ == 1
    np.testing.assert_allclose(loaded.transform(images), model.transform(images), atol=1e-5)
    calls = []
    monkeypatch.setattr(sc.models, "gat_smooth", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"3 x 3 is smaller than `patch_size`=4; use a `patch_size` of at most 3"):
        DARLCEmbedder(**{**tiny, "patch_size": 4, "augmentation": "gat"}).fit(images)
    assert not calls  # the error comes before any training


def test_darlc_bad_parameters():
    images, _ = pattern_images()
    for params, match in [
        (dict(augmentation="rotate"), "augmentation"),
        (dict(mixture="cauchy"), "mixture"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(n_clusters="many"), "n_clusters"),
        (dict(embed_dim=0), "embed_dim"),
        (dict(patch_size="large"), "patch_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            DARLCEmbedder(**{**TINY, **params}).fit(images)
    with pytest.raises(RuntimeError, match="not fitted"):
        DARLCEmbedder().transform(images)


def test_spectral_angle_mapper_ranks_cluster_quality():
    images, labels = pattern_images(n_per=5, k=2, dropout=0.0)
    flat = images.reshape(len(images), -1)
    rng = np.random.default_rng(0)
    mixed = np.where(labels == 1, rng.permutation(np.arange(len(labels))) % 2, 0)  # cluster 0 pure, cluster 1 mixed
    pure = np.where(labels == 0, 0, 1 + mixed)
    sam = sc.metrics.spectral_angle_mapper(flat, pure)
    assert set(sam) == {0, 1, 2} and all(0 <= v <= np.pi / 2 for v in sam.values())
    wrong = sc.metrics.spectral_angle_mapper(flat, np.arange(len(labels)) % 2)  # clusters mixing both patterns
    assert max(sam.values()) < min(wrong.values())
    groups = sc.metrics.cluster_quality_groups({0: 0.1, 1: 0.5, 2: 0.3})
    assert groups == {0: "high", 1: "medium", 2: "high"}
    with pytest.raises(ValueError, match="2-D"):
        sc.metrics.spectral_angle_mapper(flat[0], [0])


def test_darlc_checkpoint_round_trip(tmp_path):
    from spatialclust.models import CheckpointError

    images, _ = pattern_images()
    model = DARLCEmbedder(**{**TINY, "augmentation": "gaussian"}).fit(images)
    path = model.save(tmp_path / "darlc")
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    loaded = DARLCEmbedder.from_checkpoint(path, device="cpu")
    np.testing.assert_allclose(loaded.transform(images), model.transform(images), atol=1e-5)
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(loaded.predict(images), model.predict(images))
    assert loaded.get_params()["patch_size"] == TINY["patch_size"] and loaded.n_clusters_ == 2
    assert model.save(path) == path  # a checkpoint is replaced, an unrelated folder never (issue 13)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a,b\n")
    with pytest.raises(FileExistsError, match="not a spatialclust checkpoint"):
        model.save(tmp_path / "results")
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["table.csv"]
    with pytest.raises(ValueError, match="training grid"):
        loaded.transform(images[:, :8, :8])
    (path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        DARLCEmbedder.from_checkpoint(path)
    with pytest.raises(RuntimeError, match="not fitted"):
        DARLCEmbedder(**TINY).save(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_zscore_images_pearson_geometry():
    from spatialclust.tl._darlc import zscore_images

    rng = np.random.default_rng(0)
    images = rng.poisson(2.0, size=(4, 8, 8)).astype(np.float32)
    images[1] = 3.0  # constant image -> all zero
    images[2, 0, 0] = 500.0  # one hot spot does not set the scale of the rest
    mask = np.ones((8, 8), dtype=bool)
    mask[:, :2] = False
    out = zscore_images(images, mask)
    assert np.all(out[:, ~mask] == 0) and np.all(out[1] == 0)
    inside = out[[0, 2, 3]][:, mask]
    np.testing.assert_allclose(inside.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(inside.std(axis=1), 1.0, rtol=1e-4)
    # the same image at another abundance maps to the same conditioned image
    np.testing.assert_allclose(zscore_images(images[[0]] * 7.0, mask), out[[0]], rtol=1e-4, atol=1e-5)


def test_auto_epochs_are_the_measured_ten():
    model = DARLCEmbedder()
    assert model.pretrain_epochs == model.cluster_epochs == "auto" and model.gat_epochs == 100
    assert model._resolve_epochs("auto") == 10 and model._resolve_epochs(7) == 7


def test_epoch_parameters_validated():
    images, _ = pattern_images(n_per=4)
    for bad in (-1, 2.5, "many", True):
        with pytest.raises(ValueError, match="pretrain_epochs"):
            DARLCEmbedder(**{**TINY, "pretrain_epochs": bad}).fit(images)
    with pytest.raises(ValueError, match="input_scaling"):
        DARLCEmbedder(**{**TINY, "input_scaling": "minmax"}).fit(images)
