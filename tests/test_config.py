"""Configuration layers (`--set` overrides of free-form sections) and the `--set` examples of the CLI."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import typer

from spatialclust._config import ConfigError, resolve_config
from spatialclust.cli import app
from spatialclust.pipeline import benchmark_plan, load_config, parse_method_params


def test_several_overrides_of_a_free_form_section_add_up(tmp_path):
    """issue 13, item 8: `--set input.read.bin_width=0.5 --set input.read.bin_unit=Da` failed with
    "Unknown configuration key `input.read.bin_unit`"."""
    config = load_config(overrides=["input.read.bin_width=0.5", "input.read.bin_unit=Da"])
    assert config["input"]["read"] == {"bin_width": 0.5, "bin_unit": "Da"}
    # a config file's free-form keys are kept and updated by overrides, key by key
    path = tmp_path / "my.yaml"
    path.write_text("input:\n  read: {bin_width: 10, mz_range: [400, 900]}\n")
    config = load_config(path, overrides=["input.read.bin_width=5", "input.read.bin_unit=ppm",
                                          "input.simulate.shape=[8, 8]", "input.simulate.n_patterns=2"])
    assert config["input"]["read"] == {"bin_width": 5, "mz_range": [400, 900], "bin_unit": "ppm"}
    assert config["input"]["simulate"] == {"shape": [8, 8], "n_patterns": 2}
    # lists are replaced, not merged; checked keys stay checked after a free-form override
    config = load_config(overrides=["cluster=[kmeans]", "cluster=[hdbscan]"])
    assert [c["method"] for c in config["cluster"]] == ["hdbscan"]
    with pytest.raises(ConfigError, match=r"Unknown configuration key `input.reed`"):
        load_config(overrides=["input.read.bin_width=0.5", "input.reed.bin_unit=Da"])
    with pytest.raises(ConfigError, match=r"`preprocess` must be a mapping"):
        load_config(overrides=["preprocess=3"])


@pytest.mark.parametrize(
    "assignment, message",
    [("preprocess.winsorize", "must look like `section.key=value`"),
     ("preprocess..winsorize=9", "has an empty key"),
     ("report.zoom=[1, 2", "is not valid YAML"),
     ("=3", "has an empty key"), ("a.b=", "Unknown configuration key `a`")],
)
def test_malformed_overrides_name_the_override(assignment, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config({"preprocess": {"winsorize": 95}, "report": {"zoom": None}}, overrides=[assignment])


def _help_texts(command, path=()):
    """(command path, help text of the command and of its options) for every CLI command."""
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    yield path, "\n".join(texts), any("--set" in p.opts for p in command.params)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _help_texts(sub, (*path, name))


#: The configuration each command's `--set` refers to.
_LOADERS = {
    ("run",): load_config,
    ("train",): load_config,
    ("cells", "run"): lambda overrides: load_config(pipeline="cells", overrides=overrides),
    ("translate", "train"): lambda overrides: load_config(pipeline="translate", overrides=overrides),
    ("translate", "evaluate"): lambda overrides: load_config(pipeline="translate", overrides=overrides),
    ("translate", "predict"): lambda overrides: load_config(pipeline="translate", overrides=overrides),
    ("benchmark",): lambda overrides: benchmark_plan(params=parse_method_params(overrides)),
}


def _set_examples(text: str) -> list[str]:
    """The assignments shown as `--set X=Y` or `--set 'X=Y'` in ``text``."""
    found = re.findall(r"--set\s+(?:'([^']+)'|(\S+=\S+))", text)
    return [quoted or plain.rstrip(".,;)") for quoted, plain in found]


def test_every_set_example_in_the_help_texts_is_a_valid_override():
    """issue 13, item 10: `translate --help` showed `--set preprocess.winsorize=99`, not a translate key."""
    commands = list(_help_texts(typer.main.get_command(app)))
    with_set = {path for path, _, has_set in commands if has_set}
    assert with_set == set(_LOADERS)  # a new command with --set needs its loader here
    checked = 0
    for path, text, has_set in commands:
        examples = _set_examples(text)
        if has_set:
            assert examples, f"`spatialclust {' '.join(path)} --help` shows no --set example"
        for example in examples:
            loader = _LOADERS.get(path)
            assert loader is not None, f"`{' '.join(path)}` shows --set {example} but has no --set option"
            loader(overrides=[example])  # raises ConfigError naming the key if the example is wrong
            checked += 1
    assert checked >= len(_LOADERS) + 1  # train also shows a simclr embedding override


@pytest.mark.parametrize(
    "resource, loader",
    [("config.yaml", load_config), ("cells.yaml", lambda overrides: load_config(pipeline="cells", overrides=overrides))],
)
def test_set_examples_in_the_packaged_configs_are_valid(resource, loader):
    text = resources.files("spatialclust.pipeline").joinpath(resource).read_text()
    examples = [e for e in _set_examples(text.replace("`", " ")) if not e.startswith("section.key=")]  # the form
    assert examples
    for example in examples:
        loader(overrides=[example])


@pytest.mark.parametrize("pipeline, assignment, key", [
    ("cluster", "evaluate.n_boot=abc", "evaluate.n_boot"),
    ("cluster", "seed=1.5", "seed"),
    ("cluster", "preprocess.winsorize=[1, 2]", "preprocess.winsorize"),
    ("cluster", "input.path=[1]", "input.path"),
    ("cluster", "input.name=[1]", "input.name"),
    ("cluster", "report.histology=3", "report.histology"),
    ("cluster", "report.thumbnails=abc", "report.thumbnails"),
    ("cluster", "report.zoom=[a, b]", "report.zoom"),
    ("cluster", "report.zoom=[500, 400]", "report.zoom"),
    ("cluster", "report.rgb_clusters=[a]", "report.rgb_clusters"),
    ("cells", "seed=abc", "seed"),
    ("cells", "label_key=[1]", "label_key"),
    ("cells", "input.path=3", "input.path"),
    ("cells", "input.channels=3", "input.channels"),
    ("cells", "pca.scale=maybe", "pca.scale"),
    ("cells", "metric_learning.max_iter=abc", "metric_learning.max_iter"),
    ("cells", "embedding_pca.n_comps=abc", "embedding_pca.n_comps"),
    ("cells", "cluster.resolutions=[a]", "cluster.resolutions"),
    ("cells", "cluster.stability_threshold=abc", "cluster.stability_threshold"),
    ("cells", "cluster.n_neighbors=abc", "cluster.n_neighbors"),
    ("cells", "evaluate.k=abc", "evaluate.k"),
    ("cells", "report.umap=maybe", "report.umap"),
    ("cells", "report.dpi=abc", "report.dpi"),
    ("translate", "seed=abc", "seed"),
    ("translate", "data.st=3", "data.st"),
    ("translate", "pairing.radius=abc", "pairing.radius"),
    ("translate", "targets.snr=abc", "targets.snr"),
    ("translate", "signatures.use=maybe", "signatures.use"),
    ("translate", "signatures.cluster_key=[1]", "signatures.cluster_key"),
    ("translate", "model.inner_splits=abc", "model.inner_splits"),
    ("translate", "model.params=3", "model.params"),
    ("translate", "cv.n_splits=abc", "cv.n_splits"),
    ("translate", "search.enabled=maybe", "search.enabled"),
    ("translate", "report.top_genes=abc", "report.top_genes"),
])
def test_a_value_of_the_wrong_kind_fails_at_load_naming_its_key(pipeline, assignment, key):
    """Were accepted (and ignored, or taken as true) or failed after the work with e.g. "unhashable
    type: 'list'", "not all arguments converted during string formatting", "'<' not supported
    between instances of 'int' and 'str'"."""
    with pytest.raises(ConfigError, match=re.escape(f"`{key}` must be")):
        load_config(pipeline=pipeline, overrides=[assignment])


