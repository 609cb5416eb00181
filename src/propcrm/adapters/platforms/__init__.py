"""Platform connectors: how enforcement reaches a trading platform (disable, pause, resume, create…)."""

from .connectors import LoggingConnector, PlatformConnector, SignedWebhookConnector

__all__ = ["LoggingConnector", "PlatformConnector", "SignedWebhookConnector"]
