"""How propcrm's processes log: one line per record, time, level, logger, message (to stderr)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """The process's logging, unless it is configured already (then nothing changes: ``basicConfig``)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


__all__ = ["LOG_FORMAT", "configure_logging"]
