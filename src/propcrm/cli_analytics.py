"""`propcrm` commands of the analytics feature (filled in by its issue).

Keep imports of heavy modules inside the commands: every `propcrm` invocation imports this module.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this feature's commands to the `propcrm` app (and its `bench` group)."""
