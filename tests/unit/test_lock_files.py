"""The lock files agree with pyproject.toml, so `make run` and `make test` install what the project declares.

`make run` installs ``requirements/run.txt`` and `make test` ``requirements/test.txt`` (exact versions with hashes,
made by `make lock` from pyproject.toml and ``requirements/install-tools.in``). A dependency added to, removed from
or re-ranged in pyproject.toml without `make lock` fails here, not on the next fresh machine.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUN_LOCK = ROOT / "requirements" / "run.txt"
TEST_LOCK = ROOT / "requirements" / "test.txt"
INSTALL_TOOLS = ROOT / "requirements" / "install-tools.in"
PROJECT_SOURCE = "propcrm (pyproject.toml)"
INSTALL_TOOLS_SOURCE = "-r requirements/install-tools.in"
# what only the tests need: never installed by `make run`
TEST_ONLY = {"pytest", "hypothesis", "schemathesis", "playwright", "aiosmtpd", "jsonschema"}


@dataclass
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def read_lock(text: str) -> list[Pin]:
    """The pins of a lock file in uv's / pip-compile's format: ``name==version [; marker] \\``, hashes, ``# via`` lines."""
    pins: list[Pin] = []
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "\t", "#")):
            match = _PIN.match(line)
            assert match, f"not an exact pin: {raw!r}"
            pins.append(Pin(canonicalize_name(match["name"]), match["version"], match["marker"]))
            in_via = False
        elif line.startswith("--hash="):
            pins[-1].hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
        elif pins and line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                pins[-1].via.append(rest)
        elif pins and in_via and line.startswith("#   "):
            pins[-1].via.append(line.removeprefix("#").strip())
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _install_tools() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in INSTALL_TOOLS.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def _by_name(pins: list[Pin]) -> dict[str, list[Pin]]:
    found: dict[str, list[Pin]] = {}
    for pin in pins:
        found.setdefault(pin.name, []).append(pin)
    return found


def disagreements(lock_text: str, *, declared: list[Requirement], sources: set[str]) -> list[str]:
    """What is wrong between the requirements declared (pyproject.toml, install-tools.in) and one lock file.

    Every declared requirement must be pinned (each marker fork of it) to a version its specifier allows, every pin
    carries a hash, and the lock's direct dependencies (``# via propcrm (pyproject.toml)``) are exactly the declared
    ones — a dependency removed from pyproject.toml must leave the lock too.
    """
    problems: list[str] = []
    pins = read_lock(lock_text)
    locked = _by_name(pins)
    for pin in pins:
        if not pin.hashes:
            problems.append(f"{pin.name}=={pin.version} has no hash")
    wanted = {canonicalize_name(req.name) for req in declared}
    for req in declared:
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req} is declared but not in the lock (run `make lock`)")
            continue
        for pin in locked[name]:
            if not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{req} is declared but the lock pins {pin.name}=={pin.version} (run `make lock`)")
    direct = {pin.name for pin in pins if sources.intersection(pin.via)}
    for name in sorted(direct - wanted):
        problems.append(f"{name} is in the lock as a direct dependency but no longer declared (run `make lock`)")
    return problems


def _runtime() -> list[Requirement]:
    return [Requirement(dep) for dep in _pyproject()["project"]["dependencies"]]


def _test_extra() -> list[Requirement]:
    return [Requirement(dep) for dep in _pyproject()["project"]["optional-dependencies"]["test"]]


@pytest.mark.parametrize("lock, declared", [
    (RUN_LOCK, lambda: _runtime() + _install_tools()),
    (TEST_LOCK, lambda: _runtime() + _test_extra() + _install_tools()),
], ids=["run", "test"])
def test_the_lock_pins_every_declared_dependency_within_its_range(lock, declared):
    problems = disagreements(lock.read_text(encoding="utf-8"), declared=declared(),
                             sources={PROJECT_SOURCE, INSTALL_TOOLS_SOURCE})
    assert problems == [], f"{lock.relative_to(ROOT)} disagrees with pyproject.toml:\n" + "\n".join(problems)


def test_the_run_lock_holds_no_test_tools():
    names = {pin.name for pin in read_lock(RUN_LOCK.read_text(encoding="utf-8"))}
    assert names.isdisjoint(TEST_ONLY), f"`make run` would install {sorted(names & TEST_ONLY)}"
    assert TEST_ONLY - {canonicalize_name(r.name) for r in _test_extra()} == set(), "TEST_ONLY names a package no longer a test extra"


def test_running_and_testing_install_the_same_versions_of_what_both_need():
    run = {(pin.name, pin.marker): pin.version for pin in read_lock(RUN_LOCK.read_text(encoding="utf-8"))}
    test = {(pin.name, pin.marker): pin.version for pin in read_lock(TEST_LOCK.read_text(encoding="utf-8"))}
    assert set(run) <= set(test), f"in run.txt but not test.txt: {sorted(set(run) - set(test))}"
    assert {key: (run[key], test[key]) for key in run if run[key] != test[key]} == {}


def test_the_build_backend_and_pip_are_pinned_so_the_editable_install_fetches_nothing():
    build_requires = [Requirement(r) for r in _pyproject()["build-system"]["requires"]]
    tools = {canonicalize_name(r.name) for r in _install_tools()}
    assert {canonicalize_name(r.name) for r in build_requires} <= tools, "install-tools.in must list the build backend"
    assert "pip" in tools
    for lock in (RUN_LOCK, TEST_LOCK):
        problems = disagreements(lock.read_text(encoding="utf-8"), declared=build_requires, sources=set())
        assert problems == [], f"{lock.name}: " + "; ".join(problems)


# ---- the checker itself: it notices what it is for --------------------------------------------------------------

_LOCK = """\
# made by make lock
alpha==1.2.0 \\
    --hash=sha256:aa
    # via propcrm (pyproject.toml)
beta==2.0 ; python_full_version < '3.12' \\
    --hash=sha256:bb
    # via
    #   propcrm (pyproject.toml)
    #   alpha
beta==3.0 ; python_full_version >= '3.12' \\
    --hash=sha256:cc
    # via
    #   propcrm (pyproject.toml)
    #   alpha
gamma==0.1 \\
    --hash=sha256:dd
    # via beta
"""


def _check(*declared: str) -> list[str]:
    return disagreements(_LOCK, declared=[Requirement(d) for d in declared], sources={PROJECT_SOURCE})


def test_the_checker_accepts_a_lock_that_matches():
    assert _check("alpha>=1", "beta>=2") == []


def test_the_checker_names_a_dependency_missing_from_the_lock():
    assert _check("alpha>=1", "beta>=2", "delta>=1") == ["delta>=1 is declared but not in the lock (run `make lock`)"]


def test_the_checker_names_a_pin_outside_the_declared_range_in_any_marker_fork():
    assert _check("alpha>=1", "beta>=2,<3") == ["beta<3,>=2 is declared but the lock pins beta==3.0 (run `make lock`)"]


def test_the_checker_names_a_dependency_removed_from_pyproject():
    assert _check("alpha>=1") == ["beta is in the lock as a direct dependency but no longer declared (run `make lock`)"]


def test_the_checker_names_a_pin_without_hash():
    assert disagreements("alpha==1.2.0\n    # via propcrm (pyproject.toml)\n", declared=[Requirement("alpha")],
                         sources={PROJECT_SOURCE}) == ["alpha==1.2.0 has no hash"]
