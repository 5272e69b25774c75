"""Self-labeling (seed 001): only confident images are trained on, history, warnings and the AnnData wrapper."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spatialclust as sc  # noqa: E402
from spatialclust.tl import NoConfidentImagesWarning, SelfLabelingClassifier  # noqa: E402
from spatialclust.tl import SimCLREmbedder  # noqa: E402
from test_simclr import FAST, blob_images  # noqa: E402

SELF_LABEL = {"batch_size": 8, "device": "cpu", "init_lr": 0.05, "lr": 1e-3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: tiny models gain nothing from two, and waiting OpenMP threads are slow on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    images, truth = blob_images(n=16)
    path = tmp_path_factory.mktemp("sl") / "simclr"
    embedder = SimCLREmbedder(**FAST, epochs=2, checkpoint=path).fit(images)
    return images, truth, embedder, path


def test_confidence_based_loss_trains_only_confident_weak_views():
    from spatialclust.models import ConfidenceBasedCrossEntropy

    weak = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [0.1, 0.0, 0.0]])
    strong = torch.randn(4, 3, requires_grad=True)
    loss, n = ConfidenceBasedCrossEntropy(0.9, class_balancing=False)(weak, strong)
    assert n == 3  # the last weak view is not confident
    expected = torch.nn.functional.cross_entropy(strong[:3], torch.tensor([0, 1, 2]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert strong.grad[3].abs().max() == 0 and strong.grad[:3].abs().max() > 0
    # class balancing: two confident images of class 0, one of class 1 -> weights 3/2 and 3
    weak = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    strong = torch.randn(3, 2)
    loss, _ = ConfidenceBasedCrossEntropy(0.9)(weak, strong)
    expected = torch.nn.functional.cross_entropy(strong, torch.tensor([0, 0, 1]), weight=torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(loss, expected)
    zero, n = ConfidenceBasedCrossEntropy(0.99)(torch.zeros(2, 2), strong[:2])
    assert n == 0 and float(zero) == 0.0
    with pytest.raises(ValueError, match="`threshold` must be a probability"):
        ConfidenceBasedCrossEntropy(0.0)


def test_auto_threshold_keeps_the_most_confident_fraction(data, monkeypatch):
    images, truth, embedder, _ = data
    steps: list[int] = []
    original = SelfLabelingClassifier._train_step

    def spy(self, batch, *args):
        loss, n = original(self, batch, *args)
        steps.append(n)
        return loss, n

    monkeypatch.setattr(SelfLabelingClassifier, "_train_step", spy)
    model = SelfLabelingClassifier(embedder, epochs=3, confident_fraction=0.5, **SELF_LABEL).fit(images, truth, true_labels=truth)
    initial = model.confidences_[0]
    # the threshold lets the most confident half of the images through after the initialisation
    assert model.threshold_ == pytest.approx(np.quantile(initial, 0.5))
    assert len(steps) == 3 * 2  # 16 images in batches of 8, every epoch
    assert [h["n_confident"] for h in model.history_[:-1]] == [sum(steps[i : i + 2]) for i in (0, 2, 4)]
    assert model.history_[-1]["n_confident"] == int((model.probabilities_.max(1) > model.threshold_).sum())
    # history: one row per epoch + the final model, with accuracy against the given labels
    assert [h["epoch"] for h in model.history_] == [1, 2, 3, 4]
    assert all(0 <= h["accuracy"] <= 1 for h in model.history_)
    assert len(model.confidences_) == 1 + 3  # after the initialisation and after every epoch (with true labels)
    assert model.labels_.shape == (16,) and set(model.labels_) <= set(np.unique(truth))
    assert model.probabilities_.shape == (16, 4)
    np.testing.assert_allclose(model.probabilities_.sum(1), 1, rtol=1e-5)
    assert model.transform(images).shape == (16, 16)
    fixed = SelfLabelingClassifier(embedder, threshold=0.3, epochs=1, **SELF_LABEL).fit(images, truth)
    assert fixed.threshold_ == 0.3


def test_embedder_is_not_modified(data):
    images, truth, embedder, _ = data
    before = embedder.transform(images)
    SelfLabelingClassifier(embedder, threshold=0.3, epochs=1, **SELF_LABEL).fit(images, truth)
    np.testing.assert_array_equal(embedder.transform(images), before)


def test_no_confident_image_warns_and_does_not_train(data, monkeypatch):
    images, truth, embedder, path = data

    def fail(*args, **kwargs):
        raise AssertionError("nothing may be trained below the threshold")

    monkeypatch.setattr("spatialclust.models.optimizer_step", fail)
    model = SelfLabelingClassifier(path, threshold=0.99, epochs=2, init_epochs=0, **SELF_LABEL)
    with pytest.warns(NoConfidentImagesWarning, match="no image reached the confidence threshold 0.99"):
        model.fit(images, truth)
    assert model.stopped_early_
    assert model.threshold == 0.99  # not lowered
    assert model.history_[0]["n_confident"] == 0 and np.isnan(model.history_[0]["loss"])


@pytest.mark.parametrize(
    ("kwargs", "labels", "message"),
    [({"threshold": 1.5}, None, "`threshold` must be a probability"),
     ({"confident_fraction": 0.0}, None, "`confident_fraction` must be a probability"),
     ({"weak": "huge"}, None, "Invalid option `huge` for `strength`"),
     ({}, np.zeros(16, dtype=int), "at least 2 clusters"),
     ({}, np.zeros(5, dtype=int), r"one label per image, shape \(16,\)"),
     ({"embedder": "does/not/exist"}, None, "does not exist")],
)
def test_bad_input(data, kwargs, labels, message):
    images, truth, embedder, _ = data
    from spatialclust.models import CheckpointError

    params = {"embedder": embedder, "epochs": 1, **SELF_LABEL, **kwargs}
    with pytest.raises((ValueError, CheckpointError), match=message):
        SelfLabelingClassifier(**params).fit(images, truth if labels is None else labels)


def test_self_label_on_anndata(data):
    images, truth, _, path = data
    adata = sc.io.images_to_adata(images)
    adata.var["pattern"] = truth.astype(str)
    sc.tl.embed(adata, method="simclr", **FAST, epochs=2, checkpoint=str(path))
    sc.tl.self_label(adata, n_clusters=4, truth="pattern", threshold=0.3, epochs=1, **SELF_LABEL)
    assert adata.var["self_label"].dtype == np.int64
    assert adata.var["self_label_init"].nunique() == 4
    assert adata.varm["X_self_label"].shape == (16, 16)
    info = adata.uns["self_label"]
    assert info["method"] == "self_label" and info["checkpoint"] == str(path)
    assert len(info["history"]["n_confident"]) == len(info["history"]["epoch"])
    assert (adata.var["self_label_confidence"].between(0, 1)).all()
    with pytest.raises(ValueError, match="No SimCLR checkpoint"):
        bare = sc.io.images_to_adata(images)
        bare.varm["X_simclr"] = adata.varm["X_simclr"]
        sc.tl.self_label(bare)


def test_analysis_figures(data, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, truth, _, path = data
    adata = sc.io.images_to_adata(images, mz=np.arange(16) * 10.0 + 100.0)
    adata.var["pattern"] = [f"p{t}" for t in truth]
    adata.varm["X_regular"] = images.reshape(16, -1)
    sc.tl.embed(adata, method="simclr", **FAST, epochs=2, checkpoint=str(path))
    sc.tl.self_label(adata, n_clusters=4, truth="pattern", threshold=0.3, epochs=1, **SELF_LABEL)

    fig = sc.pl.knn_purity_curve(adata, ["X_regular", "X_simclr"], ks=range(1, 6), save=tmp_path / "purity.png")
    assert list(fig.purity.columns) == ["X_regular", "X_simclr"] and fig.purity.index.tolist() == [1, 2, 3, 4, 5]
    assert ((fig.purity >= 0) & (fig.purity <= 1)).all().all() and (tmp_path / "purity.png").is_file()
    fig = sc.pl.representations(adata, ["X_regular", "X_simclr", "X_self_label"], method="tsne")
    assert set(fig.coordinates) == {"X_regular", "X_simclr", "X_self_label"}
    fig = sc.pl.ion_pair_similarity(adata, [(100.0, 140.0), (100.0, 110.0)], ["X_regular", "X_simclr"])
    expected = float(images[0].ravel() @ images[4].ravel() / np.linalg.norm(images[0]) / np.linalg.norm(images[4]))
    assert fig.similarity.iloc[0]["X_regular"] == pytest.approx(expected, rel=1e-5)
    sc.pl.self_labeling_history(adata, save=tmp_path / "history.png")
    assert (tmp_path / "history.png").is_file()
    with pytest.raises(KeyError, match="No feature within 0.01 of m/z 999"):
        sc.pl.ion_pair_similarity(adata, [(100.0, 999.0)], ["X_simclr"])
    plt.close("all")


def test_simclr_embedder_with_self_label(data):
    images, truth, _, path = data
    adata = sc.io.images_to_adata(images)
    params = {"threshold": 0.3, "epochs": 1, **SELF_LABEL}
    embedder = sc.tl.SimCLREmbedder(**FAST, epochs=2, checkpoint=str(path), self_label=True, n_clusters=4, self_label_params=params)
    sc.tl.embed(adata, embedder)
    assert adata.varm["X_simclr"].shape == (16, 15)
    # the post-processing PCA is fitted on the features of the fine-tuned encoder
    expected = sc.tl.postprocess_vectors(embedder.self_labeling_.transform(images), "pca_l2", embedder.pca_)
    np.testing.assert_allclose(adata.varm["X_simclr"], expected, rtol=1e-5, atol=1e-6)
    refit = sc.tl.fit_postprocessing(embedder.self_labeling_.transform(images), "pca_l2", 50)
    np.testing.assert_allclose(np.abs(refit.components_), np.abs(embedder.pca_.components_), atol=1e-4)
    assert embedder.labels_.shape == (16,)
    assert adata.uns["X_simclr"]["params"]["self_label"] is True
