"""Tables of the lifecycle feature (filled in by its issue)."""

from __future__ import annotations

from .models import Base  # noqa: F401
