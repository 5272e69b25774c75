"""SimCLR embedder (seed 001): loss, augmentations, checkpoints, resume and bad input; tiny models only."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spatialclust as sc  # noqa: E402
from spatialclust.models._checkpoint import CONFIG_FILE, CheckpointError  # noqa: E402
from spatialclust.models import NTXentLoss  # noqa: E402
from spatialclust.models._transforms import (  # noqa: E402
    RandomCountThinning,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensityDistortion,
    RandomResizedCrop,
    RandomRotation,
    RandomTranslation,
    ion_image_transform,
    self_labeling_views,
    simclr_views,
)
from spatialclust.tl import SimCLREmbedder  # noqa: E402

FAST = {"backbone": "test_tiny", "batch_size": 8, "image_size": None, "lr": 3e-3, "device": "cpu"}
NO_CONDITIONING = {"denoise": None, "clip_percentile": None, "contrast": None}


def blob_images(n: int = 16, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy images of 4 spatial patterns (a blob in one quadrant) and their pattern."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    q = size // 4
    centres = [(q, q), (q, 3 * q), (3 * q, q), (3 * q, 3 * q)]
    patterns = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 1.0)) for cy, cx in centres]
    truth = np.arange(n) % 4
    images = [np.clip(patterns[t] * rng.uniform(0.5, 1.0) + rng.normal(0, 0.05, (size, size)), 0, 1) for t in truth]
    return np.stack(images).astype(np.float32), truth


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared, loaded machine OpenMP
    threads waiting for each other make them ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images():
    return blob_images()[0]


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    path = tmp_path_factory.mktemp("simclr") / "ckpt"
    embedder = SimCLREmbedder(**FAST, epochs=4, checkpoint=path).fit(images)
    return embedder, path


# ----------------------------------------------------------------------------- loss


def test_ntxent_matches_reference_formula():
    torch.manual_seed(0)
    z0, z1 = torch.randn(5, 7), torch.randn(5, 7)
    tau = 0.5
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    sim = z @ z.T
    n = 5
    expected = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(torch.exp(sim[i, k] / tau) for k in range(2 * n) if k != i)
        expected += -torch.log(torch.exp(sim[i, j] / tau) / denominator)
    torch.testing.assert_close(NTXentLoss(tau)(z0, z1), expected / (2 * n))
    # aligned positive pairs give a lower loss than random pairs
    assert NTXentLoss(tau)(z0, z0 + 0.01) < NTXentLoss(tau)(z0, z1)


def test_ntxent_bad_input():
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        NTXentLoss(0)
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        NTXentLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(3, 5))


# ----------------------------------------------------------------------------- augmentations


def test_augmentations_keep_shape_range_and_are_seeded():
    x = torch.rand(6, 20, 24)
    for transform in (
        RandomGaussianBlur(p=1), RandomGaussianNoise(p=1), RandomIntensityDistortion(p=1),
        RandomRotation(p=1), RandomTranslation(p=1), RandomResizedCrop(p=1), RandomCountThinning(p=1), RandomGamma(p=1),
    ):
        a = transform(x, generator=torch.Generator().manual_seed(1))
        b = transform(x, generator=torch.Generator().manual_seed(1))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1 + 1e-6
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, x), type(transform).__name__
        assert transform.__class__(p=0)(x) is x or torch.equal(transform.__class__(p=0)(x), x)


def test_count_thinning_and_gamma():
    x = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32).repeat(200, 1, 1)
    generator = torch.Generator().manual_seed(0)
    few = RandomCountThinning((2.0, 2.0), p=1)(x, generator=generator)
    many = RandomCountThinning((1000.0, 1000.0), p=1)(x, generator=generator)
    error = lambda y: float((y - x).abs().mean())  # noqa: E731
    assert error(many) < 0.05 < error(few)  # fewer counts: noisier
    assert few.amax(dim=(1, 2)).eq(1).all()  # rescaled to the image maximum
    # c counts at each image's own maximum, whatever its scale: raw intensities thin as the scaled image
    scaled = RandomCountThinning((5.0, 5.0), p=1)(x, generator=torch.Generator().manual_seed(1))
    raw = RandomCountThinning((5.0, 5.0), p=1)(250.0 * x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(raw, scaled)
    y = RandomGamma((2.0, 2.0), p=1)(x, generator=generator)
    torch.testing.assert_close(y, x**2)
    with pytest.raises(ValueError, match="`counts` must satisfy"):
        RandomCountThinning((10.0, 1.0))


def test_blur_matches_torchvision():
    from torchvision.transforms.functional import gaussian_blur

    x = torch.rand(3, 20, 20)
    ours = RandomGaussianBlur((1.0, 1.0), p=1)(x)
    torch.testing.assert_close(ours, gaussian_blur(x[:, None], kernel_size=7, sigma=1.0)[:, 0], atol=1e-5, rtol=0)


def test_default_views_are_appearance_only():
    names = [type(t).__name__ for t in ion_image_transform().transforms]
    assert names == ["RandomGaussianBlur", "RandomIntensityDistortion", "RandomGaussianNoise"]  # the authors' order
    assert all(t.p == 1.0 for t in ion_image_transform().transforms)  # always applied, as in the authors' code
    geometric = [type(t).__name__ for t in ion_image_transform(rotation=15, translation=0.05, resized_crop=True).transforms]
    assert geometric[:3] == ["RandomRotation", "RandomTranslation", "RandomResizedCrop"]
    x = torch.rand(4, 16, 16)
    v0, v1 = simclr_views()(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(v0, v1)
    weak, strong = self_labeling_views()(x, generator=torch.Generator().manual_seed(0))
    assert (weak - x).abs().mean() < (strong - x).abs().mean()
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    masked = ion_image_transform(mask=mask)(x, generator=torch.Generator().manual_seed(0))
    assert masked[:, ~mask].abs().max() == 0


def test_augmentation_strength_by_name_or_mapping():
    from spatialclust.models import AUGMENTATION_STRENGTHS, augmentation_strength

    assert augmentation_strength("strong") == AUGMENTATION_STRENGTHS["strong"]
    custom = augmentation_strength({"p": 0.5, "blur_sigma": (0.1, 2.0)})
    assert custom["p"] == 0.5 and custom["noise_sigma"] == AUGMENTATION_STRENGTHS["medium"]["noise_sigma"]
    blur = ion_image_transform({"p": 0.5, "blur_sigma": (0.1, 2.0)}).transforms[0]
    assert blur.p == 0.5 and blur.sigma == (0.1, 2.0)
    with pytest.raises(ValueError, match="Invalid option `huge` for `strength`"):
        augmentation_strength("huge")
    with pytest.raises(ValueError, match=r"Unknown augmentation parameter\(s\) \['sigma'\]"):
        augmentation_strength({"sigma": 1.0})
    with pytest.raises(ValueError, match="Invalid option `huge`"):
        SimCLREmbedder(**{**FAST, "epochs": 1, "augmentation": "huge"}).fit(blob_images()[0])


def test_auto_batch_is_half_the_images():
    from spatialclust.tl._training import resolve_batch_size

    assert resolve_batch_size("auto", 367) == 183  # the authors' 183 of 367 images
    assert resolve_batch_size("auto", 3) == 2 and resolve_batch_size("auto", 10_000) == 256
    assert resolve_batch_size(64, 10) == 10


# ----------------------------------------------------------------------------- training


def test_loss_decreases_and_representation(trained, images):
    embedder, path = trained
    losses = [h["loss"] for h in embedder.history_]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    features = embedder.transform(images)  # PCA to min(50, 16 - 1) components, then unit length
    assert features.shape == (16, 15) and features.dtype == np.float32 and np.isfinite(features).all()
    assert embedder.n_features_out_ == 15 and np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["architecture"]["backbone"] == "test_tiny"
    assert config["preprocessing"]["image_size"] == 32
    assert config["training"]["complete"] and config["training"]["epoch"] == 4
    assert config["spatialclust_version"] == sc.__version__


def test_finished_checkpoint_is_loaded_not_retrained(trained, images, monkeypatch):
    embedder, path = trained

    def fail(*args, **kwargs):
        raise AssertionError("a finished checkpoint must not be retrained")

    monkeypatch.setattr(SimCLREmbedder, "_train_epoch", fail)
    loaded = SimCLREmbedder(**FAST, epochs=4, checkpoint=path).fit(images)
    np.testing.assert_allclose(loaded.transform(images), embedder.transform(images), rtol=1e-5, atol=1e-6)
    again = SimCLREmbedder.from_checkpoint(path, device="cpu")
    assert again.history_ == embedder.history_


def test_postprocessing_of_the_encoder_features(trained, images, caplog):
    from sklearn.decomposition import PCA

    embedder, path = trained
    raw = SimCLREmbedder.from_checkpoint(path, device="cpu", postprocess=None).transform(images)
    assert raw.shape == (16, 16)  # the encoder's own features
    unit = raw.astype(np.float64) / np.linalg.norm(raw, axis=1, keepdims=True)
    expected = PCA(15, random_state=0).fit_transform(unit)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    features = embedder.transform(images)
    # the PCA is fitted on the images of `fit` (signs of the components are arbitrary)
    np.testing.assert_allclose(np.abs(features), np.abs(expected), atol=1e-4)
    np.testing.assert_allclose(embedder.transform(images[:3]), features[:3], atol=1e-5)  # fitted once, not per call
    # a checkpoint holds no PCA: the first transform fits it, and says so
    loaded = SimCLREmbedder.from_checkpoint(path, device="cpu")
    with caplog.at_level("INFO", logger="spatialclust"):
        np.testing.assert_allclose(np.abs(loaded.transform(images)), np.abs(features), atol=1e-4)
    assert "not part of a checkpoint" in caplog.text
    l2 = SimCLREmbedder.from_checkpoint(path, device="cpu", postprocess="l2").transform(images)
    np.testing.assert_allclose(l2, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_interrupted_training_resumes_from_last_checkpoint(images, tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    reference = SimCLREmbedder(**FAST, epochs=3).fit(images)
    original = SimCLREmbedder._train_epoch

    def interrupt_in_third_epoch(self, data, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, data, epoch, *args)

    monkeypatch.setattr(SimCLREmbedder, "_train_epoch", interrupt_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        SimCLREmbedder(**FAST, epochs=3, checkpoint=path).fit(images)
    assert json.loads((path / CONFIG_FILE).read_text())["training"]["epoch"] == 2
    monkeypatch.setattr(SimCLREmbedder, "_train_epoch", original)
    trained_epochs = []
    monkeypatch.setattr(
        SimCLREmbedder, "_train_epoch",
        lambda self, data, epoch, *args: trained_epochs.append(epoch) or original(self, data, epoch, *args),
    )
    resumed = SimCLREmbedder(**FAST, epochs=3, checkpoint=path).fit(images)
    assert trained_epochs == [2]
    assert [h["loss"] for h in resumed.history_] == pytest.approx([h["loss"] for h in reference.history_], rel=1e-4)
    np.testing.assert_allclose(resumed.transform(images), reference.transform(images), rtol=1e-3, atol=1e-5)


def test_checkpoint_of_other_backbone_or_version_is_refused(trained, images, tmp_path):
    _, path = trained
    with pytest.raises(CheckpointError, match=r"`architecture\.backbone` \(expected 'efficientnet_lite0', checkpoint has 'test_tiny'\)"):
        SimCLREmbedder("efficientnet_lite0", checkpoint=path, device="cpu").fit(images)
    with pytest.raises(CheckpointError, match=r"`architecture\.projection_dim`"):
        SimCLREmbedder(**{**FAST, "backbone": "test_tiny"}, projection_dim=7, checkpoint=path).fit(images)
    old = tmp_path / "old"
    old.mkdir()
    for file in path.iterdir():
        (old / file.name).write_bytes(file.read_bytes())
    config = json.loads((old / CONFIG_FILE).read_text())
    config["spatialclust_version"] = "0.0.1"
    (old / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="incompatible with the installed spatialclust"):
        SimCLREmbedder(**FAST, checkpoint=old).fit(images)


def test_fewer_images_than_batch_size_and_single_image(images, caplog):
    few = images[:3]
    with caplog.at_level("INFO", logger="spatialclust"):
        embedder = SimCLREmbedder(**{**FAST, "batch_size": 64}, epochs=1).fit(few)
    assert "larger than the 3 images" in caplog.text
    assert embedder.transform(few).shape == (3, 2)  # PCA components: at most n_images - 1
    with pytest.raises(ValueError, match="`images` holds 1 image; SimCLR needs at least 2"):
        SimCLREmbedder(**FAST, epochs=1).fit(images[:1])


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [("temperature", 0.0, "`temperature` must be a positive number"), ("epochs", 0, "`epochs` must be an integer >= 1"),
     ("batch_size", 1, "`batch_size` must be an integer >= 2"), ("image_size", "big", "`image_size` must be"),
     ("denoise", "bilateral", "Invalid option `bilateral` for `denoise`"), ("contrast", "gamma", "Invalid option `gamma` for `contrast`"),
     ("clip_percentile", 150.0, "`clip_percentile` must be in"),
     ("abundance_views", 1.5, "`abundance_views` must be a probability in"),
     ("abundance_counts", (100.0, 3.0), "`abundance_counts` must satisfy")],
)
def test_bad_parameters_are_named(images, param, value, message):
    with pytest.raises(ValueError, match=message):
        SimCLREmbedder(**{**FAST, "epochs": 1, param: value}).fit(images)


CONDITIONING = {"denoise": "median", "denoise_size": 3.0, "clip_percentile": 90.0, "contrast": "minmax"}


def test_conditioning_is_applied_before_the_views_and_at_transform(images, monkeypatch):
    from spatialclust.models import encode

    conditioned = sc.pp.condition_images(images, **CONDITIONING)
    assert not np.allclose(conditioned, images)
    seen = []
    original = SimCLREmbedder._train_epoch
    monkeypatch.setattr(SimCLREmbedder, "_train_epoch",
                        lambda self, data, *args: seen.append(data.batch(torch.arange(data.n_images)).numpy().copy()) or original(self, data, *args))
    # without abundance views (the paper's views) the training images are conditioned once, before any view
    embedder = SimCLREmbedder(**FAST, epochs=1, **CONDITIONING, postprocess=None, abundance_views=0.0).fit(images)
    np.testing.assert_array_equal(seen[0], conditioned)  # the views are drawn from the conditioned images
    np.testing.assert_array_equal(embedder.condition(images), conditioned)
    features = embedder.transform(images)
    expected = encode(embedder.model_.encoder, conditioned, image_size=embedder.image_size_, device="cpu")
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    raw = encode(embedder.model_.encoder, images, image_size=embedder.image_size_, device="cpu")
    assert not np.allclose(features, raw, atol=1e-4)
    # self-labeling starts from the same conditioned images
    labels = np.arange(images.shape[0]) % 2
    model = sc.tl.SelfLabelingClassifier(embedder, epochs=1, seed=0, device="cpu").fit(images, labels)
    np.testing.assert_allclose(
        model.transform(images), encode(model.model_.encoder, conditioned, image_size=embedder.image_size_, device="cpu"),
        rtol=1e-5, atol=1e-6,
    )
    assert SimCLREmbedder(**FAST, **NO_CONDITIONING).condition(images) is images  # the images as given
    default = sc.pp.condition_images(images, denoise="gaussian", denoise_size=3.0, clip_percentile=99.0, contrast="minmax")
    np.testing.assert_array_equal(SimCLREmbedder(**FAST).condition(images), default)  # the measured default


def test_abundance_views_resample_before_conditioning(images):
    """Each view: count thinning of the image as given, then the conditioning, then the appearance augmentations."""
    from spatialclust.tl._simclr import _AbundanceViews

    batch = torch.from_numpy(images[:6])
    condition = lambda x: sc.pp.condition_images(x, **CONDITIONING)  # noqa: E731
    views = simclr_views(strength="medium")
    thinning = RandomCountThinning((1.0, 10.0), p=1.0)
    got = _AbundanceViews(views, thinning, condition)(batch, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    for view, transform in zip(got, views.transforms):
        resampled = thinning(batch, generator=generator)
        assert not torch.allclose(resampled, batch)
        expected = transform(torch.from_numpy(condition(resampled.numpy())), generator=generator)
        torch.testing.assert_close(view, expected)
    assert not torch.allclose(got[0], got[1])  # independent acquisitions
    unthinned = _AbundanceViews(views, RandomCountThinning(p=0.0), condition)(batch, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    for view, transform in zip(unthinned, views.transforms):
        RandomCountThinning(p=0.0)(batch, generator=generator)  # the same random stream
        torch.testing.assert_close(view, transform(torch.from_numpy(condition(images[:6])), generator=generator))


def test_abundance_views_train_on_the_images_as_given_and_are_seeded(images, tmp_path, monkeypatch):
    seen = []
    original = SimCLREmbedder._train_epoch
    monkeypatch.setattr(SimCLREmbedder, "_train_epoch",
                        lambda self, data, *args: seen.append(data.batch(torch.arange(data.n_images)).numpy().copy()) or original(self, data, *args))
    path = tmp_path / "ckpt"
    params = {**FAST, "epochs": 2, **CONDITIONING, "postprocess": None, "abundance_views": 0.5, "abundance_counts": (2.0, 50.0)}
    first = SimCLREmbedder(**params, checkpoint=path).fit(images)
    np.testing.assert_array_equal(seen[0], images)  # conditioned only after the resampling
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["params"]["abundance_views"] == 0.5 and config["params"]["abundance_counts"] == [2.0, 50.0]
    again = SimCLREmbedder(**params).fit(images)
    np.testing.assert_allclose(again.transform(images), first.transform(images), rtol=1e-5, atol=1e-6)
    other = SimCLREmbedder(**{**params, "abundance_views": 0.0}).fit(images)
    assert not np.allclose(other.transform(images), first.transform(images), atol=1e-4)


def test_checkpoint_reapplies_its_conditioning(images, tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    embedder = SimCLREmbedder(**FAST, epochs=1, checkpoint=path, **CONDITIONING).fit(images)
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["preprocessing"]["conditioning"] == CONDITIONING
    loaded = SimCLREmbedder.from_checkpoint(path, device="cpu")
    assert {name: getattr(loaded, name) for name in CONDITIONING} == CONDITIONING
    np.testing.assert_allclose(loaded.transform(images), embedder.transform(images), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(SimCLREmbedder, "_train_epoch", lambda *args: pytest.fail("a finished checkpoint must not be retrained"))
    same = SimCLREmbedder(**FAST, epochs=1, checkpoint=path, **CONDITIONING).fit(images)
    np.testing.assert_allclose(same.transform(images), embedder.transform(images), rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="was trained on images conditioned with"):
        SimCLREmbedder(**FAST, epochs=1, checkpoint=path, **NO_CONDITIONING).fit(images)
    with pytest.raises(CheckpointError, match="this embedder conditions them with"):
        SimCLREmbedder.from_checkpoint(path, device="cpu", contrast="rank")


def test_checkpoint_without_conditioning_field_means_none(images, tmp_path):
    path = tmp_path / "ckpt"
    embedder = SimCLREmbedder(**FAST, epochs=1, checkpoint=path, **NO_CONDITIONING).fit(images)
    old = tmp_path / "old"
    old.mkdir()
    for file in path.iterdir():
        (old / file.name).write_bytes(file.read_bytes())
    config = json.loads((old / CONFIG_FILE).read_text())
    assert config["preprocessing"].pop("conditioning") is None
    (old / CONFIG_FILE).write_text(json.dumps(config))
    loaded = SimCLREmbedder.from_checkpoint(old, device="cpu")
    assert loaded.denoise is None and loaded.clip_percentile is None and loaded.contrast is None
    np.testing.assert_allclose(loaded.transform(images), embedder.transform(images), rtol=1e-5, atol=1e-6)


def test_embed_writes_varm_and_checkpoint(images, tmp_path):
    adata = sc.io.images_to_adata(images)
    path = tmp_path / "ckpt"
    sc.tl.embed(adata, method="simclr", **FAST, epochs=1, checkpoint=str(path))
    assert adata.varm["X_simclr"].shape == (16, 15)  # 50 PCA components, at most n_images - 1
    assert adata.uns["X_simclr"]["method"] == "simclr"
    assert adata.uns["X_simclr"]["params"]["checkpoint"] == str(path)
    assert (path / "model.safetensors").is_file()


def test_cli_train_writes_and_refuses_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from spatialclust.cli import app

    config = tmp_path / "train.yaml"
    config.write_text(
        "input:\n  simulate: {shape: [32, 32], n_patterns: 3, ions_per_pattern: 3}\n"
        "embedding:\n  - method: simclr\n    params: {backbone: test_tiny, epochs: 1, batch_size: 8, image_size: null}\n"
    )
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(app, ["train", str(config), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and "Done: 1 epochs" in result.output
    other = ["--set", "embedding=[{method: simclr, params: {backbone: efficientnet_lite0}}]"]
    result = CliRunner().invoke(app, ["train", str(config), "-o", str(out), "-q", *other])
    assert result.exit_code == 1
    assert "`architecture.backbone` (expected 'efficientnet_lite0', checkpoint has 'test_tiny')" in result.output
