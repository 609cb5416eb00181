"""A firm's own settings (migration 0017): branding, notifications and its webhook, per tenant.

Empty fields fall back to the process's environment (``PROPCRM_SMTP_*``, ``PROPCRM_RISK_EMAIL``,
``PROPCRM_FIRM_WEBHOOK_*``): one deployment serves firms that set their own and firms that take the
defaults (services/firms.py). Secrets (the webhook's signing secret, the SMTP password) are one value
sealed with the platform credentials' key (adapters/platforms/secrets.py) in ``sealed``; nothing
answers them back.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UtcDateTime, utcnow


class FirmSettings(Base):
    __tablename__ = "firm_settings"
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), primary_key=True)
    # branding: the name in the header, page titles, e-mail subjects and PDFs; the accent colour; a logo
    product_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    accent_colour: Mapped[str | None] = mapped_column(String(7), nullable=True)  # "#1f5eff"
    logo_key: Mapped[str | None] = mapped_column(String(40), nullable=True)  # in the document store
    logo_type: Mapped[str | None] = mapped_column(String(40), nullable=True)  # image/png | image/jpeg
    # notifications
    smtp_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    smtp_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    smtp_sender: Mapped[str | None] = mapped_column(String(320), nullable=True)
    smtp_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    risk_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # {"webhook_secret", "smtp_password"}
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


__all__ = ["FirmSettings"]
