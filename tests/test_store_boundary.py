"""SQL lives in ``contactcentre/store/``: adapters, web, CLIs, the simulator and the server's wiring call named
store functions (through ``Centre.read`` / ``write`` / ``stage``) and never build a statement themselves. So no
module outside the store imports SQLAlchemy or a table of the store's schema (constants such as ``ROLES`` are
fine). The store's handle types are named through ``contactcentre.store.db`` for type hints."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import Table

from contactcentre.store import schema

ROOT = Path(__file__).resolve().parent.parent
CHECKED = [ROOT / "contactcentre"]
STORE = ROOT / "contactcentre" / "store"


def _modules() -> list[Path]:
    return [p for top in CHECKED for p in sorted(top.rglob("*.py")) if STORE not in p.parents]


def _offences(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "sqlalchemy":
                out.append(f"from {node.module} import ...")
            elif node.module == "contactcentre.store.schema":
                tables = [a.name for a in node.names if isinstance(getattr(schema, a.name, None), Table)]
                out += [f"from contactcentre.store.schema import {t}" for t in tables]
            elif node.module == "contactcentre.store" and any(a.name == "schema" for a in node.names):
                out.append("from contactcentre.store import schema")
    return [f"{path.relative_to(root)}:{line}" for line in out]


def test_the_checker_finds_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "adapter.py"
    sample.write_text(
        "from sqlalchemy import select\nimport sqlalchemy.exc\n"
        "from contactcentre.store.schema import ROLES, messages\nfrom contactcentre.store import schema\n"
    )
    assert _offences(sample, tmp_path) == [
        "adapter.py:from sqlalchemy import ...",
        "adapter.py:import sqlalchemy.exc",
        "adapter.py:from contactcentre.store.schema import messages",
        "adapter.py:from contactcentre.store import schema",
    ]


def test_no_module_outside_the_store_imports_sqlalchemy_or_a_table() -> None:
    modules = _modules()
    assert len(modules) > 50  # the walk found the package
    assert [o for path in modules for o in _offences(path)] == []
