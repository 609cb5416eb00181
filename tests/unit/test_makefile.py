"""What `make run` and `make test` would do (``make -n``: printed, not run): install from the right lock file
with hashes, reinstall when a lock changes, and start the server where ``PORT``/``HOST`` say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(*args: str) -> list[str]:
    """The commands ``make`` would run for ``args`` with every target out of date (``-B``), without running them."""
    result = subprocess.run(["make", "--no-print-directory", "-n", "-B", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bpip install\b", c)]


def test_make_run_installs_only_the_run_lock_with_hashes_then_the_project_with_the_locked_setuptools():
    installs = pip_installs(planned("run"))
    assert installs == [
        ".venv/bin/python -m pip install --quiet --require-hashes -r requirements/run.txt",
        ".venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .",
    ]


def test_make_test_installs_the_test_lock_with_hashes():
    installs = pip_installs(planned("test"))
    assert installs == [
        ".venv/bin/python -m pip install --quiet --require-hashes -r requirements/test.txt",
        ".venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .",
    ]


def test_a_changed_lock_file_reinstalls():
    rules = subprocess.run(["make", "--no-print-directory", "-p", "-n", "-q", "run"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60).stdout
    prerequisites = {target: deps.split("|")[0].split() for target, deps in
                     re.findall(r"^(\.venv/\.installed-\w+):(.*)$", rules, flags=re.M)}
    assert "requirements/run.txt" in prerequisites[".venv/.installed-run"]
    assert "requirements/test.txt" in prerequisites[".venv/.installed-test"]
    assert all("pyproject.toml" in deps for deps in prerequisites.values())


def test_make_run_serves_on_the_port_and_address_asked_for():
    assert planned("run")[-1] == ".venv/bin/propcrm serve --demo --host 127.0.0.1 --port 8000"
    assert planned("run", "PORT=8123", "HOST=0.0.0.0")[-1] == ".venv/bin/propcrm serve --demo --host 0.0.0.0 --port 8123"
