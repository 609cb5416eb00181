"""An approved payout withdrawn on the trading platform too.

propcrm records the payout's withdrawal as its own ``balance`` event (``services/payouts.py``); when
the account trades on a stored platform connection, the same amount must leave the platform account,
or the trader's next trades would run on money already paid out. That is an ``adjust_balance``
command (reason ``payout``) in the outbox, once per payout; the platform's operation carries the
comment ``pc payout <id>``, which the deal mapping skips, so it is not counted twice.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection, PlatformLogin


def queue_platform_withdrawal(session: Session, account: m.Account, *, payout_id: int, amount: Decimal) -> bool:
    """Queue the withdrawal when ``account`` has a login on its platform's stored connection; True if queued."""
    if not account.platform or amount <= 0:
        return False
    mapped = session.scalar(select(PlatformLogin.id).join(PlatformConnection,
                                                          PlatformConnection.id == PlatformLogin.connection_id)
                            .where(PlatformLogin.account_id == account.id, PlatformConnection.firm_id == account.firm_id,
                                   PlatformConnection.name == account.platform))
    if mapped is None:
        return False
    dedupe = f"payout:{payout_id}:platform_withdrawal"
    if session.scalar(select(m.OutboxMessage.id).where(m.OutboxMessage.firm_id == account.firm_id,
                                                       m.OutboxMessage.dedupe_key == dedupe)) is not None:
        return False
    session.add(m.OutboxMessage(firm_id=account.firm_id, kind="platform_command", dedupe_key=dedupe,
                                payload={"command": "adjust_balance", "account": account.external_id,
                                         "platform": account.platform, "reason": "payout", "payout": payout_id,
                                         "amount": str(amount)}))
    return True


__all__ = ["queue_platform_withdrawal"]
