"""Chunked (dask) datasets: every step of the default pipeline streams and matches the in-memory path;
the `compute` section and a 2-worker LocalCluster give the clusters of the local run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust import _keys as K
from spatialclust._compute import check_compute, chunked
from spatialclust._config import ConfigError
from spatialclust.cli import app

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def data():
    return sc.datasets.simulate_msi(shape=(32, 32), n_patterns=3, ions_per_pattern=6, n_matrix_ions=3, seed=2)


def on_zarr(adata, tmp_path, chunks=(200, 7)):
    """``adata`` with X read lazily from a Zarr array of ``chunks`` (pixels x m/z)."""
    out = adata.copy()
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=adata.shape, chunks=chunks, dtype="float32")
    store[:] = np.asarray(adata.X, dtype=np.float32)
    out.X = da.from_zarr(str(tmp_path / "x.zarr"))
    return out


def test_preprocessing_streams_and_matches_in_memory(data, tmp_path):
    memory, lazy = data.copy(), on_zarr(data, tmp_path)
    del memory.obs[K.TISSUE], lazy.obs[K.TISSUE], memory.obs[K.TIC], lazy.obs[K.TIC]  # the mask from the matrix
    for adata in (memory, lazy):
        sc.pp.tissue_mask(adata)
        sc.pp.preprocess_ion_images(adata)
    assert sc.pp.is_dask(lazy.X) and sc.pp.is_dask(lazy.layers[K.RAW])
    np.testing.assert_array_equal(memory.obs[K.TISSUE], lazy.obs[K.TISSUE])
    assert list(memory.var_names) == list(lazy.var_names)
    np.testing.assert_allclose(lazy.X.compute(), memory.X, rtol=1e-5, atol=1e-6)
    assert sc.pp.preprocessing_steps(lazy) == sc.pp.preprocessing_steps(memory)


def test_chunked_statistics_never_hold_the_matrix(data, monkeypatch):
    """With a small chunk budget no task of the preprocessing computes more than a few column blocks."""
    from dask.callbacks import Callback

    import spatialclust.pp._matrix as matrix_module

    adata = sc.datasets.simulate_msi(seed=0)  # 4096 pixels x 140 m/z
    n_obs, n_vars = adata.shape
    monkeypatch.setattr(matrix_module, "CHUNK_ENTRIES", n_obs * 4)  # column blocks of 4 images
    adata.X = da.from_array(np.asarray(adata.X), chunks=(256, 16))
    largest = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 (dask's signature)
            largest.append(getattr(result, "nbytes", 0))

    with Sizes():
        sc.pp.preprocess_ion_images(adata)
    # nothing larger than a float64 block of 16 whole images (a quarter of the matrix) was ever computed
    assert 0 < max(largest) <= n_obs * 16 * 8 < n_obs * n_vars * 4 / 4


def test_regular_embedding_of_a_chunked_matrix(data, tmp_path):
    memory, lazy = data.copy(), on_zarr(data, tmp_path)
    for adata in (memory, lazy):
        sc.pp.preprocess_ion_images(adata)
        sc.tl.embed(adata, "regular")
        sc.tl.embed(adata, "regular", n_components=10, key_added="X_svd")
    np.testing.assert_allclose(lazy.varm["X_regular"], memory.varm["X_regular"], rtol=1e-5, atol=1e-6)
    assert memory.varm["X_svd"].shape == (data.n_vars if memory.n_vars == data.n_vars else memory.n_vars, 10)
    np.testing.assert_allclose(lazy.varm["X_svd"], memory.varm["X_svd"], rtol=1e-4, atol=1e-4)
    # the truncated SVD keeps the distances between images up to the discarded spectrum
    full = np.linalg.norm(memory.varm["X_regular"][:, None] - memory.varm["X_regular"][None], axis=-1)
    reduced = np.linalg.norm(memory.varm["X_svd"][:, None] - memory.varm["X_svd"][None], axis=-1)
    assert np.corrcoef(full.ravel(), reduced.ravel())[0, 1] > 0.99
    for adata in (memory, lazy):
        sc.tl.cluster(adata, "kmeans", use_rep="X_svd", n_clusters=3, random_state=0, key_added="k")
    np.testing.assert_array_equal(lazy.var["k"], memory.var["k"])


def test_regular_embedding_errors(data, monkeypatch):
    import spatialclust.tl._embed as embed_module

    adata = data.copy()
    sc.pp.preprocess_ion_images(adata)
    chunked(adata, 256)
    with pytest.raises(ValueError, match=r"`n_components` must lie in \[1, "):
        sc.tl.embed(adata, "regular", n_components=10_000)
    monkeypatch.setattr(embed_module, "DENSE_MAX_ENTRIES", 100)
    with pytest.raises(ValueError, match="set `n_components`"):
        sc.tl.embed(adata, "regular")


def test_isotopes_means_and_metrics_of_a_chunked_matrix(data):
    memory = data.copy()
    sc.pp.preprocess_ion_images(memory)
    sc.tl.embed(memory, "regular")
    sc.tl.cluster(memory, "kmeans", use_rep="X_regular", n_clusters=3, random_state=0, key_added="k")
    lazy = memory.copy()
    chunked(lazy, 200)
    mz = memory.var[K.MZ].to_numpy()
    pairs = sc.metrics.isotope_pairs(mz, sc.pp.feature_images(memory))
    assert len(pairs) > 0
    np.testing.assert_array_equal(sc.metrics.isotope_pairs(mz, lazy.X.T), pairs)
    (ids, means), (lazy_ids, lazy_means) = sc.pl.cluster_means(memory, "k"), sc.pl.cluster_means(lazy, "k")
    np.testing.assert_array_equal(lazy_ids, ids)
    np.testing.assert_allclose(lazy_means, means, atol=1e-6)
    np.testing.assert_allclose(sc.pl.mean_image_correlation(lazy, "k"), sc.pl.mean_image_correlation(memory, "k"),
                               atol=1e-9)
    np.testing.assert_allclose(sc.pl.mean_spectrum(lazy), sc.pl.mean_spectrum(memory), rtol=1e-5)
    expected, found = sc.metrics.evaluate_clustering(memory, "k"), sc.metrics.evaluate_clustering(lazy, "k")
    assert found["n_isotope_pairs"] == expected["n_isotope_pairs"] and found["rir"] == expected["rir"]
    np.testing.assert_allclose(found["dbi_euclidean"], expected["dbi_euclidean"], rtol=1e-5)


def test_compute_section_is_checked():
    assert check_compute({}) == {"scheduler": None, "n_workers": None, "threads_per_worker": None, "chunk_pixels": None}
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['workers'\] in `compute`"):
        check_compute({"workers": 2})
    with pytest.raises(ConfigError, match="`compute.scheduler` must be null, 'local' or a scheduler address"):
        check_compute({"scheduler": 8786})
    with pytest.raises(ConfigError, match="`compute.n_workers` must be a positive integer"):
        check_compute({"scheduler": "local", "n_workers": 0})
    with pytest.raises(ConfigError, match="sized where it is started"):
        check_compute({"scheduler": "tcp://host:8786", "n_workers": 2})


RUN = ["--set", "input.simulate={shape: [24, 24], n_patterns: 3, ions_per_pattern: 5, n_matrix_ions: 2}",
       "--set", "embedding=[regular]", "--set", "cluster=[{method: kmeans, params: {n_clusters: 3, n_init: 2}}]",
       "--set", "evaluate.n_boot=20", "--set", "report.figures=[cluster_means, spectrum]",
       "--set", "report.embedding_figures=[]", "--set", "report.max_thumbnails=2", "-q"]


@pytest.mark.slow
def test_local_cluster_gives_the_clusters_of_the_local_run(tmp_path):
    """`--scheduler local` with 2 worker processes, X in chunks of 128 pixels: the clusters, member
    correlations and metrics of the in-memory run."""
    runner = CliRunner()
    pytest.importorskip("distributed")
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\n")
    local = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "local"), *RUN])
    assert local.exit_code == 0, local.output
    cluster = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "cluster"), "--scheduler", "local",
                                  "--set", "compute.n_workers=2", "--set", "compute.threads_per_worker=1",
                                  "--set", "compute.chunk_pixels=128", *RUN])
    assert cluster.exit_code == 0, cluster.output
    expected, found = (pd.read_csv(tmp_path / name / "clusters.csv") for name in ("local", "cluster"))
    np.testing.assert_array_equal(found["cluster_regular_kmeans"], expected["cluster_regular_kmeans"])
    np.testing.assert_allclose(found["cluster_regular_kmeans_corr"], expected["cluster_regular_kmeans_corr"], atol=1e-4)
    resolved = (tmp_path / "cluster" / "config.yaml").read_text()
    assert "scheduler: local" in resolved and "chunk_pixels: 128" in resolved


def test_a_chunked_run_preprocesses_once_and_keeps_x_in_its_run_directory(tmp_path, monkeypatch):
    """X in chunks of 128 pixels: the preprocessing chain is computed once into `preprocessed.zarr`
    (the run's X, equal to the in-memory run's), results.h5ad holds no matrix, the clusters are those of
    the in-memory run, and the report can be rebuilt from the run directory alone."""
    import anndata as ad

    import spatialclust._compute as compute_module
    from spatialclust.report import write_run_report

    stored = []
    store_matrix = compute_module.store_matrix
    monkeypatch.setattr("spatialclust.pipeline._cluster.store_matrix",
                        lambda adata, path: stored.append(path) or store_matrix(adata, path))
    runner = CliRunner()
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\n")
    memory = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "memory"), *RUN])
    assert memory.exit_code == 0, memory.output
    assert not stored and not (tmp_path / "memory" / "preprocessed.zarr").exists()
    lazy = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "lazy"),
                               "--set", "compute.chunk_pixels=128", *RUN])
    assert lazy.exit_code == 0, lazy.output
    assert len(stored) == 1 and stored[0].name == "preprocessed.zarr"
    expected, found = (pd.read_csv(tmp_path / name / "clusters.csv") for name in ("memory", "lazy"))
    np.testing.assert_array_equal(found["cluster_regular_kmeans"], expected["cluster_regular_kmeans"])
    np.testing.assert_allclose(found["cluster_regular_kmeans_corr"], expected["cluster_regular_kmeans_corr"], atol=1e-4)
    in_memory, results = (ad.read_h5ad(tmp_path / name / "results.h5ad") for name in ("memory", "lazy"))
    assert results.X is None and not results.layers and results.n_vars == in_memory.n_vars
    matrix = zarr.open_array(str(tmp_path / "lazy" / "preprocessed.zarr"), mode="r")
    assert matrix.dtype == np.float32 and matrix.chunks == (min(4096, results.n_obs), min(64, results.n_vars))
    np.testing.assert_allclose(matrix[:], in_memory.X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results.varm["X_regular"], in_memory.varm["X_regular"], rtol=1e-5, atol=1e-6)
    assert "preprocessed.zarr" in (tmp_path / "lazy" / "run.json").read_text()
    (tmp_path / "lazy" / "report.html").unlink()
    write_run_report(tmp_path / "lazy")
    assert (tmp_path / "lazy" / "report.html").stat().st_size > 0


def test_chunked_passes_in_groups_of_chunks_give_the_same_results(data, tmp_path, monkeypatch):
    """With tiny budgets every chunked pass (column statistics, the write of the preprocessed X, the
    randomized SVD) runs as many small dask computes over a few chunks each; the results do not change."""
    import spatialclust._compute as compute_module
    import spatialclust.pp._matrix as matrix_module
    import spatialclust.tl._embed as embed_module

    memory = data.copy()
    sc.pp.preprocess_ion_images(memory)
    sc.tl.embed(memory, "regular", n_components=5, key_added="X_svd")
    lazy = on_zarr(data, tmp_path, chunks=(100, 3))
    for module in (sc.pp, matrix_module, embed_module):
        monkeypatch.setattr(module, "GROUP_CHUNK_ENTRIES", data.n_obs * 4)  # 4 columns / a few hundred pixels
    monkeypatch.setattr(compute_module, "MATRIX_CHUNKS", (128, 2))
    import dask

    computes, dask_compute = [], dask.compute
    monkeypatch.setattr(dask, "compute", lambda *a, **k: computes.append(1) or dask_compute(*a, **k))
    sc.pp.preprocess_ion_images(lazy)
    compute_module.store_matrix(lazy, tmp_path / "preprocessed.zarr")
    sc.tl.embed(lazy, "regular", n_components=5, key_added="X_svd")
    assert len(computes) > 10 and zarr.open_array(str(tmp_path / "preprocessed.zarr"), mode="r").chunks == (128, 2)
    np.testing.assert_allclose(lazy.X.compute(), memory.X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy.varm["X_svd"], memory.varm["X_svd"], rtol=1e-4, atol=1e-4)
    # chunks of every pixel of a few images (no block of whole spectra fits): two products instead
    images_chunked = da.from_array(np.asarray(memory.X), chunks=(-1, 3))
    np.testing.assert_allclose(embed_module._randomized_svd(images_chunked, 5, seed=0),
                               embed_module._randomized_svd(np.asarray(memory.X), 5, seed=0), rtol=1e-5, atol=1e-5)
    # the pixel-side singular vectors, kept from the last pass: the same on every chunk layout, and
    # images of the slide projected on them get the vectors of the chunked fit
    fitted = {name: sc.tl.create_embedder("regular", n_components=5) for name in ("memory", "lazy")}
    sc.tl.embed(memory, fitted["memory"], key_added="X_fitted")
    sc.tl.embed(lazy, fitted["lazy"], key_added="X_fitted")
    np.testing.assert_allclose(fitted["lazy"].components_, fitted["memory"].components_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed_module._randomized_svd(images_chunked, 5, seed=0, pixel_basis=True)[1],
                               embed_module._randomized_svd(np.asarray(memory.X), 5, seed=0, pixel_basis=True)[1],
                               rtol=1e-4, atol=1e-5)
    images = sc.pp.feature_images(memory)
    np.testing.assert_allclose(fitted["lazy"].transform(images, mask=sc.pp.tissue_mask_image(memory)),
                               lazy.varm["X_fitted"], rtol=1e-4, atol=1e-3)


def test_a_store_is_reopened_in_blocks_of_pixels_and_mz(tmp_path):
    """An imzML converted to a Zarr store: X re-opened in (pixels, m/z) blocks, preprocessed like the file in memory."""
    from spatialclust._compute import STORE_CHUNK_PIXELS

    source = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=5, n_matrix_ions=2, seed=1)
    path = tmp_path / "tiny.imzML"
    sc.io.write_imzml(source, path, mode="continuous")
    memory = sc.io.read_imzml(path)
    lazy = sc.io.read_imzml(path, store=tmp_path / "tiny.zarr", store_chunks=(64, 8))
    chunked(lazy, None)
    assert lazy.X.chunksize == (min(STORE_CHUNK_PIXELS, lazy.n_obs), 8)
    chunked(lazy, 128)  # 128 pixels x the store's 8 m/z
    assert lazy.X.chunks[0][0] == 128 and lazy.X.chunksize[1] == 8
    for adata in (memory, lazy):
        sc.pp.preprocess_ion_images(adata)
    np.testing.assert_allclose(lazy.X.compute(), memory.X, rtol=1e-5, atol=1e-6)


def test_report_thumbnails_are_bounded_whatever_the_slide_size():
    from spatialclust.report._cluster import THUMBNAIL_MAX_PX, thumbnail

    rng = np.random.default_rng(0)
    small = rng.random((32, 40)).astype(np.float32)
    mask = np.ones(small.shape, dtype=bool)
    mask[:4] = False
    np.testing.assert_array_equal(thumbnail(small, mask), np.where(mask, small, np.nan))  # small: as it was
    slide = rng.random((700, 300))
    tissue = np.zeros(slide.shape, dtype=bool)
    tissue[:, :147] = True
    thumb = thumbnail(slide, tissue)
    factor = -(-700 // THUMBNAIL_MAX_PX)  # 6: blocks of 6 x 6 pixels
    assert thumb.shape == (-(-700 // factor), -(-300 // factor)) and max(thumb.shape) <= THUMBNAIL_MAX_PX
    np.testing.assert_allclose(thumb[0, 0], slide[:6, :6].mean())
    np.testing.assert_allclose(thumb[0, 24], slide[:6, 144:147].mean())  # a block half on tissue: its tissue mean
    assert np.isnan(thumb[:, 25:]).all() and np.isfinite(thumb[:, :25]).all()
    assert np.isfinite(thumb[-1, 0])  # the last block row is partial (700 = 116 x 6 + 4)
