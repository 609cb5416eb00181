"""E-mail over SMTP (stdlib ``smtplib``): plain-text messages to a trader and/or the firm's risk desk."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..delivery import DeliveryError


class EmailNotifier:
    """Sends one message per call over a fresh SMTP connection (notifications are rare; no pooling).

    ``starttls`` upgrades a plain connection (port 587); ``use_ssl`` speaks TLS from the first byte
    (port 465). ``username``/``password`` log in when given; the password never appears in errors,
    logs or ``repr``. ``risk_address`` is the firm's risk desk, told about the kinds in ``risk_kinds``.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "propcrm@localhost",
        *,
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        risk_address: str | None = None,
        risk_kinds: tuple[str, ...] = ("breach", "pause", "violation", "near_breach"),
        notify_traders: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if starttls and use_ssl:
            raise ValueError("choose STARTTLS or implicit TLS (SSL), not both")
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.username = username
        self._password = password
        self.timeout = timeout
        self.risk_address = risk_address
        self.risk_kinds = tuple(risk_kinds)
        self.notify_traders = notify_traders
        self._ssl_context = ssl_context

    def __repr__(self) -> str:  # never the password
        return (f"EmailNotifier({self.host!r}, {self.port}, sender={self.sender!r}, starttls={self.starttls}, "
                f"use_ssl={self.use_ssl}, login={'yes' if self.username else 'no'})")

    def message(self, *, to: str, subject: str, body: str, idempotency_key: str | None = None) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        if idempotency_key:
            msg["X-Propcrm-Idempotency-Key"] = idempotency_key
        msg.set_content(body)
        return msg

    def send(self, *, to: str, subject: str, body: str, idempotency_key: str | None = None) -> None:
        msg = self.message(to=to, subject=subject, body=body, idempotency_key=idempotency_key)
        where = f"SMTP server {self.host}:{self.port}"
        context = self._ssl_context or ssl.create_default_context()
        try:
            if self.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.starttls:
                    client.starttls(context=context)
                if self.username:
                    client.login(self.username, self._password or "")
                refused = client.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"{where} refused the login (SMTP {exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(f"{where} refused the recipient") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where} answered SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        if refused:
            raise DeliveryError(f"{where} refused the recipient")

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "<secret>")
        return text[:300]


__all__ = ["EmailNotifier"]
