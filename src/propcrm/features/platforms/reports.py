"""Importing a MetaTrader 5 trade history report into an account's event log (onboarding, disputes).

The report's deals become events (``adapters/platforms/mt5/report.py``) and go through ingestion like
any other — validated, idempotent on their ids, quarantined when refused — so the imported history is
evaluated by the worker and replays with ``propcrm replay`` like a streamed one. When the account is
mapped to a platform connection, the import uses that connection's name as the source and its server
time zone by default: the deal ids are the connector's own, and a period both imported and streamed
is stored once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection, PlatformLogin
from ...adapters.platforms.mt5.report import ReportError, parse_report
from ...adapters.platforms.port import rfc3339
from ...adapters.platforms.servertime import ServerClock
from ...services import audit
from ...services.catalog import pack_of
from ...services.errors import Invalid, NotFound
from ...services.ingest import ingest

DEFAULT_SOURCE = "mt5-report"
MAX_REPORT_BYTES = 32 * 1024 * 1024
_ENCODER = msgspec.json.Encoder(decimal_format="string")


@dataclass
class ReportImport:
    account: str
    source: str
    server_timezone: str
    login: str | None
    deals: int
    events: int
    accepted: int
    duplicates: int
    rejected: int
    warnings: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    skipped_initial: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in self.__dict__.items()}


def import_mt5_report(session: Session, *, firm_id: str, account: str, data: bytes, filename: str = "",
                      server_timezone: str | None = None, source: str | None = None, actor: str,
                      keep_initial_deposit: bool = False, check_login: bool = True) -> ReportImport:
    if not data:
        raise Invalid("the report file is empty")
    if len(data) > MAX_REPORT_BYTES:
        raise Invalid(f"the report is larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    row = session.scalar(select(m.Account).where(m.Account.firm_id == firm_id, m.Account.external_id == account))
    if row is None:
        raise NotFound(f"no account {account!r} in firm {firm_id}")
    mapping = session.execute(select(PlatformLogin.login, PlatformConnection.name, PlatformConnection.settings)
                              .join(PlatformConnection, PlatformConnection.id == PlatformLogin.connection_id)
                              .where(PlatformLogin.account_id == row.id)).first()
    zone = server_timezone
    if not zone and mapping is not None:
        zone = (mapping.settings or {}).get("server_timezone")
    if not zone:
        raise Invalid("name the trade server's time zone (--server-timezone, e.g. +02:00 or Europe/Athens): the "
                      "report's times are server times")
    try:
        clock = ServerClock(zone)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    version = session.get(m.RulePackVersion, row.pack_version_id)
    initial = pack_of(version).initial_balance if version is not None else None
    try:
        parsed = parse_report(data, clock=clock, filename=filename, initial_balance=initial,
                              keep_initial_deposit=keep_initial_deposit)
    except ReportError as exc:
        raise Invalid(f"{filename or 'the report'}: {exc}") from None
    expected = mapping.login if mapping else (row.login if row.login and row.login.isdigit() else None)
    if check_login and expected and parsed.login and parsed.login != expected:
        raise Invalid(f"the report is of login {parsed.login}, but account {account} is login {expected}")
    chosen_source = source or (mapping.name if mapping else DEFAULT_SOURCE)
    lines = []
    for event in sorted(parsed.events, key=lambda e: e.ts):
        body = {**event.body, "account": account, "ts": rfc3339(event.ts), "imported_from": filename[:100] or "report"}
        lines.append(_ENCODER.encode(body))
    result = ingest(session, firm_id=firm_id, source=chosen_source, body=b"\n".join(lines) + b"\n",
                    content_type="application/x-ndjson") if lines else None
    report = ReportImport(account=account, source=chosen_source, server_timezone=zone, login=parsed.login,
                          deals=parsed.deals, events=len(lines), accepted=result.accepted if result else 0,
                          duplicates=result.duplicates if result else 0, rejected=result.rejected if result else 0,
                          warnings=parsed.warnings[:50],
                          rejections=[f"{o.id}: {o.reason}" for o in result.rejections()[:20]] if result else [],
                          skipped_initial=parsed.skipped_initial)
    audit.append(session, actor=actor, action="platform.report_import", entity="account", entity_id=account,
                 after={"file": filename[:200], "source": chosen_source, "server_timezone": zone,
                        "login": parsed.login, "deals": parsed.deals, "accepted": report.accepted,
                        "duplicates": report.duplicates, "rejected": report.rejected,
                        "warnings": len(parsed.warnings)}, firm_id=firm_id)
    return report


__all__ = ["DEFAULT_SOURCE", "ReportImport", "import_mt5_report"]
