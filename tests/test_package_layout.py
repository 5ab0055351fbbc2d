"""The package's layering, checked: no import cycle between its parts, no import hidden inside
a function to dodge one (the command-line modules defer theirs so that ``--help`` and a bad
argument answer without loading torch), and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslunet"
MAX_LINES = 400


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(f.read_text(), str(f))
    return out


def _part(module: str) -> str:
    """``sslunet.training.api`` -> ``sslunet.training``; top-level modules are their own part."""
    return ".".join(module.split(".")[:2])


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported sslunet module, whether the import is inside a function)."""
    found: list[tuple[str, bool]] = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("sslunet"):
                found.append((child.module, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names
                             if a.name.startswith("sslunet"))
            visit(child, inner)

    visit(tree, False)
    return found


def test_no_import_cycle_between_the_parts_of_the_package():
    graph: dict[str, set[str]] = {}
    for module, tree in _modules().items():
        for target, _ in _imports(tree):
            if _part(target) != _part(module):
                graph.setdefault(_part(module), set()).add(_part(target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if reaches(b, a))
    assert not cycles, cycles


def test_imports_inside_functions_only_in_the_command_line_modules():
    hidden = sorted(f"{module} imports {target}" for module, tree in _modules().items()
                    if not module.startswith("sslunet.cli.")
                    for target, in_function in _imports(tree) if in_function)
    assert not hidden, hidden


def test_no_module_over_400_lines():
    long = {str(f.relative_to(PACKAGE)): n for f in PACKAGE.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, long
