"""The package's layers, as docs/architecture.md draws them, checked on every module's imports.

Each top-level part of ``contactcentre`` may import only the parts listed for it in ``ALLOWED`` (imports
under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted). A new arrow in the picture
is a decision: make it here, with the reason, and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "contactcentre"

CORE = {"events", "config_base", "deadlines"}
#: part -> the parts it may import at run time (itself always)
ALLOWED: dict[str, set[str]] = {
    "events": set(),
    "config_base": set(),
    "deadlines": set(),
    # the router: pure, no I/O, nothing above it (it names config structs only in annotations)
    "acd": {"events", "config_base"},
    # the centre's description, TOML in and checked structs out; it loads the IVR menus it names
    "config": CORE | {"telephony"},
    "planning": CORE,
    # the discrete-event simulator drives the production router and nothing of the live server
    "simulation": CORE | {"acd", "config", "planning"},
    # the simulated switch, its driver and the IVR: sans-I/O machines
    "telephony": CORE | {"acd"},
    "store": CORE,
    # projections of the event stream (metrics, queue figures, IVR statistics)
    "reporting": CORE | {"acd", "config", "planning", "store", "telephony"},
    # the centre facade, the router's driver, actions; its wiring place (runtime) is the exception below
    "server": CORE | {"acd", "config", "planning", "store", "reporting", "telephony"},
    # the front doors: they call the centre facade and the store's named functions
    "edge": CORE | {"acd", "config", "planning", "store", "reporting", "telephony", "server"},
    "demo": CORE | {"config", "store", "telephony", "loadgen"},
    "loadgen": CORE | {"config", "store", "simulation"},
    "cli": CORE | {"acd", "config", "planning", "simulation", "store", "reporting", "telephony", "server", "loadgen"},
}
#: single modules allowed more than their part: the one wiring place builds every front door and the demo
MODULE_EXTRA: dict[str, set[str]] = {"server/runtime.py": {"edge", "demo"}}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "contactcentre" or len(parts) < 2:
        return None
    return parts[1]


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import not under ``if TYPE_CHECKING:``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                skip.add(id(inner))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "contactcentre"]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_part_is_in_the_table() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()} - {"__init__"}
    assert parts <= set(ALLOWED), f"parts without a row in ALLOWED: {sorted(parts - set(ALLOWED))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own == "__init__":
        return
    bad = []
    for line, module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        part = _part(module)
        if part is None or part == own or part == "__init__":
            continue
        if part not in ALLOWED[own] | MODULE_EXTRA.get(path.relative_to(PACKAGE).as_posix(), set()):
            bad.append(f"line {line}: {module} ({own} may not import {part})")
    assert not bad, "\n".join(bad)
