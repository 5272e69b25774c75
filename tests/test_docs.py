"""A fresh clone must stand alone: README and docs never point into the development machines' ../shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_the_shared_folder(path):
    hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if "../shared" in line or "shared/data/" in line]
    assert not hits, "name the public dataset (sc.datasets / spatialclust datasets path) instead of:\n" + "\n".join(hits)


def test_the_check_covers_readme_and_docs():
    names = {p.name for p in DOCS}
    assert {"README.md", "data_model.md", "cli.md"} <= names


def _cli_commands():
    """(words, click command) of every leaf command of `spatialclust`, e.g. (("translate", "predict"), cmd)."""
    import typer

    from spatialclust.cli import app

    def walk(command, words):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*words, name))
        else:
            yield words, command

    return list(walk(typer.main.get_command(app), ()))


@pytest.mark.parametrize("words, command", _cli_commands(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_cli_command_and_option_is_in_cli_md(words, command):
    text = (ROOT / "docs" / "cli.md").read_text()
    name = " ".join(("spatialclust", *words))
    assert name in text, f"docs/cli.md does not document `{name}`"
    options = [o for p in command.params if getattr(p, "param_type_name", "") == "option"
               for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"]
    missing = [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"docs/cli.md does not name the options {missing} of `{name}`"


MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_images_resolve(path):
    text = path.read_text()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    broken = [t for t in targets if not t.startswith(("http://", "https://", "#", "mailto:"))
              and not (path.parent / t.split("#")[0]).exists()]
    assert not broken, f"{path.name}: links or images that do not exist: {broken}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(path):
    """Every Python file (module, benchmark script, test file) and packaged or benchmark config a document names
    exists; other names (`my.yaml`, `runs/x/config.yaml`) are the user's files."""
    src = ROOT / "src" / "spatialclust"
    names = set(re.findall(r"(?<![\w./-])((?:\w+/)*\w+\.py)\b", path.read_text()))
    names |= set(re.findall(r"\b((?:benchmarks/configs|spatialclust/pipeline|pipeline)/\w+\.yaml)\b", path.read_text()))
    bases = (ROOT, ROOT / "src", src, ROOT / "tests", ROOT / "benchmarks")
    missing = [n for n in names if not any((base / n).exists() for base in bases)
               and not ("/" not in n and any(src.rglob(n)))]
    assert not missing, f"{path.name} names files that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_tests_exist(path):
    """Every `test_file.py::test_name` a document cites as evidence is a test of that file."""
    missing = [f"{file}::{name}" for file, name in sorted(set(re.findall(r"(test_\w+\.py)::(\w+)", path.read_text())))
               if not (ROOT / "tests" / file).is_file()
               or not re.search(rf"def {name}\b", (ROOT / "tests" / file).read_text())]
    assert not missing, f"{path.name} cites tests that do not exist: {missing}"


def test_architecture_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    src = ROOT / "src" / "spatialclust"
    modules = [p for p in src.rglob("*.py") if p.name != "__init__.py"]
    packages = [p.parent for p in src.rglob("__init__.py") if p.parent != src]
    missing = [str(p.relative_to(src)) for p in modules if p.name not in text]
    missing += [f"{p.name}/" for p in packages if f"{p.name}/" not in text]
    assert not missing, f"docs/architecture.md, 'Package layout', does not name {missing}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_names_resolve(path):
    """Every `sc.<namespace>.<name>` a document shows exists after `import spatialclust as sc`."""
    import spatialclust as sc

    unresolved = []
    for dotted in sorted(set(re.findall(r"\bsc\.((?:\w+\.)*\w+)", path.read_text()))):
        first, *rest = dotted.split(".")
        obj = getattr(sc, first, None) if first in sc.__all__ else None  # not a submodule another test imported
        for part in rest:
            obj = getattr(obj, part, None)
        if obj is None:
            unresolved.append(f"sc.{dotted}")
    assert not unresolved, f"{path.name} shows names that `import spatialclust as sc` does not have: {unresolved}"


@pytest.mark.parametrize("command", ["run", "cells", "translate"])
def test_cli_md_names_every_key_of_the_packaged_configs(command):
    """docs/cli.md lists the sections and keys of each packaged configuration: a renamed key shows up here."""
    from spatialclust._config import packaged_defaults
    from spatialclust.cli import CONFIG_RESOURCES

    text = (ROOT / "docs" / "cli.md").read_text()
    config = packaged_defaults(CONFIG_RESOURCES[command])
    keys = [*config, *(key for value in config.values() if isinstance(value, dict) for key in value)]
    missing = [key for key in keys if not re.search(rf"`{re.escape(key)}[`.]", text)]
    assert not missing, f"docs/cli.md does not name the `{command}` configuration keys {missing}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_lines_use_existing_options(path):
    """Every `spatialclust ...` and `python benchmarks/x.py ...` line of a document uses options that exist."""
    commands = dict(_cli_commands())
    text = path.read_text().replace("\\\n", " ")
    wrong = []
    for line in re.findall(r"(?<![\w/-])spatialclust ([a-z][^\n`|;#)]*)", text):
        words = line.split()
        for n in (2, 1):
            if tuple(words[:n]) in commands:
                command = commands[tuple(words[:n])]
                options = {o for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
                wrong += [f"spatialclust {' '.join(words[:n])} {w}" for w in words[n:]
                          if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", w) and w.split("=")[0] not in options | {"--help"}]
                break
    for script, args in re.findall(r"python (benchmarks/\w+\.py)([^\n`]*)", text):
        source = (ROOT / script).read_text()
        wrong += [f"{script} {flag}" for flag in re.findall(r"(?<![\w-])(--[\w-]+)", args)
                  if f'"{flag}"' not in source and f"'{flag}'" not in source]
    assert not wrong, f"{path.name} uses options that do not exist: {wrong}"
