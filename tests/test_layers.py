"""The package's layers: imports go downwards, no circles, private names stay home.

Layers, from the bottom: ``core`` (numerics), ``models`` (networks, data,
samples), ``studies`` (one module per question), ``report`` (verdicts,
figures) and ``tools`` (build, training, CLIs). A module may import its own
layer and the layers below it; the results cache relies on this (a cached
result depends on ``core``, ``models`` and its study modules only).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "localprops"
LAYERS = ("core", "models", "studies", "report", "tools")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, here: str | None = None) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return [(m, names) for m, names in found if m.split(".")[0] == "localprops"]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, names: list[str]) -> list[str]:
    """The package modules an import statement reaches (submodules named in it too)."""
    targets = [module] if module in MODULES else []
    targets += [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return targets


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_every_module_belongs_to_a_layer():
    stray = [m for m in MODULES if m != "localprops" and layer_of(m) < 0]
    assert stray == [], f"modules outside the layers {LAYERS}: {stray}"


def violations(module: str, path: Path) -> list[str]:
    """Upward imports and private names imported from another module."""
    own = layer_of(module)
    home = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for target, names in imports(path, module):
        for reached in resolve(target, names) or [target]:
            if layer_of(reached) > own:
                found.append(f"{module} ({LAYERS[own]}) imports {reached}, a higher layer")
        # a private name or module is used only inside its own package, and a
        # private name only from a private module (core/mantel/_numba.py by
        # core/mantel/__init__.py), never from another public module
        inside = target == home or target.startswith(home + ".")
        for name in names:
            if not name.startswith("_"):
                continue
            private_module = f"{target}.{name}" in MODULES
            from_private = target.rsplit(".", 1)[-1].startswith("_")
            if not inside or not (private_module or from_private):
                found.append(f"{module} imports the private {target}.{name}")
        if any(part.startswith("_") and part != "__init__" for part in target.split(".")) \
                and not inside:
            found.append(f"{module} imports the private module {target}")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downwards_and_keep_private_names_home(module):
    assert violations(module, MODULES[module]) == []


def test_the_rules_can_fail(tmp_path):
    """An upward import, a private name of another module and a private module."""
    probe = tmp_path / "probe.py"
    probe.write_text("from localprops.report import plots\n"
                     "def f():\n"
                     "    from localprops.studies.firstorder import _rows\n"
                     "    from localprops.core import _philox_cpu\n")
    found = violations("localprops.studies.probe", probe)
    assert any("localprops.report.plots, a higher layer" in v for v in found)
    assert any("private localprops.studies.firstorder._rows" in v for v in found)
    assert any("private localprops.core._philox_cpu" in v for v in found)
    # a private module of the own package is fine
    assert not any("_philox_cpu" in v for v in violations("localprops.core.probe", probe))


def test_no_import_circles():
    graph = {m: {r for t, names in imports(p) for r in resolve(t, names) if r != m}
             for m, p in MODULES.items()}
    # a package's __init__ re-exporting its submodules is not a circle
    for m in graph:
        graph[m] = {r for r in graph[m] if not (m.startswith(r + ".") and
                                                 MODULES[r].name == "__init__.py")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
