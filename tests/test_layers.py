"""Dependencies point one way: the library layers (registry/, modbus/, influx/) never import
dagster or the pipeline's settings, directly or through another module, so the CLI, the
virtual server and the benchmarks use them as they are. Read from the source with ast, so a
lazy import inside a function counts too; imports only a type checker sees do not."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import energymon_pipeline

PACKAGE = Path(energymon_pipeline.__file__).parent
LIBRARY_LAYERS = ("registry", "modbus", "influx")
SETTINGS = "energymon_pipeline.settings"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _import_nodes(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def _with_parents(name: str) -> list[str]:
    """`a.b.c` and the packages importing it runs first: `a`, `a.b`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imports_of(module: str) -> set[str]:
    """Every module `module` imports: full names inside energymon_pipeline, top-level names
    outside it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` not.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for target in targets:
            if target.split(".")[0] == "energymon_pipeline":
                found.update(t for t in _with_parents(target) if t in MODULES)
            else:
                found.add(target.split(".")[0])
    found.discard(module)
    return found


def reached_from(module: str) -> dict[str, list[str]]:
    """Every module importing `module` imports in turn, with the chain that gets there."""
    chains = {module: [module]}
    queue = [module]
    while queue:
        current = queue.pop()
        for target in sorted(imports_of(current)):
            if target not in chains:
                chains[target] = [*chains[current], target]
                if target in MODULES:
                    queue.append(target)
    return chains


def _forbidden(name: str) -> bool:
    return name == SETTINGS or name == "dagster" or name.startswith("dagster_")


LIBRARY_MODULES = sorted(
    name for name in MODULES if name.split(".")[1:2] and name.split(".")[1] in LIBRARY_LAYERS
)


def test_the_walk_sees_every_library_layer():
    layers = {name.split(".")[1] for name in LIBRARY_MODULES}
    assert layers == set(LIBRARY_LAYERS)
    assert "energymon_pipeline.registry.migrations.versions.0001_registry" in LIBRARY_MODULES


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_library_layers_import_neither_dagster_nor_settings(module):
    chains = reached_from(module)
    bad = [" -> ".join(chain) for name, chain in sorted(chains.items()) if _forbidden(name)]
    assert not bad, f"{module} imports what a library layer must not: {bad}"


@pytest.mark.parametrize(
    ("module", "must_not_reach"),
    [
        # Validation knows nothing of line protocol; the write op nothing of the poll ops.
        ("energymon_pipeline.readings", "energymon_pipeline.influx.points"),
        ("energymon_pipeline.ops.write", "energymon_pipeline.ops.poll"),
    ],
)
def test_no_arrow_runs_sideways(module, must_not_reach):
    assert must_not_reach not in reached_from(module)


def test_the_walk_finds_what_is_there():
    """The checks above would pass vacuously if the walk missed imports: it does not."""
    poll = reached_from("energymon_pipeline.ops.poll")
    assert "dagster" in poll
    assert "energymon_pipeline.readings" in poll and "pandas" in poll  # readings: in the op
    lazy = imports_of("energymon_pipeline.commands.configured")  # WritePath: inside a function
    assert {SETTINGS, "energymon_pipeline.influx.write_path"} <= lazy
    # Only a type checker reads this import of poll_health's, so it is not followed.
    assert "energymon_pipeline.modbus.reader" not in imports_of(
        "energymon_pipeline.influx.poll_health"
    )
