"""Every router of the web application, in one list (``propcrm.web.mount`` includes them).

One module per area; each owns its templates under ``templates/<area>/``.
"""

from __future__ import annotations

import importlib

_MODULES = ("session", "live", "accounts", "decisions", "cases", "payouts", "packs", "audit", "dashboard", "portal")


def _load():
    routers = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # an area not written yet
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        routers.extend(getattr(module, "routers", None) or [module.router])
    return routers


ROUTERS = _load()
