"""docs/architecture.md stays true: every module of the package has its line in the table of
modules, and imports go down that table, never up (a function's own import counts too)."""

from __future__ import annotations

import ast
import gc
import re
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "synth_datasets"
# Modules with no job of their own to list: the package's public names and its version.
UNLISTED = {"__init__", "_version"}
# Upward imports the table states: figures.py draws the card's figures and is imported only by
# card.figure_drawer, when figures are drawn (it needs matplotlib).
STATED = {("card", "figures")}


def listed_modules() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `(\w+)(?:\.py|/)` \|", text, flags=re.MULTILINE)


def type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The imports under ``if TYPE_CHECKING:``: for the type checker, never run."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }


def parse(source: str) -> ast.Module:
    """``ast.parse`` with the cyclic collector held off. CPython 3.11.7 keeps one recursion count
    for building AST objects per interpreter: a collection inside the build may run a finaliser,
    hand the GIL to a thread formatting a traceback (3.11's tracebacks parse source to place
    their carets), and the build then fails with "SystemError: AST constructor recursion depth
    mismatch" (CPython gh-106905; reproduced here on 3.11.7). The collector is process-wide:
    while it is off, no such switch happens in any thread."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if enabled:
            gc.enable()


def imported_modules(path: Path) -> set[str]:
    """The top-level modules of the package that ``path`` imports (``testing`` for any of its)."""
    tree = parse(path.read_text(encoding="utf-8"))
    skipped = type_checking_only(tree)
    inside = path.relative_to(PACKAGE).parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level or node in skipped:
            continue
        base = list(inside[: len(inside) - node.level + 1])
        target = base + (node.module.split(".") if node.module else [])
        found |= {target[0]} if target else {alias.name for alias in node.names}
    return found


def test_every_module_has_its_line() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    modules |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    listed = listed_modules()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert modules - UNLISTED == set(listed)


def test_imports_go_down_the_table() -> None:
    order = {name: rank for rank, name in enumerate(listed_modules())}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if module in UNLISTED:
            continue
        for target in imported_modules(path) - {module} - UNLISTED:
            if order[target] > order[module] and (module, target) not in STATED:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert upward == []
