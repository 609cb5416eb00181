"""propcrm: an open, self-hosted operating system for proprietary trading firms."""

__version__ = "0.1.0"
