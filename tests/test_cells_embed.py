"""Channel-wise pretrained embeddings, the channel-adapted ViT and a tiny DINO run with checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust import _keys

torch = pytest.importorskip("torch")

TINY_DINO = dict(image_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, out_dim=32, hidden_dim=32,
                 bottleneck_dim=16, n_local_crops=2, batch_size=8, warmup_epochs=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread (no thread hand-off per small op on a shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cells():
    return sc.datasets.simulate_cells(12, width=24, height_range=(18, 24), seed=0)


def test_channelwise_embedding_concat_and_mean(cells):
    from spatialclust.models import create_backbone

    images = sc.io.cell_image_stack(cells)
    sizes = cells.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    concat = sc.tl.ChannelwiseEmbedder("test_tiny", combine="concat", image_size=16, device="cpu").fit()
    mean = sc.tl.ChannelwiseEmbedder("test_tiny", combine="mean", image_size=16, device="cpu").fit()
    a = concat.transform(images, sizes=sizes)
    b = mean.transform(images, sizes=sizes)
    assert a.shape == (12, 3 * 16) and b.shape == (12, 16)
    np.testing.assert_allclose(a.reshape(12, 3, 16).mean(axis=1), b, rtol=1e-5, atol=1e-6)
    # channel c of the concatenation is the backbone applied to that channel alone as a gray image
    from spatialclust.models import scale_cell_images

    backbone = create_backbone("test_tiny").eval()
    gray = scale_cell_images(images, sizes)[:, 2]
    with torch.inference_mode():
        expected = backbone(backbone.preprocess(gray, size=16)).numpy()
    np.testing.assert_allclose(a[:, 32:48], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="Invalid option `max` for `combine`"):
        sc.tl.ChannelwiseEmbedder("test_tiny", combine="max").fit()


def test_embed_cells_writes_obsm(cells):
    adata = cells.copy()
    sc.tl.embed_cells(adata, "pretrained", backbone="test_tiny", image_size=16, device="cpu")
    assert adata.obsm["X_test_tiny"].shape == (12, 48)
    assert adata.uns["X_test_tiny"]["params"]["backbone"] == "test_tiny"
    with pytest.raises(ValueError, match="Invalid option `clip` for `method`"):
        sc.tl.embed_cells(adata, "clip")


def test_patch_embedding_adapted_by_averaging_rgb():
    from spatialclust.models import adapt_patch_embedding, channel_vit

    rgb = channel_vit(3, image_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    state = rgb.state_dict()
    five = channel_vit(5, image_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, state_dict=state)
    weight = five.patch_embed.proj.weight.detach()
    assert weight.shape == (16, 5, 8, 8)
    expected = state["patch_embed.proj.weight"].mean(dim=1)
    for c in range(5):
        torch.testing.assert_close(weight[:, c], expected)
    torch.testing.assert_close(adapt_patch_embedding(state["patch_embed.proj.weight"], 3), state["patch_embed.proj.weight"])
    assert five(torch.rand(2, 5, 32, 32)).shape == (2, 16)


def test_dino_loss_centering_and_sharpening():
    from spatialclust.models import DINOLoss

    loss = DINOLoss(4, epochs=1, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    teacher = [torch.tensor([[10.0, 0, 0, 0]]), torch.tensor([[10.0, 0, 0, 0]])]
    matching = loss([torch.tensor([[10.0, 0, 0, 0]])] * 3, teacher, 0)
    loss.center.zero_()
    other = loss([torch.tensor([[0.0, 10.0, 0, 0]])] * 3, teacher, 0)
    assert float(matching) < 0.01 < float(other)
    # the centre moved towards the mean teacher output with momentum 0.9
    torch.testing.assert_close(loss.center, torch.tensor([[1.0, 0, 0, 0]]))


def test_tiny_dino_run_checkpoint_and_resume(cells, tmp_path):
    from spatialclust.models import DINOTrainer

    images = sc.io.cell_image_stack(cells)
    sizes = cells.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    ckpt = tmp_path / "dino"
    trainer = DINOTrainer(epochs=2, checkpoint=ckpt, save_every=1, device="cpu", seed=0, **TINY_DINO).fit(images, sizes=sizes)
    assert [h["epoch"] for h in trainer.history_] == [1, 2] and all(np.isfinite(h["loss"]) for h in trainer.history_)
    emb = trainer.transform(images, sizes=sizes)
    assert emb.shape == (12, 16) and np.isfinite(emb).all()
    # teacher != student (EMA), and the checkpoint restores the teacher exactly
    restored = DINOTrainer.from_checkpoint(ckpt, device="cpu")
    np.testing.assert_allclose(restored.transform(images, sizes=sizes), emb, rtol=1e-5, atol=1e-6)
    # a longer training resumes from the checkpoint instead of starting over
    longer = DINOTrainer(epochs=3, checkpoint=ckpt, save_every=1, device="cpu", seed=0, **TINY_DINO).fit(images, sizes=sizes)
    assert [h["epoch"] for h in longer.history_] == [1, 2, 3]
    assert longer.history_[:2] == trainer.history_
    with pytest.raises(ValueError, match="does not match"):
        DINOTrainer(epochs=3, checkpoint=ckpt, device="cpu", **{**TINY_DINO, "embed_dim": 32}).fit(images, sizes=sizes)
    with pytest.raises(ValueError, match="trained on 3 channels"):
        trainer.transform(images[:, :2])


def test_pixels_baseline_and_dataset_scaling(cells):
    from spatialclust.models import channel_reference, scale_cell_images

    adata = cells.copy()
    sc.tl.embed_cells(adata, "pixels")
    np.testing.assert_array_equal(adata.obsm["X_pixels"], adata.obsm[_keys.CELL_IMAGES])
    with pytest.raises(TypeError, match="`pixels` takes no parameters"):
        sc.tl.embed_cells(adata, "pixels", size=8)
    images = sc.io.cell_image_stack(cells)
    sizes = cells.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    # "cell" scaling hides a two-fold brightness difference between cells, "dataset" scaling keeps it
    double = 2 * images
    np.testing.assert_allclose(scale_cell_images(double, sizes), scale_cell_images(images, sizes), atol=1e-6)
    both, both_sizes = np.concatenate([images, double]), np.concatenate([sizes, sizes])
    reference = channel_reference(both, both_sizes, quantile=1.0)
    np.testing.assert_allclose(reference, double.max(axis=(0, 2, 3)), rtol=1e-6)
    scaled = scale_cell_images(both, both_sizes, reference=reference)
    assert scaled.max() <= 1.0
    np.testing.assert_allclose(scaled[12:], 2 * scaled[:12], atol=1e-6)
    with pytest.raises(ValueError, match="`reference` must hold 3 positive values"):
        scale_cell_images(images, sizes, reference=[1.0, 2.0])
    with pytest.raises(ValueError, match="Invalid option `global` for `scaling`"):
        sc.tl.ChannelwiseEmbedder("test_tiny", scaling="global").fit()


def test_dino_dataset_scaling_is_kept_in_the_checkpoint(cells, tmp_path):
    from spatialclust.models import DINOTrainer, channel_reference

    images = sc.io.cell_image_stack(cells)
    sizes = cells.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    trainer = DINOTrainer(epochs=1, checkpoint=tmp_path / "d", device="cpu", scaling="dataset", intensity_jitter=0.0,
                          **TINY_DINO).fit(images, sizes=sizes)
    np.testing.assert_allclose(trainer.reference_, channel_reference(images, sizes))
    restored = DINOTrainer.from_checkpoint(tmp_path / "d", device="cpu")
    np.testing.assert_allclose(restored.reference_, trainer.reference_)
    np.testing.assert_allclose(restored.transform(images, sizes=sizes), trainer.transform(images, sizes=sizes), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Invalid option `per_image` for `scaling`"):
        DINOTrainer(scaling="per_image").fit(images, sizes=sizes)


def test_dino_channels_separate_trains_one_vit_per_channel(cells, tmp_path):
    from spatialclust.models import DINOTrainer

    images = sc.io.cell_image_stack(cells)
    sizes = cells.obs[[_keys.IMAGE_HEIGHT, _keys.IMAGE_WIDTH]].to_numpy()
    adata = cells.copy()
    ckpt = tmp_path / "dino"
    sc.tl.embed_cells(adata, "dino", channels="separate", epochs=1, checkpoint=ckpt, device="cpu", seed=0, **TINY_DINO)
    emb = adata.obsm["X_dino"]
    assert emb.shape == (12, 3 * 16) and np.isfinite(emb).all()
    assert sorted(p.name for p in ckpt.iterdir()) == ["channel_0", "channel_1", "channel_2"]
    assert set(adata.uns["X_dino"]["history"]) == {"channel_0", "channel_1", "channel_2"}
    # each block is the embedding of one channel by its own single-channel ViT
    second = DINOTrainer.from_checkpoint(ckpt / "channel_1", device="cpu")
    assert second.in_chans_ == 1
    np.testing.assert_allclose(second.transform(images[:, [1]], sizes=sizes), emb[:, 16:32], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Invalid option `each` for `channels`"):
        sc.tl.embed_cells(adata, "dino", channels="each", **TINY_DINO)
