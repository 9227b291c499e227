"""A non-editable install works from any directory: the wheel carries the shipped configuration, IVR menu,
scenarios, templates, static files and the migration template, and the demo runs from that install with the
working directory somewhere else (no ``config/`` beside it to fall back on)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [
    "contactcentre/data/default.toml",
    "contactcentre/data/ivr/main.toml",
    "contactcentre/data/scenarios/e8_mmc.toml",
    "contactcentre/edge/web/templates/dashboard.html",
    "contactcentre/edge/web/static/console.js",
    "contactcentre/edge/email/templates/ack_email.txt",
    "contactcentre/store/migrations/script.py.mako",
    "contactcentre/store/migrations/versions/0001_case_store.py",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # a copy of the tracked tree, so the build leaves nothing in the checkout (build/, *.egg-info)
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src, dst = ROOT / name, build / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(build)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("contactcentre-*.whl")
    return found


def test_the_wheel_ships_what_the_centre_reads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert missing == [], missing
    assert not any(n.startswith(("tests/", "benchmarks/", "simulator/", "config/")) for n in names)


def test_the_demo_runs_from_the_installed_package_elsewhere(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import contactcentre; print(contactcentre.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(site / "contactcentre" / "__init__.py")  # the unpacked wheel, not the checkout
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "contactcentre.cli",
            "demo",
            "--port",
            "0",
            "--duration",
            "3",
            "--database",
            str(elsewhere / "demo.sqlite"),
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "contactcentre demo: stopped" in demo.stdout + demo.stderr
