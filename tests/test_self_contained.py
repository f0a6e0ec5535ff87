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
