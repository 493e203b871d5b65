"""Imports run one way (README, "Architecture"): every import in the project, lazy ones inside functions
included, is parsed and checked against the layers, and the project's import graph has no cycle.

    zoo (and its small utilities)          bottom: imports nothing of the project above it
    modules.core -> modules.nets -> modules.<method>
    datamodules                            beside the modules: imports the zoo only, never a method
    cli.py, scripts/, benchmarks/          on top
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "modules", "datamodules")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> str:
    """The layer of a project module name: zoo, core, nets, method, data or top."""
    head = name.split(".")
    if head[0] == "zoo":
        return "zoo"
    if head[0] == "datamodules":
        return "data"
    if head[0] == "modules":
        if len(head) == 1:
            return "method"  # the package itself re-exports nothing of a layer below
        return {"core": "core", "nets": "nets"}.get(head[1], "method")
    return "top"


ALLOWED = {
    "zoo": {"zoo"},
    "core": {"zoo", "core"},
    "nets": {"zoo", "core", "nets"},
    "method": {"zoo", "core", "nets", "method"},
    "data": {"zoo", "data"},
    "top": {"zoo", "core", "nets", "method", "data", "top"},
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported project module) for every import statement in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path).split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                package = me if path.name == "__init__.py" else me[:-1]
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            # `from zoo import registry` imports the submodule zoo.registry
            names += [f"{names[0]}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in (*PACKAGES, "cli"):
                found.append((node.lineno, name))
    return found


def project_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return sorted(files + [ROOT / "cli.py", *(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def existing(name: str) -> str | None:
    """The longest prefix of ``name`` that is a project module file (drops imported attributes)."""
    parts = name.split(".")
    while parts:
        stem = ROOT.joinpath(*parts)
        if stem.with_suffix(".py").is_file() or (stem / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def test_every_import_points_down_or_sideways():
    wrong = []
    for path in project_files():
        mine = layer(module_name(path)) if path.parent != ROOT / "scripts" and path.name != "cli.py" else "top"
        if path.parent == ROOT / "benchmarks":
            mine = "top"
        for line, name in project_imports(path):
            target = existing(name)
            if target is None:
                continue
            theirs = "top" if target == "cli" else layer(target)
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_the_project_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in project_files():
        me = module_name(path)
        targets = {existing(n) for _, n in project_imports(path)}
        graph[me] = {t for t in targets if t and t != me and not me.startswith(f"{t}.")}  # a package's own parts
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layer_check_catches_a_back_arrow(tmp_path):
    """The parser sees lazy imports inside functions and relative imports."""
    probe = ROOT / "datamodules" / "_probe_layers.py"
    probe.write_text("def f():\n    from modules.mirage_mining import mine\n")
    try:
        assert (2, "modules.mirage_mining") in project_imports(probe)
        assert layer(existing("modules.mirage_mining.mine")) not in ALLOWED["data"]
    finally:
        probe.unlink()
