"""Image embedders on a chunked (dask) X: images a batch at a time give the in-memory embeddings;
on a 2-worker LocalCluster the batches run on the workers with the model sent once."""

from __future__ import annotations

import numpy as np
import pytest

import spatialclust as sc
from spatialclust import _keys as K
from spatialclust._compute import chunked

da = pytest.importorskip("dask.array")
torch = pytest.importorskip("torch")

#: A tiny neural embedder: 12 px patches of the test backbone, the default conditioning and concatenation.
NEURAL = {"backbone": "test_tiny", "patch_size": 12, "num_threads": 1, "device": "cpu"}
SIMCLR = {"backbone": "test_tiny", "epochs": 2, "batch_size": 8, "image_size": None, "device": "cpu", "seed": 3}
CONDITIONED = {"denoise": "gaussian", "denoise_size": 1.5, "clip_percentile": 99.0, "contrast": "minmax"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared machine: one torch thread."""
    from spatialclust.models import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data():
    adata = sc.datasets.simulate_msi(shape=(24, 28), n_patterns=3, ions_per_pattern=5, n_matrix_ions=2, seed=4)
    sc.pp.preprocess_ion_images(adata)
    return adata


def lazy_copy(adata, chunk_pixels=100, chunk_images=4):
    """``adata`` with X a dask array of ``chunk_pixels`` x ``chunk_images`` chunks."""
    out = adata.copy()
    out.X = da.from_array(np.asarray(adata.X), chunks=(chunk_pixels, chunk_images))
    return out


@pytest.fixture()
def small_batches(monkeypatch):
    """Batches of 8 images (4 or so batches) instead of everything in one."""
    import spatialclust.pp._batches as batches_module

    monkeypatch.setattr(batches_module, "CHUNK_ENTRIES", 8 * 24 * 28)


def test_feature_image_batches_are_the_feature_images(data, small_batches):
    lazy = lazy_copy(data)
    batches = sc.pp.FeatureImageBatches(lazy)
    assert batches.batch_size == 8 and len(batches) == -(-data.n_vars // 8)  # whole column chunks of 4
    images = sc.pp.feature_images(data)
    np.testing.assert_array_equal(np.concatenate(list(batches)), images)
    np.testing.assert_array_equal(np.concatenate(da.compute(*batches.delayed())), images)
    np.testing.assert_array_equal(batches.load(np.array([5, 1, 5])), images[[5, 1, 5]])
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer or None; received 0"):
        sc.pp.FeatureImageBatches(lazy, batch_size=0)


def test_conditioned_regular_streams_and_matches_in_memory(data, small_batches):
    memory, lazy = data.copy(), lazy_copy(data)
    for adata in (memory, lazy):
        sc.tl.embed(adata, "regular", **CONDITIONED)
        sc.tl.embed(adata, "regular", n_components=8, key_added="X_svd", **CONDITIONED)
        sc.tl.embed(adata, "regular", postprocess="pca_whiten", postprocess_components=6, key_added="X_pw", **CONDITIONED)
    np.testing.assert_allclose(lazy.varm["X_pw"], memory.varm["X_pw"], rtol=1e-4, atol=1e-4)
    assert memory.varm["X_pw"].shape == (data.n_vars, 6)
    assert sc.pp.is_dask(sc.pp.conditioned_tissue_pixels(lazy, **CONDITIONED))
    np.testing.assert_allclose(lazy.varm["X_regular"], memory.varm["X_regular"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy.varm["X_svd"], memory.varm["X_svd"], rtol=1e-4, atol=1e-4)
    unconditioned = data.copy()
    sc.tl.embed(unconditioned, "regular")  # the conditioning did something
    assert not np.allclose(unconditioned.varm["X_regular"], memory.varm["X_regular"], atol=1e-3)


def test_temporary_files_go_to_dasks_temporary_directory(data, small_batches, tmp_path, monkeypatch):
    """The conditioned store of the randomized SVD is written under dask's ``temporary-directory``
    (where a user points scratch space on a cluster), and removed afterwards."""
    import tempfile

    import dask

    made = []
    real = tempfile.TemporaryDirectory

    def spy(*args, **kwargs):
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        sc.tl.embed(lazy_copy(data), "regular", n_components=4, **CONDITIONED)
    assert made == [str(tmp_path)] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("postprocess", ["l2", "pca_whiten"])
def test_neural_embeds_batch_by_batch_and_matches_in_memory(data, small_batches, monkeypatch, postprocess):
    from spatialclust.tl import NeuralEmbedder

    memory, lazy = data.copy(), lazy_copy(data)
    sc.tl.embed(memory, "neural", postprocess=postprocess, n_components=6, **NEURAL)
    seen = []
    original = NeuralEmbedder._batch_features
    monkeypatch.setattr(NeuralEmbedder, "_batch_features",
                        lambda self, images, **kw: seen.append(len(images)) or original(self, images, **kw))
    sc.tl.embed(lazy, "neural", postprocess=postprocess, n_components=6, **NEURAL)
    assert max(seen) == 8 and sum(seen) == data.n_vars  # never more than a batch of images at once
    np.testing.assert_allclose(lazy.varm["X_neural"], memory.varm["X_neural"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("abundance_views", [0.0, 0.5])
def test_simclr_trains_on_batches_loaded_from_the_chunks_and_matches_in_memory(data, small_batches, abundance_views):
    memory, lazy = data.copy(), lazy_copy(data)
    for adata in (memory, lazy):
        sc.tl.embed(adata, "simclr", **SIMCLR, abundance_views=abundance_views)
    np.testing.assert_allclose(lazy.varm["X_simclr"], memory.varm["X_simclr"], rtol=1e-3, atol=1e-5)


def test_thinned_check_on_a_sample_of_a_chunked_matrix(data, monkeypatch):
    """The check loads a seeded sample of images only: a chunked raw layer gives the in-memory result,
    and a run with a chunked X reports it (on a sample of THINNED_SAMPLE images)."""
    import spatialclust.pipeline._cluster as cluster_module

    lazy = data.copy()
    chunked(lazy, 200)
    assert sc.pp.is_dask(lazy.layers[K.RAW])
    full = sc.metrics.thinned_partner_check(data, embedder="regular", clusterer=None, n_images=10, seed=1)
    sampled = sc.metrics.thinned_partner_check(lazy, embedder="regular", clusterer=None, n_images=10, seed=1)
    assert full.n_images == sampled.n_images == 10
    assert sampled.recall == full.recall and sampled.recall[10] > sampled.chance_recall[10]
    with pytest.raises(ValueError, match="`n_images` must be an integer >= 2 or None"):
        sc.metrics.thinned_partner_check(lazy, clusterer=None, n_images=1)
    monkeypatch.setattr(cluster_module, "THINNED_SAMPLE", 12)
    monkeypatch.setattr(cluster_module, "THINNED_MIN_SAMPLE", 12)
    cfg = {"seed": 0, "preprocess": {"normalize": "tic", "winsorize": 95.0, "scale": True, "tissue_only": False}}
    embedders = [("X_regular", sc.tl.create_embedder("regular"))]
    partners = cluster_module.thinned_partners(lazy, embedders, cfg)["X_regular"]
    expected = sc.metrics.thinned_partner_check(data, embedder="regular", clusterer=None, n_images=12, refit=False,
                                                preprocess=cfg["preprocess"]).to_dict()
    assert partners == {k: v for k, v in expected.items() if k.startswith("partner_recall")}


def test_thinned_check_of_a_chunked_svd_embedding_uses_its_fitted_basis(data, monkeypatch):
    """A run's regular embedder with `n_components`, fitted on a chunked X, projects the check's sample
    and its partners on the singular vectors of the whole dataset (before, every `transform` computed
    a new SVD of the images it was given, and the recall fell to chance)."""
    import spatialclust.pipeline._cluster as cluster_module

    lazy = data.copy()
    chunked(lazy, 200)
    embedder = sc.tl.create_embedder("regular", n_components=6)
    sc.tl.embed(lazy, embedder, key_added="X_svd")
    assert embedder.components_.shape == (int(lazy.obs[K.TISSUE].sum()), 6)
    monkeypatch.setattr(cluster_module, "THINNED_SAMPLE", 12)
    monkeypatch.setattr(cluster_module, "THINNED_MIN_SAMPLE", 12)
    cfg = {"seed": 0, "preprocess": {"normalize": "tic", "winsorize": 95.0, "scale": True, "tissue_only": False}}
    svd = cluster_module.thinned_partners(lazy, [("X_svd", embedder)], cfg)["X_svd"]
    full = cluster_module.thinned_partners(lazy, [("X_regular", sc.tl.create_embedder("regular"))], cfg)["X_regular"]
    assert svd["partner_recall@10"] >= full["partner_recall@10"] - 0.1 and svd["partner_recall@1"] > 0.5


@pytest.mark.slow
def test_local_cluster_embeds_the_batches_with_the_model_sent_once(data, small_batches, monkeypatch):
    """Neural, SimCLR and conditioned regular embeddings of a chunked X on a 2-worker LocalCluster
    (processes): the embeddings of the local run; each network embedder is scattered to both workers once."""
    pytest.importorskip("distributed")
    from distributed import Client

    from spatialclust._compute import compute_context

    local = lazy_copy(data)
    sc.tl.embed(local, "neural", **NEURAL)
    sc.tl.embed(local, "simclr", **SIMCLR)
    sc.tl.embed(local, "regular", n_components=8, **CONDITIONED)  # conditioned once into a temporary store
    scattered = []
    original = Client.scatter
    monkeypatch.setattr(Client, "scatter", lambda self, data, **kw: scattered.append(kw) or original(self, data, **kw))
    distributed = lazy_copy(data)
    with compute_context({"scheduler": "local", "n_workers": 2, "threads_per_worker": 1}):
        sc.tl.embed(distributed, "neural", **NEURAL)
        sc.tl.embed(distributed, "simclr", **SIMCLR)
        sc.tl.embed(distributed, "regular", n_components=8, **CONDITIONED)  # conditioned on the workers at each pass
    assert len(scattered) == 2 and all(kw["broadcast"] for kw in scattered)  # one scatter per embedding
    np.testing.assert_allclose(distributed.varm["X_neural"], local.varm["X_neural"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(distributed.varm["X_simclr"], local.varm["X_simclr"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(distributed.varm["X_regular"], local.varm["X_regular"], rtol=1e-4, atol=1e-4)


def test_a_chunked_run_embeds_neural_and_reports_the_thinned_check(tmp_path):
    """`spatialclust run` with X in chunks of 128 pixels: the neural clusters and partner recall of the
    in-memory run (the check on all images here: fewer than its sample)."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from spatialclust.cli import app

    run = ["--set", "input.simulate={shape: [24, 24], n_patterns: 3, ions_per_pattern: 5, n_matrix_ions: 2}",
           "--set", "embedding=[{method: neural, params: {backbone: test_tiny, patch_size: 12, num_threads: 1}}]",
           "--set", "cluster=[{method: kmeans, params: {n_clusters: 3, n_init: 2}}]", "--set", "evaluate.n_boot=20",
           "--set", "report.figures=[]", "--set", "report.embedding_figures=[]", "--set", "report.thumbnails=false", "-q"]
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\n")
    runner = CliRunner()
    for name, extra in (("memory", []), ("chunked", ["--set", "compute.chunk_pixels=128"])):
        result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / name), *run, *extra])
        assert result.exit_code == 0, result.output
    expected, found = (pd.read_csv(tmp_path / name / "clusters.csv") for name in ("memory", "chunked"))
    np.testing.assert_array_equal(found["cluster_neural_kmeans"], expected["cluster_neural_kmeans"])
    recall = [json.loads((tmp_path / name / "metrics.json").read_text())["clusterings"]["cluster_neural_kmeans"]
              ["metrics"]["partner_recall@10"] for name in ("memory", "chunked")]
    assert recall[1] == pytest.approx(recall[0]) and 0 < recall[1] <= 1
