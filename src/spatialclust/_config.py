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
    ``"section.key=value"`` assignment (see :func:`set_dotted`). Unknown keys raise
    :class:`ConfigError`. The result still needs the command's own validation.
    """
    user = read_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    resolved = merge_config(defaults, user)
    if input_path is not None:
        resolved["input"]["path"] = str(input_path)
    if seed is not None:
        resolved["seed"] = int(seed)
    for assignment in overrides:
        set_dotted(resolved, assignment, defaults=defaults)
    return resolved


def set_dotted(config: dict[str, Any], assignment: str, *, defaults: Mapping[str, Any] | None = None) -> None:
    """Apply a command-line override ``"section.key=value"`` (value parsed as YAML) in place.

    With ``defaults``, a key below a free-form mapping of the defaults (empty there, e.g.
    ``input.read``) is added to that mapping, so that several overrides of one free-form mapping
    (``--set input.read.bin_width=5 --set input.read.bin_unit=ppm``) add up.
    """
    if "=" not in assignment:
        raise ConfigError(f"Override {assignment!r} must look like `section.key=value`.")
    dotted, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    keys = dotted.strip().split(".")
    node, schema = config, defaults
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(schema, Mapping) or key not in schema or not isinstance(node.get(key), dict):
            break  # merge_config below names the unknown key
        schema, node = schema[key], node[key]
        if isinstance(schema, dict) and not schema:  # free-form: any keys, merged one by one
            for inner in keys[depth + 1:-1]:
                node = node.setdefault(inner, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"Override {assignment!r}: `{inner}` is not a mapping.")
            node[keys[-1]] = value
            return
    update: dict[str, Any] = value
    for key in reversed(keys):
        update = {key: update}
    config.update(merge_config(config, update))


def dump_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(dict(config), sort_keys=False))
