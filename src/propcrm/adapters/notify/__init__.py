"""Telling people about decisions: e-mail (SMTP), signed webhooks to a firm's own systems, in-app.

The dispatcher (``services/dispatch.py``) turns one ``notify`` outbox message into in-app
notifications (written in the same transaction) and one outbox message per e-mail recipient and per
webhook, each delivered and retried on its own.
"""

from .email import EmailNotifier
from .inapp import add_in_app, in_app_recipients
from .notices import Notice, notice_of
from .webhook import WebhookNotifier

__all__ = ["EmailNotifier", "Notice", "WebhookNotifier", "add_in_app", "in_app_recipients", "notice_of"]
