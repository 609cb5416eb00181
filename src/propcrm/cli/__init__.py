"""The ``propcrm`` command (Typer): one module per command group, :data:`app` the entry point.

``main`` holds the root app and the engine, audit, keys, ingest, serve and account commands; the feature
groups (analytics, lifecycle, cluster, platforms with import and simulator, users, packs rebind and halts) register theirs here,
in this order (the order of ``propcrm --help``). Shared helpers are in ``common``.
"""

from __future__ import annotations

from . import analytics, cluster, firms, governance, lifecycle, people, platforms
from .main import app, bench_app, packs_app, users_app

for _feature in (analytics, lifecycle, cluster, platforms):
    _feature.register(app, bench_app)
people.register(users_app)
governance.register(packs_app, app, bench_app)
firms.register(app)  # issue 16: tenants

__all__ = ["app"]
