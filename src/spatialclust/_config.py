"""YAML run configurations: packaged commented defaults, user overrides, unknown keys rejected.

A configuration is a nested mapping. The packaged default file of a command (e.g.
``pipeline/config.yaml``) lists every key with a comment; a user file or dict only needs the keys
it changes. A key not present in the defaults is an error naming the key and the valid ones,
except below a mapping that is empty in the defaults (``params: {}``), which is free-form and
passed to the selected method as keyword arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def packaged_text(resource: str) -> str:
    """The text, comments included, of a file shipped inside the package, e.g. ``"pipeline/config.yaml"``."""
    package, _, name = resource.rpartition("/")
    files = resources.files(f"spatialclust.{package.replace('/', '.')}" if package else "spatialclust")
    return files.joinpath(name).read_text()


def packaged_defaults(resource: str) -> dict[str, Any]:
    """Load a default configuration shipped inside the package, e.g. ``"pipeline/config.yaml"``."""
    return yaml.safe_load(packaged_text(resource)) or {}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Configuration file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"Configuration file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Configuration file {str(path)!r} must hold a mapping, got {type(data).__name__}.")
    return data


def merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, *, where: str = "") -> dict[str, Any]:
    """Return ``defaults`` updated with ``overrides``, rejecting keys the defaults do not have."""
    result = copy.deepcopy(dict(defaults))
    for key, value in (overrides or {}).items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in result:
            valid = ", ".join(f"`{k}`" for k in sorted(result)) or "(none)"
            raise ConfigError(f"Unknown configuration key `{dotted}`. Valid keys here are: {valid}.")
        default = result[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, Mapping):
                raise ConfigError(f"Configuration key `{dotted}` must be a mapping, got {value!r}.")
            result[key] = merge_config(default, value, where=dotted)
        else:
            result[key] = copy.deepcopy(value)
    return result


def resolve_config(
    defaults: Mapping[str, Any],
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    input_path: str | Path | None = None,
) -> dict[str, Any]:
    """``defaults`` <- ``config`` (YAML file or mapping) <- ``input_path``/``seed`` <- ``overrides``.

    ``input_path`` sets ``input.path``; ``seed`` sets ``seed``; each override is a
    ``"section.key=value"`` assignment (see :func:`parse_override`). Mappings of later layers
    update those of earlier ones key by key (a free-form section such as ``input.read`` collects
    the keys of every layer); lists and other values replace. Unknown keys raise
    :class:`ConfigError`. The result still needs the command's own validation.
    """
    user = read_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    layers: list[Mapping[str, Any]] = [user]
    if input_path is not None:
        layers.append({"input": {"path": str(input_path)}})
    if seed is not None:
        layers.append({"seed": int(seed)})
    layers.extend(parse_override(assignment) for assignment in overrides)
    # the layers are combined key by key first and checked against the defaults once, so that
    # several overrides of one free-form section (`--set input.read.bin_width=0.5 --set
    # input.read.bin_unit=Da`) add up instead of the second being checked against the first
    combined: dict[str, Any] = {}
    for layer in layers:
        combined = deep_update(combined, layer)
    return merge_config(defaults, combined)


def parse_override(assignment: str) -> dict[str, Any]:
    """A command-line override ``"section.key=value"`` (value parsed as YAML) as a nested mapping."""
    if "=" not in assignment:
        raise ConfigError(f"Override {assignment!r} must look like `section.key=value`.")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"Override {assignment!r} must look like `section.key=value`; {dotted.strip()!r} has an empty key.")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"The value of override {assignment!r} is not valid YAML: {err}") from err
    update: Any = value
    for key in reversed(keys):
        update = {key: update}
    return update


def deep_update(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, mapping by mapping; any other value replaces (lists too)."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_update(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def dump_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(dict(config), sort_keys=False))
