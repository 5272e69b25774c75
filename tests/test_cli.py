"""The `spatialclust` command end to end: simulated data -> imzML on disk -> run -> run directory."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust.cli import app

runner = CliRunner()

#: One embedding x one clusterer, every figure type; tiny and fast.
FAST = ["--set", "embedding=[regular]", "--set", "cluster=[{method: kmeans, params: {n_clusters: 4, n_init: 2}}]",
        "--set", "evaluate.n_boot=50", "--set", "report.dpi=50", "--set", "report.max_thumbnails=3", "-q"]


@pytest.fixture(scope="module")
def imzml(tmp_path_factory):
    adata = sc.datasets.simulate_msi(shape=(24, 24), n_patterns=3, ions_per_pattern=5, n_matrix_ions=2, seed=1)
    path = tmp_path_factory.mktemp("data") / "tiny.imzML"
    sc.io.write_imzml(adata, path, mode="continuous")
    return path


def test_end_to_end_imzml_to_report(imzml, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(imzml), "--output", str(out), "--seed", "3", *FAST])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"spatialclust run: the report will be written to {(out / 'report.html').resolve()}"

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["input"]["path"] == str(imzml) and config["seed"] == 3
    assert config["cluster"] == [{"method": "kmeans", "params": {"n_clusters": 4, "n_init": 2}, "key": None, "embeddings": None}]
    assert "Reading" in (out / "run.log").read_text()

    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == [f"cluster_regular_kmeans_{name}.png" for name in
                       sorted(["cluster_means", "spectrum", "embedding", "rgb_composite", "members"])]
    assert all((out / "figures" / name).stat().st_size > 1000 for name in figures)

    clusters = pd.read_csv(out / "clusters.csv")
    assert list(clusters.columns) == ["feature", "mz", "cluster_regular_kmeans", "cluster_regular_kmeans_corr"]
    assert len(clusters) == 24 and clusters["cluster_regular_kmeans"].nunique() == 4
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison.loc[0, ["dataset", "clustering", "images", "clusters"]].tolist() == ["tiny.imzML", "k-means", "regular", 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "tiny.imzML" and metrics["grid"] == [24, 24]

    html = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5 + 4 * (1 + 3)  # 5 figures + per cluster: its mean and 3 member thumbnails
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "Comparison of pipelines" in html and "k-means" in html


def test_run_from_config_file(imzml, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"input": {"path": str(imzml), "name": "bladder"},
                                      "report": {"figures": ["cluster_means"], "thumbnails": False}}))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out / "comparison.csv")["dataset"].tolist() == ["bladder"]
    assert [p.name for p in (out / "figures").iterdir()] == ["cluster_regular_kmeans_cluster_means.png"]

    both = runner.invoke(app, ["run", str(config), "--config", str(config), "-o", str(tmp_path / "x")])
    assert both.exit_code == 1 and "either as the argument" in both.output


def test_unknown_config_key(imzml, tmp_path):
    result = runner.invoke(app, ["run", str(imzml), "-o", str(tmp_path / "run"), "--set", "preprocess.winsorise=90"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: Unknown configuration key `preprocess.winsorise`. Valid keys here are: `normalize`, "
        "`remove_empty`, `scale`, `tissue_mask`, `tissue_only`, `winsorize`."
    )
    bad_method = runner.invoke(app, ["run", str(imzml), "-o", str(tmp_path / "run"), "--set", "embedding=[pca]"])
    assert bad_method.exit_code == 1 and "Invalid option `pca` for `embedding[0].method`" in bad_method.output
    missing = runner.invoke(app, ["run", str(tmp_path / "none.imzML"), "-o", str(tmp_path / "run")])
    assert missing.exit_code == 1 and "none.imzML' does not exist" in missing.output
    assert not any(tmp_path.iterdir())


def test_existing_run_refused_without_overwrite(imzml, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")
    foreign = runner.invoke(app, ["run", str(imzml), "-o", str(out), *FAST])
    assert foreign.exit_code == 1 and "already holds other files ('config.yaml')" in foreign.output
    (out / "run.json").write_text(json.dumps({"marker": "spatialclust run directory", "status": "complete",
                                             "files": ["config.yaml", "run.json"]}))
    result = runner.invoke(app, ["run", str(imzml), "-o", str(out), *FAST])
    assert result.exit_code == 1
    assert "already holds a different run" in result.output and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.json"]


def test_failed_run_leaves_no_directory(imzml, tmp_path):
    # the reader rejects an m/z range outside the data: the run fails after the output check
    result = runner.invoke(app, ["run", str(imzml), "-o", str(tmp_path / "run"), *FAST,
                                 "--set", "input.read={mz_range: [5000, 6000]}"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1
    assert not any(tmp_path.iterdir())


def test_demo_announces_report_first(tmp_path, monkeypatch):
    calls = {}

    def fake_run_pipeline(config, output, *, overwrite, command):
        calls.update(config=config, output=output, overwrite=overwrite, command=command)
        output.mkdir()
        (output / "report.html").write_text("<html></html>")
        return output

    monkeypatch.setattr("spatialclust.pipeline.run_pipeline", fake_run_pipeline)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "--seed", "5", "-q"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "spatialclust_demo" / "report.html").resolve()
    assert result.output.splitlines()[0] == f"spatialclust demo: the report will be written to {report}"
    assert calls["command"] == "demo" and calls["config"]["seed"] == 5 and calls["config"]["input"]["path"] is None
    assert [e["method"] for e in calls["config"]["embedding"]] == ["regular", "neural"]
    assert [c["method"] for c in calls["config"]["cluster"]] == ["leiden", "umap_dbscan"]


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == f"spatialclust {sc.__version__}"


def test_python_m_spatialclust_is_the_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "spatialclust", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"spatialclust {sc.__version__}", result.stderr


def test_reader_options_without_a_file_are_refused(tmp_path):
    """`--set input.read.*` with no input would be ignored by the simulator: one line, nothing written."""
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 0\n")  # no input: the simulator
    result = runner.invoke(app, ["run", str(config), "-o", str(tmp_path / "run"), *FAST, "--set", "input.read.bin_width=5"])
    assert result.exit_code == 1 and "`input.read` (['bin_width'])" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.yaml"]
