"""The edge talks to the router through its public API only.

Every module outside ``contactcentre/acd/`` (the package, the benchmarks) may import from the
ACD core only the names ``contactcentre.acd`` lists in ``__all__`` — never one of its submodules — and from
``contactcentre.events`` only its public names (not underscored, and defined there rather than imported). It
reads no router object either: ``router.contacts``, ``.agents``, ``.queues`` and the rest hold the router's
mutable state, which an adapter in another process could not reach; the router's read methods return plain
values instead (``contactcentre/acd/views.py``).
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

import contactcentre.acd
import contactcentre.events

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "contactcentre" / "acd"
SCANNED = ("contactcentre", "benchmarks")

# Attributes of the router that are its internal state (or take or return its objects).
ROUTER_INTERNALS = frozenset(
    {
        "agents",
        "avail",
        "calendars",
        "can_take",
        "contacts",
        "eligible",
        "estimator",
        "offers",
        "queues",
        "scheduled",
        "staffing",
        "timers",
        "waiting",
    }
)


def _public_events() -> frozenset[str]:
    """``__all__`` if the module declares one; else every name not underscored that the module itself defines
    (its classes and functions, and what its own source assigns), not what it imported."""
    mod = contactcentre.events
    declared = getattr(mod, "__all__", None)
    if declared is not None:
        return frozenset(declared)
    own = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", None) == mod.__name__
    }
    return frozenset(own | _constants(mod))


def _constants(mod: types.ModuleType) -> set[str]:
    """Module-level names assigned in the module's own source (constants, type aliases, tables)."""
    tree = ast.parse(Path(mod.__file__ or "").read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        out.update(t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_"))
    return out


PUBLIC = {"contactcentre.acd": frozenset(contactcentre.acd.__all__), "contactcentre.events": _public_events()}


#: Outside the core but allowed its internals: the routing benchmark times the router's own indexes (the
#: availability index, the waiting groups) beside the public calls, as a test of the core would.
CORE_BENCHMARKS = {ROOT / "benchmarks" / "routing.py"}


def _modules() -> list[Path]:
    out = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if CORE not in path.parents and path not in CORE_BENCHMARKS:
                out.append(path)
    return out


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = path.relative_to(ROOT).parent.parts
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _ends_in_router(node: ast.expr, bound: frozenset[str] = frozenset()) -> bool:
    """``router``, ``self.router``, ``centre.router``, ``centre_router``, or a name ``bound`` to a router: an
    expression naming a router."""
    if isinstance(node, ast.Name):
        return node.id.endswith("router") or node.id in bound
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("router")
    return False


def _router_names(tree: ast.AST) -> frozenset[str]:
    """Names that hold a router under another name: ``r = centre.router``, ``r = Router(...)``, ``r: Router``
    (an annotated variable or argument)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            value = node.value
            is_router = _ends_in_router(value) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Router"
            )
            if is_router:
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.arg)):
            annotation = node.annotation
            if annotation is not None and "Router" in ast.unparse(annotation).replace("RouterDriver", ""):
                target = node.target if isinstance(node, ast.AnnAssign) else None
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(node, ast.arg):
                    names.add(node.arg)
    return frozenset(names)


def violations(path: Path, source: str | None = None) -> list[str]:
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    out: list[str] = []
    aliases: dict[str, str] = {}  # a local name bound to contactcentre.acd / .events -> that module
    where = path.relative_to(ROOT) if path.is_absolute() else path
    bound = _router_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("contactcentre.acd."):
                    out.append(f"{where}:{node.lineno}: imports {a.name} (a module inside the ACD core)")
                elif a.name in PUBLIC and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            if module.startswith("contactcentre.acd."):
                out.append(f"{where}:{node.lineno}: imports from {module} (a module inside the ACD core)")
            elif module in PUBLIC:
                for a in node.names:
                    if a.name not in PUBLIC[module]:
                        out.append(f"{where}:{node.lineno}: imports {a.name} from {module}, not a public name")
            elif module == "contactcentre":
                for a in node.names:
                    full = f"contactcentre.{a.name}"
                    if full in PUBLIC:
                        aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Attribute):
            if node.attr in ROUTER_INTERNALS and _ends_in_router(node.value, bound):
                out.append(f"{where}:{node.lineno}: reads .{node.attr} of a router (use its read methods)")
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                module = aliases[node.value.id]
                if node.attr not in PUBLIC[module]:
                    out.append(f"{where}:{node.lineno}: uses {module}.{node.attr}, not a public name")
    return out


def test_the_edge_uses_only_the_public_names_and_reads_of_the_core() -> None:
    found = [v for path in _modules() for v in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("from contactcentre.acd.contact import QUEUED\n", "a module inside the ACD core"),
        ("import contactcentre.acd.agent\n", "a module inside the ACD core"),
        ("from .acd.stats import LiveStats\n", "a module inside the ACD core"),
        ("from contactcentre.acd import Agent\n", "not a public name"),
        ("from contactcentre.events import _Strict\n", "not a public name"),
        ("from contactcentre.events import msgspec\n", "not a public name"),
        ("from contactcentre import events as E\nE._Strict\n", "not a public name"),
        ("def f(centre):\n    return centre.router.contacts.get('c1')\n", "reads .contacts of a router"),
        ("def f(router):\n    return router.agents\n", "reads .agents of a router"),
        ("def f(self):\n    return self.router.estimator\n", "reads .estimator of a router"),
        ("def f(centre_router):\n    return centre_router.queues\n", "reads .queues of a router"),
        ("def f(centre):\n    r = centre.router\n    return r.contacts\n", "reads .contacts of a router"),
        ("def f(r: Router):\n    return r.waiting\n", "reads .waiting of a router"),
        ("def f(cfg):\n    r = Router(cfg)\n    return r.agents\n", "reads .agents of a router"),
    ],
)
def test_the_check_catches(source: str, what: str) -> None:
    found = violations(ROOT / "contactcentre" / "example.py", source)
    assert len(found) == 1 and what in found[0], found


def test_the_check_lets_the_public_api_through() -> None:
    source = (
        "from contactcentre.acd import Router, RouterError\n"
        "from contactcentre.events import ContactArrived, Event\n"
        "from contactcentre import events as E\n"
        "def f(centre):\n"
        "    E.ContactArrived\n"
        "    return centre.router.contact('c1'), centre.router.config, centre.contacts\n"
    )
    assert violations(ROOT / "contactcentre" / "example.py", source) == []


# ------------------------------------------------------------------------------------------ staged store work

#: The adapters whose staged store work must be data (``contactcentre/store/ops.py``): on an edge node it is
#: encoded and run by the router's writer in another process, which a function or a ``functools.partial``
#: could not be. ``Centre.stage`` itself still takes any callable (the router's side stages its own).
ADAPTERS = (
    *sorted((ROOT / "contactcentre" / "edge").rglob("*.py")),
    ROOT / "contactcentre" / "server" / "contact_actions.py",
    ROOT / "contactcentre" / "server" / "agent_actions.py",
    *sorted((ROOT / "contactcentre" / "demo").rglob("*.py")),
)
OPS_MODULE = "contactcentre.store.ops"


def _op_names(path: Path, tree: ast.AST) -> frozenset[str]:
    """Local names of what the module imports from ``contactcentre.store.ops``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _absolute(path, node) == OPS_MODULE:
            names.update(a.asname or a.name for a in node.names)
    return frozenset(names)


def _is_op(node: ast.expr, ops: frozenset[str]) -> bool:
    """``SomeOp(...)`` for a name imported from the ops module (or ``x := SomeOp(...)``)."""
    if isinstance(node, ast.NamedExpr):
        node = node.value
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ops


def _holds_only_ops(function: ast.AST, name: str, ops: frozenset[str]) -> bool:
    """Every value the function binds to ``name`` is a store op (or None, the "not yet")."""
    values: list[ast.expr] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            values.append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            if node.value is not None:
                values.append(node.value)
        elif isinstance(node, ast.NamedExpr) and node.target.id == name:
            values.append(node.value)
        elif isinstance(node, ast.For) and name in {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}:
            return False  # a loop variable: whatever the iterable held
        elif isinstance(node, ast.arguments) and name in {
            a.arg for a in [*node.posonlyargs, *node.args, *node.kwonlyargs]
        }:
            return False  # an argument: whatever the caller passed
    return bool(values) and all(_is_op(v, ops) or (isinstance(v, ast.Constant) and v.value is None) for v in values)


def stage_violations(path: Path, source: str | None = None) -> list[str]:
    """``centre.stage(x)`` calls whose ``x`` is not a store op from ``contactcentre.store.ops``: built in the
    call, or a local name the function binds to store ops only."""
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    ops = _op_names(path, tree)
    where = path.relative_to(ROOT) if path.is_absolute() else path
    out: list[str] = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for function in functions:
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "stage"):
                continue
            args = [*node.args, *(k.value for k in node.keywords)]
            arg = args[0] if len(args) == 1 else None
            ok = arg is not None and (
                _is_op(arg, ops) or (isinstance(arg, ast.Name) and _holds_only_ops(function, arg.id, ops))
            )
            if not ok:
                what = ast.unparse(arg) if arg is not None else "?"
                out.append(f"{where}:{node.lineno}: stages {what}, not a store op of {OPS_MODULE}")
    return out


def test_adapters_stage_only_store_ops() -> None:
    assert len(ADAPTERS) > 10  # the folders are where this test thinks they are
    found = [v for path in ADAPTERS for v in stage_violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import functools\nfrom contactcentre.store.mail import first_response\n"
        "def f(centre):\n    centre.stage(functools.partial(first_response, 'case-1', 1))\n",
        "from contactcentre.store.ops import FirstResponse\ndef f(self):\n    self.centre.stage(lambda conn: None)\n",
        "from contactcentre.store.privacy import ReadRecords\ndef f(self):\n    self.centre.stage(ReadRecords())\n",
        "from contactcentre.store.ops import HelloRows\ndef f(centre, rows):\n    centre.stage(rows)\n",
        "from contactcentre.store.ops import HelloRows\n"
        "def f(centre, make):\n    rows = None\n    rows = make()\n    centre.stage(rows)\n",
        "from contactcentre.store.ops import HelloRows\n"
        "def f(centre, many):\n    for rows in many:\n        centre.stage(rows)\n",
        "def f(self):\n    self.centre.stage(self._reads)\n",
    ],
)
def test_the_stage_check_catches(source: str) -> None:
    found = stage_violations(ROOT / "contactcentre" / "edge" / "example.py", source)
    assert len(found) == 1 and "not a store op" in found[0], found


def test_the_stage_check_lets_store_ops_through() -> None:
    source = (
        "from contactcentre.store.ops import CaseTouched, HelloRows, ReadRecords\n"
        "from contactcentre.store import ops\n"
        "def f(centre, self):\n"
        "    centre.stage(CaseTouched('case-1', 1))\n"
        "    rows: HelloRows | None = None\n"
        "    rows = HelloRows(now_ms=1)\n"
        "    centre.stage(rows)\n"
        "    self.centre.stage(reads := ReadRecords())\n"
        "    self._reads = reads\n"
    )
    assert stage_violations(ROOT / "contactcentre" / "edge" / "example.py", source) == []
