"""The ``propcrm`` command run in this process, answered as a process would be.

Starting ``python -m propcrm.cli`` costs ~0.7 s CPU of interpreter start and imports (more where no bytecode
is written) for a command that takes milliseconds; typer's runner gives the same exit status, stdout and
stderr. Tests that need a real process (the entry point, a real exit status) start one themselves.
"""

from __future__ import annotations

import subprocess

from typer.testing import CliRunner


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Exit status, stdout and stderr (bytes) apart; an exception the command does not turn into an exit
    status propagates (a process would exit 1 with its traceback)."""
    from propcrm.cli import app

    result = CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout_bytes, result.stderr_bytes)
