"""The default `spatialclust run` on files written by other software and on tiny data (issue 13, items 7-9).

The imzML files are written with pyimzML's own ImzMLWriter (not ours): continuous and processed,
finely binned so that most bins hold a peak in a few spectra only, on 10 pixels. Every run either
succeeds or fails with one clear line before any expensive work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spatialclust.cli import app
from spatialclust.pipeline import default_config

runner = CliRunner()
#: The paper's pipeline (the default before the defaults followed the leaderboard).
PAPER = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "paper_defaults.yaml"

#: The default regular embedding (the conditioned image), as the packaged configuration gives it.
DEFAULT_REGULAR = json.dumps(default_config()["embedding"][0])
#: The default pipeline with a cheap report and a tiny random-weight backbone for `neural`.
LIGHT = ["--set", f"embedding=[{DEFAULT_REGULAR}, {{method: neural, params: {{backbone: test_tiny, pretrained: false}}}}]",
         "--set", "evaluate.n_boot=20", "--set", "report.figures=[cluster_means]",
         "--set", "report.thumbnails=false", "--set", "report.embedding_figures=[]", "-q"]


def write_imzml(path, *, mode: str, shape=(2, 5), n_mz: int = 400, n_dense: int = 5, sparse: float = 0.1, seed: int = 0):
    """A finely binned MSI file of ``shape`` pixels, written with pyimzML: ``n_dense`` ions in every
    spectrum, and ``n_mz - n_dense`` sparse peaks, each in a fraction ``sparse`` of the spectra."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    mz = np.linspace(400.0, 420.0, n_mz)
    with ImzMLWriter(str(path), mode=mode, mz_dtype=np.float64, intensity_dtype=np.float32) as writer:
        for y in range(shape[0]):
            for x in range(shape[1]):
                intensity = np.where(rng.random(n_mz) < sparse, rng.gamma(2.0, 100.0, n_mz), 0.0).astype(np.float32)
                intensity[:n_dense] = rng.gamma(5.0, 100.0, min(n_dense, n_mz)) * (1 + x)
                if mode == "processed":  # centroided: only the peaks, at slightly shifted m/z
                    keep = intensity > 0
                    writer.addSpectrum(mz[keep] + rng.normal(0.0, 1e-4, keep.sum()), intensity[keep], (x + 1, y + 1))
                else:
                    writer.addSpectrum(mz, intensity, (x + 1, y + 1))
    return path


def _run(path, out, *args):
    return runner.invoke(app, ["run", str(path), "-o", str(out), *args])


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("mode, shape, binning", [
    ("continuous", (10, 10), []),
    # item 8: two keys of the free-form `input.read` section on the command line
    ("processed", (2, 5), ["--set", "input.read.bin_width=0.05", "--set", "input.read.bin_unit=Da"]),
])
def test_default_pipeline_on_finely_binned_imzml(tmp_path, mode, shape, binning):
    """item 7: most bins have signal in < 5 % of the pixels (or only off the tissue); the run used to
    stop in UMAP ("X has all-zero images"). Now the sparse images are kept (winsorised at the
    percentile of their non-zero pixels), those empty on the tissue are dropped, and no embedding
    row is all zero."""
    import anndata as ad

    path = write_imzml(tmp_path / f"{mode}.imzML", mode=mode, shape=shape, sparse=0.03 if shape[0] > 2 else 0.1)
    out = tmp_path / "run"
    result = _run(path, out, *binning, *LIGHT)
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(out / "results.h5ad")
    assert adata.n_obs == shape[0] * shape[1] and adata.n_vars > 100
    for key in ("X_regular", "X_neural"):
        assert (np.abs(adata.varm[key]).sum(axis=1) > 0).all()
    steps = [adata.uns["preprocessing"][k] for k in sorted(adata.uns["preprocessing"], key=int)]
    assert [s["step"] for s in steps][-3:] == ["winsorize", "scale_images", "remove_empty_features"]
    if mode == "continuous":  # 100 pixels: a peak in 3 of them is below the 95th percentile
        assert steps[-3]["params"]["n_sparse"] > 100
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["clusterings"]) == {"cluster_regular_leiden", "cluster_neural_leiden",
                                           "cluster_regular_umap_dbscan", "cluster_neural_umap_dbscan"}
    # the default regular embedding is the conditioned image (the best-measured representation)
    params = adata.uns["X_regular"]["params"]
    assert (params["denoise"], params["clip_percentile"], params["contrast"]) == ("gaussian", 99, "minmax")


