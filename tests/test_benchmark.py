"""``spatialclust benchmark``: every embedder x clusterer on a suite, leaderboard CSV + HTML, end to end on tiny data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

import spatialclust as sc  # noqa: E402
from spatialclust._config import ConfigError  # noqa: E402
from spatialclust.pipeline import run_benchmark  # noqa: E402
from spatialclust.pipeline._benchmark import QUICK_SIMULATE as QUICK  # noqa: E402
from spatialclust.pipeline._benchmark import PeakMemory, benchmark_plan, parse_method_params  # noqa: E402

TINY_SIMCLR = {"simclr": {"backbone": "test_tiny", "image_size": None, "batch_size": 8, "device": "cpu",
                          "self_label_params": {"batch_size": 8, "device": "cpu"}}}


def test_benchmark_writes_leaderboard(tmp_path):
    out = tmp_path / "bench"
    run_benchmark(["simulated:1"], out, embedders=["simclr"], clusterers=["kmeans", "spectral"], params=TINY_SIMCLR, quick=True)
    board = pd.read_csv(out / "leaderboard.csv")
    # the raw-image baseline is always included; SimCLR adds its self-labeling clusters ("own")
    assert set(zip(board["embedder"], board["clusterer"])) == {
        ("regular", "kmeans"), ("regular", "spectral"), ("simclr", "kmeans"), ("simclr", "spectral"), ("simclr", "own")}
    assert (board["status"] == "ok").all(), board["status"].tolist()
    assert (board["dataset"] == "simulated:1").all()
    from spatialclust.pipeline._benchmark import QUICK_SIMULATE

    n_true = sc.datasets.simulate_msi(seed=1, **QUICK_SIMULATE).var["pattern"].nunique()
    assert (board["n_clusters"] == n_true).all()
    for column in ("accuracy", "nmi", "ari", "isotopic_recall"):
        assert board[column].between(0, 1).all(), column
    assert (board["n_isotope_pairs"] > 0).all() and board["rir"].notna().all()
    assert (board["seconds"] >= board["embed_s"]).all() and (board["embed_peak_mb"] >= 0).all()
    regular = board[(board["embedder"] == "regular") & (board["clusterer"] == "kmeans")].iloc[0]
    assert regular["accuracy"] > 1 / n_true  # better than chance
    assert board["partner_recall@10"].between(0, 1).all() and board["partner_recall@1"].notna().all()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 5 and (summary["n_datasets"] == 1).all()
    assert summary["accuracy"].is_monotonic_decreasing
    html = (out / "leaderboard.html").read_text()
    assert "Leaderboard: simulated" in html and "simclr" in html
    assert html.count("<figure>") == 1 and "grey bars are the raw-image baseline" in html  # the ranking as a chart
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "run.log", "run.json", "leaderboard.csv", "summary.csv"}
    with pytest.raises(FileExistsError, match="already holds"):
        run_benchmark(["simulated:1"], out, quick=True, embedders=["regular"], clusterers=["kmeans"])


def test_plan_is_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="Invalid option `nope` for `embedders`"):
        benchmark_plan(["simulated"], embedders=["nope"])
    with pytest.raises(ValueError, match="Invalid option `nope` for `clusterers`"):
        benchmark_plan(["simulated"], clusterers=["nope"])
    with pytest.raises(ConfigError, match="The embedder `simclr` does not take the parameter"):
        benchmark_plan(["simulated"], embedders=["simclr"], params={"simclr": {"epoch": 3}})
    with pytest.raises(ConfigError, match="not among the selected methods"):
        benchmark_plan(["simulated"], embedders=["regular"], params={"simclr": {"epochs": 3}})
    with pytest.raises(FileNotFoundError, match="is neither a file"):
        benchmark_plan([str(tmp_path / "missing.imzML")])
    with pytest.raises(ValueError, match="seed after `simulated:` must be an integer"):
        benchmark_plan(["simulated:x"])
    with pytest.raises(ValueError, match="`budget` must be a positive number"):
        benchmark_plan(["simulated"], budget=0)
    cfg = benchmark_plan(None, embedders=["regular"], quick=True)
    assert [d["name"] for d in cfg["datasets"]] == ["simulated:0"]
    assert benchmark_plan(None, embedders=["regular"])["datasets"][-1]["name"] == "simulated:4"
    assert parse_method_params(["simclr.epochs=3", "simclr.self_label_params.epochs=2", "kmeans.n_init=5"]) == {
        "simclr": {"epochs": 3, "self_label_params": {"epochs": 2}}, "kmeans": {"n_init": 5}}
    with pytest.raises(ConfigError, match="must look like `method.param=value`"):
        parse_method_params(["epochs=3"])
    # one method under two parameter sets: LABEL=METHOD, parameters under the label
    cfg = benchmark_plan(["simulated:0"], embedders=["conditioned=regular"], params={"conditioned": {"denoise": "gaussian"}},
                         simulate={"n_ions": 30})
    assert cfg["embedders"] == ["regular", "conditioned"] and cfg["embedder_methods"] == {"regular": "regular", "conditioned": "regular"}
    assert cfg["params"]["conditioned"] == {"denoise": "gaussian"} and cfg["params"]["regular"] == {}
    assert cfg["datasets"][0]["simulate"] == {"realism": "real", "n_ions": 30}
    with pytest.raises(ValueError, match="Invalid option `nope` for `embedders`"):
        benchmark_plan(["simulated"], embedders=["mine=nope"])
    with pytest.raises(ValueError, match="`regular` is the raw-image baseline"):
        benchmark_plan(["simulated"], embedders=["regular=neural"])
    with pytest.raises(ConfigError, match="The embedder `conditioned` does not take the parameter"):
        benchmark_plan(["simulated"], embedders=["conditioned=regular"], params={"conditioned": {"epochs": 3}})
    for bad in ({"seed": 1}, {"n_ion": 30}):
        with pytest.raises(ConfigError, match="`simulate` takes parameters of `sc.datasets.simulate_msi`"):
            benchmark_plan(["simulated"], simulate=bad)


def test_one_embedder_under_two_configurations(tmp_path):
    conditioning = {"denoise": "gaussian", "clip_percentile": 99, "contrast": "minmax"}
    run_benchmark(["simulated:0"], tmp_path / "b", embedders=["regular", "conditioned=regular"], clusterers=["kmeans"],
                  params={"conditioned": conditioning}, quick=True, simulate={"n_ions": 30})
    board = pd.read_csv(tmp_path / "b" / "leaderboard.csv").set_index("embedder")
    assert list(board.index) == ["regular", "conditioned"] and (board["status"] == "ok").all()
    assert board.loc["regular", "n_images"] == sc.datasets.simulate_msi(seed=0, **{**QUICK, "n_ions": 30}).n_vars
    # the conditioned images are another representation: other partner ranks (same thinned partners)
    assert board.loc["regular", "partner_recall@1"] != board.loc["conditioned", "partner_recall@1"]


def test_budget_skips_the_remaining_embedders(tmp_path):
    run_benchmark(["simulated:0"], tmp_path / "b", embedders=["regular", "simclr"], clusterers=["kmeans"],
                  params=TINY_SIMCLR, quick=True, budget=1e-6)
    board = pd.read_csv(tmp_path / "b" / "leaderboard.csv")
    assert board["status"].tolist() == ["skipped: budget spent", "skipped: budget spent"]


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        block.sum()
        time.sleep(0.2)  # held for several sampling intervals (a stage lasts seconds; 20 ms sampling)
        del block
    assert memory.peak_mb is not None and memory.peak_mb > 40


def test_cli_benchmark_on_a_user_file(tmp_path):
    from typer.testing import CliRunner

    from spatialclust.cli import app

    adata = sc.datasets.simulate_msi(seed=2, shape=(24, 24), n_patterns=3, ions_per_pattern=4)
    del adata.var["pattern"]  # a user's file: no ground truth
    path = tmp_path / "mine.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["benchmark", str(path), "--embedders", "regular", "--clusterers", "kmeans,hdbscan",
                                      "--n-clusters", "4", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["dataset"].tolist() == ["mine.h5ad", "mine.h5ad"] and board["accuracy"].isna().all()
    assert board.loc[board["clusterer"] == "kmeans", "n_clusters_found"].item() == 4
    assert board["isotopic_recall"].notna().all()
    result = CliRunner().invoke(app, ["benchmark", "simulated", "--embedders", "nope", "-o", str(tmp_path / "x"), "-q"])
    assert result.exit_code == 1 and "Invalid option `nope` for `embedders`" in result.output


def test_merge_runs_of_one_seed_each(tmp_path):
    from typer.testing import CliRunner

    from spatialclust.cli import app
    from spatialclust.pipeline import merge_benchmarks

    conditioned = {"conditioned": {"denoise": "gaussian"}}
    for seed, embedders in ((0, ["regular", "conditioned=regular"]), (1, ["regular"])):
        run_benchmark([f"simulated:{seed}"], tmp_path / f"s{seed}", embedders=embedders, clusterers=["kmeans"],
                      params=conditioned if seed == 0 else None, quick=True)
    run_benchmark(["simulated:1"], tmp_path / "other", clusterers=["kmeans"], embedders=["regular"], quick=True,
                  params={"kmeans": {"n_init": 2}})
    result = CliRunner().invoke(app, ["benchmark", "--merge", str(tmp_path / "s0"), str(tmp_path / "s1"),
                                      "-o", str(tmp_path / "merged"), "-q"])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "merged" / "leaderboard.csv")
    assert board["dataset"].tolist() == ["simulated:0", "simulated:0", "simulated:1"]
    summary = pd.read_csv(tmp_path / "merged" / "summary.csv").set_index("embedder")
    regular = board[board["embedder"] == "regular"]["accuracy"]
    assert summary.loc["regular", "n_datasets"] == 2 and summary.loc["conditioned", "n_datasets"] == 1
    assert summary.loc["regular", "accuracy"] == pytest.approx(regular.mean())
    assert summary.loc["regular", "accuracy_sd"] == pytest.approx(regular.std())
    assert "merged_from" in (tmp_path / "merged" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="more than one of the runs"):
        merge_benchmarks([tmp_path / "s1", tmp_path / "s1"], tmp_path / "twice")
    with pytest.raises(ConfigError, match="give `kmeans` different parameters"):
        merge_benchmarks([tmp_path / "s0", tmp_path / "other"], tmp_path / "mixed")
    with pytest.raises(ValueError, match="not a finished `spatialclust benchmark` run directory"):
        merge_benchmarks([tmp_path / "s0", tmp_path], tmp_path / "none")
    result = CliRunner().invoke(app, ["benchmark", "--merge", str(tmp_path / "s0"), "--quick", "-o", str(tmp_path / "q"), "-q"])
    assert result.exit_code == 1 and "takes no --quick" in result.output
