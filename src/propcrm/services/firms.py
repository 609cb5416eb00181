"""Firms as tenants: onboarding by the operator, and each firm's own settings (issue 16, docs/tenants.md).

The **operator** (role ``operator``, created on the command line) runs the installation for many firms:
it onboards a firm together with its first admin (a password generated here and shown once), lists the
firms and sets any firm's settings. A firm's **admin** sets its own firm's settings, never another's.

A firm's settings (``firm_settings``, one row per firm that set something) are:

- branding: the display name (``firms.name``: e-mail subjects, PDFs), the product name in the header and
  page titles, an accent colour, a logo (kept in the document store, ``adapters/documents.py``);
- notifications: SMTP host, port, sender, user and password; the risk desk's e-mail address;
- the firm webhook: URL and signing secret.

Whatever a firm leaves empty falls back to the process's environment (``PROPCRM_SMTP_*``,
``PROPCRM_RISK_EMAIL``, ``PROPCRM_FIRM_WEBHOOK_*``) — :func:`channels_for` is that precedence, used by the
dispatcher per message. Secrets (webhook secret, SMTP password) are sealed with the secret store's key
(``adapters/platforms/secrets.py``), are write-only (the answer says only whether one is set) and never
reach the audit log or a log line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_tenants import FirmSettings
from ..adapters.documents import DocumentStore
from ..adapters.notify import EmailNotifier, WebhookNotifier
from ..adapters.platforms.secrets import SecretBox
from ..adapters.settings import Delivery
from . import audit
from .errors import Conflict, Invalid, NotFound
from .passwords import generate_password

UTC = dt.timezone.utc
DEFAULT_PRODUCT = "propcrm"
DEFAULT_ACCENT = "#1f5eff"
MAX_LOGO_BYTES = 256 * 1024
SECRET_FIELDS = ("webhook_secret", "smtp_password")
TEXT_FIELDS = ("name", "product_name", "accent_colour", "smtp_host", "smtp_port", "smtp_sender", "smtp_user",
               "risk_email", "webhook_url")
SETTINGS_FIELDS = (*TEXT_FIELDS, *SECRET_FIELDS)

_FIRM_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}[a-z0-9]")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")


# --------------------------------------------------------------------------------------------------
# onboarding


@dataclass(frozen=True)
class Onboarded:
    firm: m.Firm
    admin: m.User
    password: str
    """The admin's first password: shown on this answer only, then only its argon2 hash exists."""


def create_firm(session: Session, *, firm_id: str, name: str, admin_email: str, actor: str,
                settings: Mapping[str, Any] | None = None, box: SecretBox | None = None) -> Onboarded:
    """A new firm with its first admin (and, optionally, its first settings), in the caller's transaction."""
    from . import users as user_service

    firm_id = (firm_id or "").strip().lower()
    if not _FIRM_ID.fullmatch(firm_id):
        raise Invalid("firm: 3–64 lowercase letters, digits and hyphens (it is typed at every login)")
    name = _text("name", name, 200)
    if not name:
        raise Invalid("name: the firm's display name is required")
    if session.get(m.Firm, firm_id) is not None:
        raise Conflict(f"a firm {firm_id!r} exists already")
    firm = m.Firm(id=firm_id, name=name, created_at=dt.datetime.now(UTC))
    session.add(firm)
    session.flush()
    audit.append(session, actor=actor, action="firm.created", entity="firm", entity_id=firm_id,
                 after={"name": name, "admin": user_service.normalise_email(admin_email)}, firm_id=firm_id)
    password = generate_password()
    admin = user_service.create_user(session, firm_id=firm_id, email=admin_email, password=password, role="admin",
                                     actor=actor)
    admin.must_change_password = True  # the operator saw it: the admin chooses their own at first login
    if settings:
        update_settings(session, firm_id=firm_id, changes=settings, actor=actor, box=box)
    return Onboarded(firm=firm, admin=admin, password=password)


