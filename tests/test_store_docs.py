"""docs/store.md names every column of every table, as the schema (``store/schema.py``) defines them.

The columns section is generated from the SQLAlchemy metadata — the schema the migrations are checked
against — so the document cannot fall behind a migration; ``UPDATE_DOCS=1`` rewrites it after a change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import Index, Table, UniqueConstraint

from contactcentre.store.schema import metadata

DOC = Path(__file__).resolve().parent.parent / "docs" / "store.md"
START = "<!-- columns: generated from contactcentre/store/schema.py -->\n"
END = "<!-- /columns -->"


def _keys(table: Table) -> list[str]:
    """The table's unique constraints and indexes, in words."""
    out = []
    for c in sorted(table.constraints, key=lambda c: [col.name for col in c.columns]):
        if isinstance(c, UniqueConstraint):
            out.append(f"unique ({', '.join(col.name for col in c.columns)})")
    for ix in sorted(table.indexes, key=lambda ix: [col.name for col in ix.columns]):
        assert isinstance(ix, Index)
        out.append(f"{'unique ' if ix.unique else ''}index ({', '.join(col.name for col in ix.columns)})")
    return out


def columns_section() -> str:
    parts = []
    for table in metadata.tables.values():
        rows = [f"### `{table.name}`", "", "| column | type | NULL | key |", "|---|---|---|---|"]
        for col in table.columns:
            key = "primary key" if col.primary_key else ""
            key += ", ".join(f"→ `{fk.target_fullname}`" for fk in col.foreign_keys)
            if col.unique:
                key += " unique"
            rows.append(f"| `{col.name}` | {col.type} | {'yes' if col.nullable else 'no'} | {key.strip()} |")
        keys = _keys(table)
        if keys:
            rows += ["", f"Also: {'; '.join(keys)}."]
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def test_docs_store_md_names_every_column_of_the_schema() -> None:
    before, start, tail = DOC.read_text(encoding="utf-8").partition(START)
    section, end, after = tail.partition(END)
    assert start and end, "docs/store.md lacks its columns markers"
    if os.environ.get("UPDATE_DOCS"):
        section = columns_section()
        DOC.write_text(before + start + section + end + after, encoding="utf-8")
    assert section == columns_section(), (
        "docs/store.md's columns are stale: UPDATE_DOCS=1 pytest tests/test_store_docs.py"
    )


def test_docs_ivr_md_shows_the_json_ivr_stats_prints() -> None:
    """docs/ivr.md's `ivr-stats --json` example is what three calls through the `main` node of its text
    report example really give (one queued, one self-served after a wrong key, one hung up)."""
    from contactcentre.reporting.ivr_stats import IvrStats
    from contactcentre.telephony.ivr.actions import InputFailed, NodeEntered, NodeExited, SessionFinished

    text = (DOC.parent / "ivr.md").read_text(encoding="utf-8")
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    stats = IvrStats()
    for call, exit_cause, outcome in (("c1", "option:1", "queued"), ("c2", "option:3", "self_served")):
        stats.add([NodeEntered(call_id=call, at_ms=0, node="main")])
        if outcome == "self_served":
            stats.add([InputFailed(call_id=call, at_ms=1, node="main", cause="invalid", attempt=1)])
        stats.add([NodeExited(call_id=call, at_ms=2, node="main", cause=exit_cause)])
        stats.add([SessionFinished(call_id=call, at_ms=3, outcome=outcome, node="main")])
    stats.add(
        [
            NodeEntered(call_id="c3", at_ms=0, node="main"),
            NodeExited(call_id="c3", at_ms=2, node="main", cause="hangup"),
        ]
    )
    stats.add([SessionFinished(call_id="c3", at_ms=3, outcome="abandoned", node="main")])
    assert json.loads(json.dumps(stats.as_dict())) == example
