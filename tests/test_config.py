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
     ("report.zoom=[1, 2", "is not valid YAML")],
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
