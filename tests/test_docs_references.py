"""The repository stands alone: every Markdown document a file names is one the repository contains.

A comment or page that sends the reader to a document they cannot open is worse than none (the queueing
reference and the requirements once lived outside the repository and were cited from the code)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MD_NAME = re.compile(r"(?<![\w/.-])((?:\.\./|[\w.-]+/)*[\w.-]+\.md)\b")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in out.splitlines()]
    kinds = {".py", ".md", ".toml", ".html", ".js", ".txt", ".cfg", ""}
    # this file names invented missing documents on purpose, to show the check sees them
    return [f for f in files if f.suffix in kinds and f.is_file() and f != Path(__file__).resolve()]


def unresolved(path: Path, text: str) -> list[str]:
    missing = []
    for name in MD_NAME.findall(text):
        candidates = [path.parent / name, ROOT / name, ROOT / "docs" / name]
        if not any(c.resolve().is_file() and ROOT in c.resolve().parents for c in candidates):
            missing.append(name)
    return missing


def test_every_cited_document_is_in_the_repository() -> None:
    missing = {}
    for f in tracked_text_files():
        names = unresolved(f, f.read_text(encoding="utf-8", errors="replace"))
        if names:
            missing[str(f.relative_to(ROOT))] = names
    assert missing == {}


def test_the_check_sees_a_document_outside_the_repository() -> None:
    # invented names, so that this file names no real document outside the repository either
    assert unresolved(ROOT / "contactcentre" / "x.py", "see ../elsewhere/NOTES.md §2") == ["../elsewhere/NOTES.md"]
    assert unresolved(ROOT / "contactcentre" / "x.py", "see NOWHERE.md R7") == ["NOWHERE.md"]
    assert unresolved(ROOT / "contactcentre" / "x.py", "see docs/queueing.md") == []