@pytest.mark.slow
def test_literal_default_run_on_a_10_pixel_imzml(tmp_path):
    """`spatialclust run FILE` with nothing else: 2 x 5 px images are below the pretrained backbone's
    minimum input even after the default 4x up-sampling; the run up-samples further and says so."""
    path = write_imzml(tmp_path / "tiny.imzML", mode="continuous")
    out = tmp_path / "run"
    result = _run(path, out)
    assert result.exit_code == 0, result.output
    log = (out / "run.log").read_text()
    assert "smaller than the backbone's minimum input of 32 px" in log and (out / "report.html").is_file()


def test_processed_file_without_binning_fails_in_one_line(tmp_path):
    path = write_imzml(tmp_path / "processed.imzML", mode="processed")
    assert "bin_width" in _one_line_error(_run(path, tmp_path / "run", "-q"))
    assert not (tmp_path / "run").exists()


def test_single_ion_image_fails_in_one_line(tmp_path):
    path = write_imzml(tmp_path / "one.imzML", mode="continuous", n_mz=1, n_dense=1)
    line = _one_line_error(_run(path, tmp_path / "run", "-q"))
    assert "holds 1 feature image(s); clustering needs at least 2" in line


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_feature_names_fail_in_one_line(tmp_path):
    """An .h5ad whose var_names repeat ran, with two rows of the same name in clusters.csv."""
    import spatialclust as sc

    adata = sc.datasets.simulate_msi(shape=(8, 8), n_patterns=2, ions_per_pattern=2, n_matrix_ions=1, seed=0)
    adata.var_names = ["dup", "dup", *adata.var_names[2:]]
    adata.write_h5ad(tmp_path / "dup.h5ad")
    line = _one_line_error(_run(tmp_path / "dup.h5ad", tmp_path / "run", "-q"))
    assert "dup.h5ad' repeat 1 name(s) (e.g. ['dup']); make them unique first" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.h5ad"]


def test_constant_images_fail_in_one_line(tmp_path):
    import spatialclust as sc

    adata = sc.datasets.simulate_msi(shape=(8, 8), n_patterns=2, ions_per_pattern=2, n_matrix_ions=1, seed=0)
    adata.X = np.ones(adata.shape, dtype=np.float32)
    adata.write_h5ad(tmp_path / "flat.h5ad")
    line = _one_line_error(_run(tmp_path / "flat.h5ad", tmp_path / "run", "-q"))
    assert "Every feature image is empty or constant: nothing is left to preprocess." in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.h5ad"]


def test_images_removed_by_preprocessing_are_reported(tmp_path):
    """A very sparse file: most images are empty on the tissue; the run says how many preprocessing removed."""
    import spatialclust as sc

    adata = sc.datasets.simulate_msi(shape=(12, 12), n_patterns=2, ions_per_pattern=3, n_matrix_ions=1, seed=0)
    X = np.asarray(adata.X, dtype=np.float32).copy()
    X[:, 2:] = 0  # only the first two ion images keep a signal
    adata.X = X
    adata.write_h5ad(tmp_path / "sparse.h5ad")
    result = _run(tmp_path / "sparse.h5ad", tmp_path / "run", "-q")
    assert "needs at least 3 images; the data have 2" in _one_line_error(result)
    assert f"Preprocessing removed {adata.n_vars - 2} of the {adata.n_vars} feature" in " ".join(result.output.split())


def test_more_clusters_than_images_fails_before_any_embedding(tmp_path, monkeypatch):
    """item 9: 10 ion images and the paper's k-means with 20 clusters (the default before issue 12):
    no sensible adaptation, so one clear error, before the first embedding is computed."""
    import spatialclust as sc

    path = write_imzml(tmp_path / "ten.imzML", mode="continuous", n_mz=10, n_dense=10)

    def no_embedding(*args, **kwargs):
        raise AssertionError("an embedding was computed before the plan was checked")

    monkeypatch.setattr(sc.tl, "embed", no_embedding)
    line = _one_line_error(_run(path, tmp_path / "run", "--config", str(PAPER), "-q"))
    assert "`cluster_regular_kmeans` (kmeans): `n_clusters`=20 is more than the 10 images" in line
    assert not (tmp_path / "run").exists()