@dataclass(frozen=True)
class FirmRow:
    id: str
    name: str
    created_at: dt.datetime
    users: int
    accounts: int
    product_name: str
    suspended_at: dt.datetime | None = None
    suspended_reason: str | None = None


def list_firms(session: Session) -> list[FirmRow]:
    users = dict(session.execute(select(m.User.firm_id, func.count()).group_by(m.User.firm_id)).all())
    accounts = dict(session.execute(select(m.Account.firm_id, func.count()).group_by(m.Account.firm_id)).all())
    products = dict(session.execute(select(FirmSettings.firm_id, FirmSettings.product_name)).all())
    return [FirmRow(id=f.id, name=f.name, created_at=f.created_at, users=users.get(f.id, 0),
                    accounts=accounts.get(f.id, 0), product_name=products.get(f.id) or DEFAULT_PRODUCT,
                    suspended_at=f.suspended_at, suspended_reason=f.suspended_reason)
            for f in session.scalars(select(m.Firm).order_by(m.Firm.id))]


def get_firm(session: Session, firm_id: str) -> m.Firm:
    firm = session.get(m.Firm, firm_id) if isinstance(firm_id, str) and len(firm_id) <= 64 else None
    if firm is None:
        raise NotFound(f"no firm {str(firm_id)[:64]!r}")
    return firm


# --------------------------------------------------------------------------------------------------
# settings