def test_translate_method_parameters_must_be_mappings():
    """`--set 'model.params={a: 1}'` failed with "'int' object is not iterable"."""
    with pytest.raises(ConfigError, match=re.escape("`model.params` maps `stage.model` names to mappings")):
        load_config(pipeline="translate", overrides=["model.params={a: 1}"])


def test_file_keys_of_the_cells_config_are_checked_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.csv").write_text("cell,label\n")
    config = load_config({"input": {"labels": tmp_path.joinpath("labels.csv").relative_to(tmp_path)}}, pipeline="cells")
    assert config["input"]["labels"] == str(tmp_path / "labels.csv")
    with pytest.raises(FileNotFoundError, match="`input.path`: 'cells/' does not exist"):
        load_config(overrides=["input.path=cells/"], pipeline="cells")


@pytest.mark.parametrize("pipeline, assignment", [("cluster", "input.simulate.shape=abc"),
                                                  ("cells", "input.simulate.n_cells=abc")])
def test_a_bad_simulator_value_names_input_simulate(tmp_path, pipeline, assignment):
    """Was "Error: invalid literal for int() with base 10: 'a'", naming no key."""
    from spatialclust.pipeline import run_cells, run_pipeline

    run = run_pipeline if pipeline == "cluster" else run_cells
    with pytest.raises(ConfigError, match=r"`input.simulate`.*invalid literal for int\(\)"):
        run(load_config(pipeline=pipeline, overrides=[assignment]), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []
