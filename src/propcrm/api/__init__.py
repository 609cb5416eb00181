"""The HTTP API (FastAPI): thin routers over the services; ``create_app`` is the composition root."""

from .app import create_app

__all__ = ["create_app"]