def _text(field: str, value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Invalid(f"{field}: text expected")
    text = str(value).strip()
    if len(text) > limit or not text.isprintable():
        raise Invalid(f"{field}: at most {limit} printable characters")
    return text


def _clean(field: str, value: Any) -> Any:
    """One field's new value, checked (``None``: cleared, so the default applies again)."""
    if field == "name":
        text = _text(field, value, 200)
        if not text:
            raise Invalid("name: the firm's display name cannot be empty")
        return text
    if field == "product_name":
        return _text(field, value, 80) or None
    if field == "accent_colour":
        text = _text(field, value, 7)
        if text and not _COLOUR.fullmatch(text):
            raise Invalid("accent_colour: a colour like #1f5eff")
        return text.lower() or None
    if field == "smtp_host":
        text = _text(field, value, 255)
        if text and not _HOST.fullmatch(text):
            raise Invalid("smtp_host: a host name or address, like smtp.example.com")
        return text or None
    if field == "smtp_port":
        text = _text(field, value, 5)
        if not text:
            return None
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise Invalid("smtp_port: a port number from 1 to 65535")
        return int(text)
    if field in ("smtp_sender", "risk_email"):
        text = _text(field, value, 320).lower()
        if text and not _EMAIL.fullmatch(text):
            raise Invalid(f"{field}: an e-mail address")
        return text or None
    if field == "smtp_user":
        return _text(field, value, 200) or None
    if field == "webhook_url":
        text = _text(field, value, 500)
        if not text:
            return None
        try:
            parts = urlsplit(text)
            host = parts.hostname
        except ValueError:  # "http://[" and the like
            parts, host = None, None
        if parts is None or parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
            raise Invalid("webhook_url: an http(s) address without a user name or password in it")
        return text
    if field in SECRET_FIELDS:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > 500 or not value.isprintable():
            raise Invalid(f"{field}: at most 500 printable characters")
        return value
    raise Invalid(f"{field}: not a setting (one of {', '.join(SETTINGS_FIELDS)})")


def settings_row(session: Session, firm_id: str) -> FirmSettings | None:
    return session.get(FirmSettings, firm_id)


def update_settings(session: Session, *, firm_id: str, changes: Mapping[str, Any], actor: str,
                    box: SecretBox | None = None) -> FirmSettings:
    """Apply ``changes`` (only the fields given; an empty value clears one, a secret included) — all or
    nothing: every field is checked before any is written. Audited with the names of the fields, never
    a secret's value."""
    firm = get_firm(session, firm_id)
    unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
    if unknown:
        raise Invalid(f"{unknown[0]}: not a setting (one of {', '.join(SETTINGS_FIELDS)})")
    cleaned = {field: _clean(field, value) for field, value in changes.items()}
    row = session.get(FirmSettings, firm_id)
    _check_webhook(row, cleaned, box)
    if row is None:
        row = FirmSettings(firm_id=firm_id, updated_at=dt.datetime.now(UTC))
        session.add(row)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for field, value in cleaned.items():
        if field in SECRET_FIELDS:
            continue
        old = firm.name if field == "name" else getattr(row, field)
        if old != value:
            before[field], after[field] = old, value
            if field == "name":
                firm.name = value
            else:
                setattr(row, field, value)
    secrets_given = {f: cleaned[f] for f in SECRET_FIELDS if f in cleaned}
    if secrets_given:
        box = box or SecretBox()
        current = {k: v.reveal() for k, v in box.open(row.sealed).items()}
        for field, value in secrets_given.items():
            if value is None:
                if field in current:
                    del current[field]
                    after[field] = "cleared"
            elif current.get(field) != value:
                current[field] = value
                after[field] = "set"
        row.sealed = box.seal(current) if current else None
    if after:
        row.updated_at = dt.datetime.now(UTC)
        row.updated_by = actor
        audit.append(session, actor=actor, action="firm.settings_changed", entity="firm", entity_id=firm_id,
                     before=before, after=after, firm_id=firm_id)
    session.flush()
    return row


def _check_webhook(row: FirmSettings | None, cleaned: Mapping[str, Any], box: SecretBox | None) -> None:
    """A firm's own webhook URL needs its own signing secret: without one the dispatcher would keep
    sending the firm's notifications to the default webhook (channels_for), which nobody would notice."""
    url = cleaned["webhook_url"] if "webhook_url" in cleaned else (row.webhook_url if row is not None else None)
    if not url:
        return
    if "webhook_secret" in cleaned:
        has_secret = cleaned["webhook_secret"] is not None
    else:
        has_secret = row is not None and bool(row.sealed) and "webhook_secret" in (box or SecretBox()).open(row.sealed)
    if not has_secret:
        raise Invalid("webhook_secret: a firm webhook URL needs its own signing secret (set both, or clear the URL "
                      "to use the default webhook)")


# --------------------------------------------------------------------------------------------------
# suspension (the operator's)


def suspend_firm(session: Session, *, firm_id: str, reason: str, actor: str) -> m.Firm:
    """Suspend a firm: its users cannot log in, its sessions, tokens and API keys are refused, its ingestion
    answers 403 (users.suspension, the ingestion route). Its stored events and their evaluation stay."""
    firm = get_firm(session, firm_id)
    reason = _text("reason", reason, 500)
    if not reason:
        raise Invalid("reason: say why the firm is suspended (its users are told)")
    if firm.suspended_at is not None:
        raise Conflict(f"the firm {firm_id!r} is suspended already (since {firm.suspended_at:%Y-%m-%d %H:%M} UTC)")
    firm.suspended_at, firm.suspended_reason = dt.datetime.now(UTC), reason
    audit.append(session, actor=actor, action="firm.suspended", entity="firm", entity_id=firm_id,
                 after={"reason": reason}, firm_id=firm_id)
    session.flush()
    return firm


def resume_firm(session: Session, *, firm_id: str, reason: str, actor: str) -> m.Firm:
    """Lift a firm's suspension: logins, tokens not expired meanwhile, API keys and ingestion work again."""
    firm = get_firm(session, firm_id)
    reason = _text("reason", reason, 500)
    if not reason:
        raise Invalid("reason: say why the firm is resumed")
    if firm.suspended_at is None:
        raise Conflict(f"the firm {firm_id!r} is not suspended")
    before = {"suspended_at": firm.suspended_at.isoformat(), "reason": firm.suspended_reason}
    firm.suspended_at, firm.suspended_reason = None, None
    audit.append(session, actor=actor, action="firm.resumed", entity="firm", entity_id=firm_id,
                 before=before, after={"reason": reason}, firm_id=firm_id)
    session.flush()
    return firm


def set_logo(session: Session, *, firm_id: str, store: DocumentStore, data: bytes, actor: str) -> FirmSettings:
    """The firm's logo: a PNG or JPEG of at most :data:`MAX_LOGO_BYTES`, kept in the document store."""
    get_firm(session, firm_id)
    if not data:
        raise Invalid("logo: choose an image file")
    if len(data) > MAX_LOGO_BYTES:
        raise Invalid(f"logo: at most {MAX_LOGO_BYTES // 1024} KB")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        kind = "image/jpeg"
    else:
        raise Invalid("logo: a PNG or JPEG image")
    row = session.get(FirmSettings, firm_id)
    if row is None:
        row = FirmSettings(firm_id=firm_id, updated_at=dt.datetime.now(UTC))
        session.add(row)
    old = row.logo_key
    row.logo_key, row.logo_type = store.put(data), kind
    row.updated_at, row.updated_by = dt.datetime.now(UTC), actor
    audit.append(session, actor=actor, action="firm.logo_changed", entity="firm", entity_id=firm_id,
                 after={"type": kind, "bytes": len(data)}, firm_id=firm_id)
    session.flush()
    if old:
        store.delete(old)
    return row


def logo(session: Session, *, firm_id: str, store: DocumentStore) -> tuple[bytes, str] | None:
    row = session.get(FirmSettings, firm_id)
    if row is None or not row.logo_key:
        return None
    try:
        return store.read(row.logo_key), row.logo_type or "application/octet-stream"
    except (OSError, ValueError):
        return None


def describe(session: Session, *, firm_id: str, defaults: Delivery, box: SecretBox | None = None) -> dict[str, Any]:
    """A firm's settings as the API and the pages show them: each value with where it comes from (``firm``
    or ``default``: the deployment's ``defaults``, ``settings.delivery`` of the entry point); secrets only
    as ``…_set``."""
    firm = get_firm(session, firm_id)
    row = session.get(FirmSettings, firm_id)
    sealed = (box or SecretBox()).open(row.sealed) if row is not None and row.sealed else {}
    own = {field: (getattr(row, field) if row is not None else None) for field in TEXT_FIELDS if field != "name"}
    defaults = {"product_name": DEFAULT_PRODUCT, "accent_colour": DEFAULT_ACCENT,
                "smtp_host": defaults.smtp_host, "smtp_port": defaults.smtp_port,
                "smtp_sender": defaults.smtp_sender,
                "smtp_user": (defaults.smtp_user or "").strip() or None,
                "risk_email": defaults.risk_email,
                "webhook_url": _safe(defaults.webhook_url or "") or None}
    effective = {field: {"value": own[field] if own[field] is not None else defaults[field],
                         "source": "firm" if own[field] is not None else "default"} for field in own}
    return {
        "id": firm.id, "name": firm.name, "created_at": firm.created_at,
        **own,
        "webhook_secret_set": "webhook_secret" in sealed, "smtp_password_set": "smtp_password" in sealed,
        "has_logo": bool(row is not None and row.logo_key),
        "effective": effective,
        "updated_at": row.updated_at if row is not None else None,
        "updated_by": row.updated_by if row is not None else None,
    }


def _safe(url: str) -> str:
    from ..adapters.delivery import safe_url

    return safe_url(url) if url else ""


# --------------------------------------------------------------------------------------------------
# branding (header, titles, e-mails, PDFs)


@dataclass(frozen=True)
class Branding:
    firm_id: str
    name: str
    product: str = DEFAULT_PRODUCT
    accent: str = DEFAULT_ACCENT
    has_logo: bool = False
    version: str = ""
    """Changes whenever the settings do: a cache key for the stylesheet and the logo."""


def branding(session: Session, firm_id: str) -> Branding:
    firm = session.get(m.Firm, firm_id)
    row = session.get(FirmSettings, firm_id)
    name = firm.name if firm is not None else firm_id
    if row is None:
        return Branding(firm_id=firm_id, name=name)
    return Branding(firm_id=firm_id, name=name, product=row.product_name or DEFAULT_PRODUCT,
                    accent=row.accent_colour or DEFAULT_ACCENT, has_logo=bool(row.logo_key),
                    version=row.updated_at.strftime("%Y%m%d%H%M%S%f") if row.updated_at else "")


def login_branding(session: Session, firm_id: str) -> Branding:
    """The branding the login page of ``/login?firm=<id>`` carries: product name, colour and logo — never the
    firm's display name, so that an unknown firm and a firm without settings look the same (the page does
    not tell whether a firm exists)."""
    if not isinstance(firm_id, str) or not 0 < len(firm_id) <= 64 or not firm_id.isprintable():
        return Branding(firm_id="", name="")
    row = session.get(FirmSettings, firm_id)
    if row is None:
        return Branding(firm_id="", name="")
    return Branding(firm_id="", name="", product=row.product_name or DEFAULT_PRODUCT,
                    accent=row.accent_colour or DEFAULT_ACCENT, has_logo=bool(row.logo_key),
                    version=row.updated_at.strftime("%Y%m%d%H%M%S%f") if row.updated_at else "")


# --------------------------------------------------------------------------------------------------
# notification channels, per firm, over the process's defaults


def channels_for(row: FirmSettings | None, *, email: EmailNotifier | None, webhook: WebhookNotifier | None,
                 box: SecretBox | None = None) -> tuple[EmailNotifier | None, WebhookNotifier | None]:
    """The e-mail and webhook channels of a firm: its own settings where it has them, else the process's
    (``email``/``webhook``, from the environment). A firm's own SMTP host replaces the default server (with
    its own port — 587 speaks STARTTLS, 465 TLS from the first byte — user and password); its sender and
    risk desk apply to whichever server sends."""
    if row is None:
        return email, webhook
    secrets = (box or SecretBox()).open(row.sealed) if row.sealed else {}
    if row.smtp_host:
        password = secrets.get("smtp_password")
        port = row.smtp_port or 25
        email = EmailNotifier(row.smtp_host, port,
                              row.smtp_sender or (email.sender if email else "propcrm@localhost"),
                              starttls=port == 587, use_ssl=port == 465,
                              username=row.smtp_user, password=password.reveal() if password else None,
                              timeout=email.timeout if email else 10.0,
                              risk_address=row.risk_email or (email.risk_address if email else None))
    elif email is not None and (row.smtp_sender or row.risk_email):
        email = _with(email, sender=row.smtp_sender or email.sender,
                      risk_address=row.risk_email or email.risk_address)
    secret = secrets.get("webhook_secret")
    if row.webhook_url and secret:
        webhook = WebhookNotifier(row.webhook_url, secret.reveal(), 10.0)
    return email, webhook


def _with(notifier: EmailNotifier, **changes: Any) -> EmailNotifier:
    """A copy of an e-mail notifier with other sender/risk desk (its server, login and password kept)."""
    import copy

    clone = copy.copy(notifier)
    for name, value in changes.items():
        setattr(clone, name, value)
    return clone


__all__ = ["Branding", "Invalid", "DEFAULT_ACCENT", "DEFAULT_PRODUCT", "FirmRow", "MAX_LOGO_BYTES", "Onboarded", "SETTINGS_FIELDS",
           "branding", "channels_for", "create_firm", "describe", "get_firm", "list_firms", "login_branding", "logo", "resume_firm", "set_logo", "suspend_firm",
           "settings_row", "update_settings"]
