"""The import rules of docs/architecture.md ("Import rules"), checked on the source with `ast`.

Nothing is imported: every ``.py`` file under ``src/spatialclust`` is parsed and every import in it
(module level and inside functions; not the ones under ``if TYPE_CHECKING:``, which never run) is
resolved to the module it loads. An import ``from ..pkg import name`` is an edge to the submodule
``pkg.name`` when there is one, else to the package ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "spatialclust"

#: Layers that never import the tools, the pipelines, the report or the CLI.
LOWER_LAYERS = ("metrics", "pp", "io", "datasets")
#: What a lower layer may never import; ``tl`` may import all of these but ``tl``.
UPPER_LAYERS = ("tl", "pipeline", "report", "cli")

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST, *, in_functions: bool = True) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that can run (``in_functions=False``: only those that run on import)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if _is_type_checking(node):
            stack.extend(node.orelse)  # the body never runs
            continue
        if not in_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _package_of(module: str) -> str:
    """The package a module's relative imports start from."""
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def imports_of(module: str, *, in_functions: bool = True, external: bool = False) -> set[tuple[str, str]]:
    """``(imported module, imported name)`` of every import of ``module`` into the package (with
    ``external``: also of the other packages, e.g. ``("torch", "")``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[tuple[str, str]] = set()
    for node in _import_nodes(tree, in_functions=in_functions):
        if isinstance(node, ast.Import):
            found |= {(a.name, "") for a in node.names if external or a.name == ROOT or a.name.startswith(ROOT + ".")}
            continue
        if not node.level and external and node.module and not node.module.startswith(ROOT):
            found.add((node.module, ""))
            continue
        if node.level:
            base = _package_of(module).split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        elif node.module and (node.module == ROOT or node.module.startswith(ROOT + ".")):
            target = node.module
        else:
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add((sub, "") if sub in MODULES else (target, alias.name))
    return found


def _edges() -> dict[str, set[str]]:
    return {module: {target for target, _ in imports_of(module)} for module in MODULES}


EDGES = _edges()


def layer(module: str) -> str:
    """``spatialclust.tl._simclr`` -> ``tl``; ``spatialclust._keys`` -> ``_keys``; the root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(rule) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in EDGES.items()
        for target in targets
        if rule(module, target)
    )


def test_the_parser_sees_the_package():
    assert {"spatialclust.tl._simclr", "spatialclust.models", "spatialclust._keys"} <= set(MODULES)
    # a relative, a function-level and an absolute import are all seen
    assert "spatialclust.tl._embed" in EDGES["spatialclust.tl._simclr"]
    assert "spatialclust.models" in EDGES["spatialclust.tl._simclr"]  # imported inside methods
    assert ("spatialclust.models", "") not in imports_of("spatialclust._keys")


@pytest.mark.parametrize("lower", LOWER_LAYERS)
def test_lower_layers_never_import_tools_pipelines_report_or_cli(lower):
    assert _violations(lambda m, t: layer(m) == lower and layer(t) in UPPER_LAYERS) == []


@pytest.mark.parametrize("tool", ["tl", "translate", "pl"])
def test_tools_and_plots_never_import_pipelines_report_or_cli(tool):
    assert _violations(lambda m, t: layer(m) == tool and layer(t) in UPPER_LAYERS[1:]) == []


def test_plots_never_import_tools():
    """pl draws what the tools wrote into the AnnData; it never runs a tool."""
    assert _violations(lambda m, t: layer(m) == "pl" and layer(t) in ("tl", "translate")) == []


def test_models_is_the_bottom_deep_learning_layer():
    """models (torch modules) imports only the core modules and ``pp``-free helpers of its own."""
    allowed = {"models", "", "_compat", "_logging", "_registry", "_keys", "_atomic", "_validation"}
    assert _violations(lambda m, t: layer(m) == "models" and layer(t) not in allowed) == []


def _private_module_of_another_package(module: str, target: str) -> bool:
    parts = target.split(".")
    return (
        len(parts) >= 3
        and any(p.startswith("_") for p in parts[2:])
        and layer(module) != layer(target)
    )


def test_no_module_imports_a_private_module_of_another_package():
    """``from ..pkg._module import x`` across packages: use the public name ``from ..pkg import x``."""
    assert _violations(_private_module_of_another_package) == []


def test_only_the_version_is_imported_from_the_root_package():
    """The root ``__init__`` imports every subpackage; ``__version__`` is set before it does."""
    bad = sorted(
        f"{module} imports {name or 'the package'} from {ROOT}"
        for module in MODULES
        for target, name in imports_of(module)
        if target == ROOT and name != "__version__" and module != ROOT
    )
    assert bad == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = {
        m: {t for t in targets if t in MODULES and t != ROOT}
        for m, targets in EDGES.items()
        if m != ROOT
    }
    assert _cycles(graph) == []


def _loaded_on_import(module: str) -> set[str]:
    """Modules that ``import module`` runs: module-level imports, followed, with their parent packages."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        todo.append(m.rpartition(".")[0])  # a submodule's package is imported first
        todo.extend(t for t, _ in imports_of(m, in_functions=False))
    return seen


def test_import_spatialclust_never_imports_torch():
    """torch (and ``spatialclust.models``, made of torch modules) are imported inside functions only."""
    loaded = _loaded_on_import(ROOT)
    assert "spatialclust.tl._simclr" in loaded and "spatialclust.models" not in loaded
    torch_users = sorted(
        m for m in loaded
        if any(t == "torch" or t.startswith("torch.") for t, _ in imports_of(m, in_functions=False, external=True))
    )
    assert torch_users == []