#: 10 ion images of 8 x 8 px: three spatial patterns plus noise.
@pytest.fixture(scope="module")
def ten_images(tmp_path_factory):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:8, :8]
    patterns = [xx < 4, yy < 4, (xx + yy) % 2 == 0]
    images = np.stack([patterns[i % 3] * rng.gamma(5.0, 10.0) + rng.gamma(2.0, 1.0, (8, 8)) for i in range(10)])
    path = tmp_path_factory.mktemp("tiny") / "ten.npz"
    np.savez(path, images=images.astype(np.float32), mz=400.0 + 1.5 * np.arange(10))
    return path


@pytest.mark.parametrize("clusterer", ["umap_dbscan", "hdbscan", "spectral", "leiden",
                                       "{method: kmeans, params: {n_clusters: auto}}",
                                       "{method: smm, params: {n_clusters: auto}}"])
def test_every_clusterer_runs_on_ten_images(ten_images, tmp_path, clusterer):
    """item 9: neighbourhood sizes above what 10 images hold (UMAP's 15, the kNN graphs' 10, DBSCAN's
    6) are adapted with a warning in the log. (kmeans and smm with their fixed 20 clusters: below.)"""
    import spatialclust as sc

    out = tmp_path / "run"
    if clusterer == "hdbscan":  # min_cluster_size=5 fits, but no group of 5 images is dense: said, not hidden
        with pytest.warns(sc.tl.DegenerateDataWarning, match="all 10 images noise"):
            result = _run(ten_images, out, "--set", f"cluster=[{clusterer}]", *LIGHT, "--set", "embedding=[regular]")
    else:
        result = _run(ten_images, out, "--set", f"cluster=[{clusterer}]", *LIGHT, "--set", "embedding=[regular]")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["clusterings"]) == 1 and metrics["n_images"] == 10
    if clusterer in ("umap_dbscan", "spectral", "leiden") or "auto" in clusterer:
        assert "does not fit 10 images; using n_neighbors=4" in (out / "run.log").read_text()


@pytest.mark.parametrize("clusterer", ["kmeans", "smm"])
def test_fixed_cluster_numbers_above_the_images_fail_before_work(ten_images, tmp_path, clusterer):
    line = _one_line_error(_run(ten_images, tmp_path / "run", "--set", f"cluster=[{clusterer}]", "-q"))
    assert f"({clusterer}): `n_clusters`=20 is more than the 10 images" in line


@pytest.mark.parametrize("embedding", [
    "regular",
    "{method: neural, params: {backbone: test_tiny, pretrained: false}}",
    "{method: simclr, params: {backbone: test_tiny, pretrained: false, epochs: 2, batch_size: 8}}",
    "{method: simclr, params: {backbone: test_tiny, pretrained: false, epochs: 2, batch_size: 8, self_label: true}}",
    "{method: darlc, params: {pretrain_epochs: 1, cluster_epochs: 1, gat_epochs: 2, augmentation: gaussian}}",
])
def test_every_embedder_runs_on_ten_tiny_images(ten_images, tmp_path, embedding):
    import spatialclust as sc

    out = tmp_path / "run"
    args = ["--set", f"embedding=[{embedding}]", "--set", "cluster=[{method: kmeans, params: {n_clusters: 3}}]", *LIGHT[2:]]
    result = _run(ten_images, out, *args)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()


def test_neural_embedder_up_samples_images_below_the_backbone_minimum(caplog):
    """item 9: 1 x 2 px images are below `test_tiny`'s 8 px minimum even at the default 4x; the
    default `max_upsample=None` goes as far as needed (warned), an explicit one is respected."""
    from spatialclust.tl import NeuralEmbedder

    images = np.random.default_rng(0).random((3, 1, 2)).astype(np.float32)
    vectors = NeuralEmbedder("test_tiny", pretrained=False, pooling="max", postprocess="l2").fit_transform(images)
    assert vectors.shape == (3, 16) and np.isfinite(vectors).all()
    assert "up-sampling them by 8 instead" in caplog.text
    with pytest.raises(ValueError, match="even after up-sampling by `max_upsample`=4"):
        NeuralEmbedder("test_tiny", pretrained=False, pooling="max", max_upsample=4).fit_transform(images)
