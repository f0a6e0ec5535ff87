"""The project needs nothing beside it: a clone's tests read only its own files, and the
installed package carries the files its commands default to (a new user hit both)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from exporter.cli import EXAMPLE_CONFIG
from tests.conftest import ServeProcess
from tests.support.payloads import REPO, SIGNING_KEY

OUTSIDE = re.compile(rb"\.\./shared\b|shared/fixtures|[\"']shared[\"']")
"""A reference to the `shared/` folder beside the authors' checkout, which a clone elsewhere lacks
(the tests once read their fixtures from it, and failed at collection anywhere else)."""


def project_files() -> list[Path]:
    """The files a clone holds, plus new ones not yet committed: git's list, so .venv and .tools stay out."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name]


def test_no_file_refers_to_a_folder_beside_the_project() -> None:
    this = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(REPO))
        for path in project_files()
        if path.is_file() and path.resolve() != this and OUTSIDE.search(path.read_bytes())
    ]
    assert offenders == [], "copy what these need into the project (tests/fixtures/ for payloads)"


def test_simulate_finds_its_default_config_from_any_directory(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    """Run outside the repository, without --config, `simulate` plays the example config shipped in the package."""
    proc = serve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INNGEST_", "EXPORTER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "simulate", "--url", proc.url, "--count", "1", "--api-port", "0"],
        cwd=tmp_path, env={**env, "INNGEST_SIGNING_KEY": SIGNING_KEY}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent ")


def test_the_wheel_carries_the_example_config(tmp_path: Path) -> None:
    """A non-editable `pip install .` installs the default config: the wheel built from what the
    Dockerfile copies holds it, byte for byte (an editable install would find it without package data)."""
    context = tmp_path / "context"
    shutil.copytree(REPO / "exporter", context / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as packed:
        shipped = packed.read(Path(str(EXAMPLE_CONFIG)).relative_to(REPO).as_posix())
    assert shipped == EXAMPLE_CONFIG.read_bytes()
