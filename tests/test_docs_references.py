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


PY_PATH = re.compile(r"(?<![\w/.-])((?:[\w-]+/)+[\w-]+\.(?:py|toml|js|css|html|txt))(?![\w.])")
#: a path broken over a line end right after a slash (``contactcentre/edge/web/static/`` / ``chat.js``)
WRAPPED = re.compile(r"/\n[ \t#*>]*(?:(?:#|//|\*)[ \t]*)?")


def unresolved_paths(path: Path, text: str) -> list[str]:
    """Source paths with a folder in them (``edge/web/api.py``, ``benchmarks/routing.py``) that name no file:
    read from the repository, from the package, from the shipped configuration (whose IVR menus are named
    relative to it), or from the naming file's own folder and those above it."""
    missing = []
    for name in PY_PATH.findall(WRAPPED.sub("/", text)):
        web = ROOT / "contactcentre" / "edge" / "web"  # docs/web.md names static/ and templates/ from there
        bases = [ROOT, ROOT / "contactcentre", ROOT / "contactcentre" / "data", web, *path.parents]
        if not any((base / name).is_file() for base in bases):
            missing.append(name)
    return missing


def test_every_named_source_file_exists() -> None:
    """The package was re-laid out once; a page or comment that still names the old place misleads."""
    missing = {}
    for f in tracked_text_files():
        if f.name.startswith("test_"):  # tests name files that are missing on purpose (a menu that is not there)
            continue
        names = unresolved_paths(f, f.read_text(encoding="utf-8", errors="replace"))
        if names:
            missing[str(f.relative_to(ROOT))] = names
    assert missing == {}


def test_the_check_sees_a_source_file_that_moved() -> None:
    assert unresolved_paths(ROOT / "docs" / "x.md", "see `channels/chat.py`") == ["channels/chat.py"]
    assert unresolved_paths(ROOT / "docs" / "x.md", "see `edge/chat/channel.py`") == []
    assert unresolved_paths(ROOT / "README.md", "see benchmarks/routing.py") == []
    assert unresolved_paths(ROOT / "docs" / "x.md", "(`contactcentre/web/static/\nchat.js`)") == [
        "contactcentre/web/static/chat.js"
    ]
