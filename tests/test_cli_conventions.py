"""CLI conventions: --version, `config show` (commented defaults that parse back), --help, `datasets`."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

import spatialclust as sc
from spatialclust._config import packaged_defaults
from spatialclust.cli import COMMON_SET, CONFIG_RESOURCES, app
from spatialclust.pipeline import load_config

runner = CliRunner()


def test_version_option_and_command():
    for args in (["--version"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output.strip() == f"spatialclust {sc.__version__}"


@pytest.mark.parametrize("command", sorted(CONFIG_RESOURCES))
def test_config_show_prints_the_commented_defaults(command):
    result = runner.invoke(app, ["config", "show", command])
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith("#") and result.output.count("#") > 20  # the comments are kept
    assert yaml.safe_load(result.output) == packaged_defaults(CONFIG_RESOURCES[command])


def test_config_show_output_is_a_valid_user_config(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(runner.invoke(app, ["config", "show"]).output)
    assert load_config(path) == load_config()


def test_config_show_rejects_unknown_commands():
    result = runner.invoke(app, ["config", "show", "cluster"])
    assert result.exit_code == 1 and "Valid options are: run, cells, translate" in result.output


def test_help_shows_output_defaults_and_common_set_keys():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for needle in ("spatialclust_run", "spatialclust_demo", "input.read.bin_width=5", "input.read.bin_unit=ppm",
                   "preprocess.winsorize=99", "embedding=[{method: neural}]", "config show", "datasets"):
        assert needle in text, needle


def test_help_set_examples_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "he.tif").write_bytes(b"")  # report.histology must name an existing file
    config = load_config(overrides=[item.strip("'") for item in COMMON_SET])
    assert config["input"]["read"]["bin_width"] == 5 and config["input"]["dataset"] == "mouse_bladder"
    assert config["cluster"][0]["params"] == {"n_clusters": 8} and config["preprocess"]["winsorize"] == 99


def test_datasets_list_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv(sc.datasets.DATA_ENV, str(tmp_path))
    listing = runner.invoke(app, ["datasets", "list"])
    assert listing.exit_code == 0 and str(tmp_path) in listing.output
    assert all(name in listing.output for name in sc.datasets.public_datasets())
    folder = tmp_path / "lung_godfrey"
    folder.mkdir()
    (folder / "st.h5ad").write_bytes(b"converted before")  # already converted: printed without a download
    (folder / "msi.h5ad").write_bytes(b"converted before")
    result = runner.invoke(app, ["datasets", "path", "lung_godfrey", "st.h5ad"])
    assert result.exit_code == 0 and result.output.strip() == str(folder / "st.h5ad")
    bad = runner.invoke(app, ["datasets", "path", "lung"])
    assert bad.exit_code == 1 and "Valid options are: mouse_bladder" in bad.output


def test_overrides_of_a_free_form_mapping_add_up(tmp_path):
    from spatialclust._config import ConfigError

    path = tmp_path / "my.yaml"
    path.write_text("input:\n  read:\n    bin_width: 5\n")
    config = load_config(path, overrides=["input.read.bin_unit=Da", "input.read.mz_range=[400, 1000]"])
    assert config["input"]["read"] == {"bin_width": 5, "bin_unit": "Da", "mz_range": [400, 1000]}
    with pytest.raises(ConfigError, match="Unknown configuration key `input.reed`"):
        load_config(overrides=["input.reed.bin_width=5"])


@pytest.mark.parametrize("args", [
    ["run", "data.npz"], ["train"], ["cells", "run"], ["translate", "train"], ["translate", "evaluate"],
    ["translate", "predict", "model", "st.h5ad"],
])
def test_every_config_command_reports_a_bad_set_key_in_one_line(args, tmp_path):
    """issue 16: one shared wrapper: the config is loaded before any work and an error is one line."""
    out = tmp_path / "out"
    result = runner.invoke(app, [*args, "-o", str(out), "--set", "nope.key=1", "-q"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Unknown configuration key `nope`. Valid keys here are: `"), lines
    assert not out.exists()
