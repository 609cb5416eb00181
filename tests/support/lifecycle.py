"""Helpers for the lifecycle tests: a small pack with payouts and scaling, signed provider webhooks,
users with tokens, funded accounts with a given engine state, investigation cases."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_analytics import Case, CaseAccount
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.services import users
from propcrm.services.apikeys import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, create_key, sign
from propcrm.services.catalog import add_pack, create_account
from propcrm.services.evaluation import STATE_ENCODER
from support.staff import PASSWORD, World

UTC = dt.timezone.utc

LIFE_PACK = """
id: life-10k
version: 1
currency: USD
initial_balance: "10000"
timezone: UTC
day_start: "00:00"
sources: [tests]
scaling: {max_balance: "20000", every_months: 1, min_profit_pct: 1, min_payouts: 1, increase_pct: 25,
          split_steps: [90], max_risk_score: 80}
phases:
  - name: phase-1
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}}
      - {kind: max_loss, amount: {pct_initial: 10}}
      - {kind: profit_target, amount: {pct_initial: 10}}
      - {kind: min_trading_days, days: 1}
  - name: phase-2
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}}
      - {kind: max_loss, amount: {pct_initial: 10}}
      - {kind: profit_target, amount: {pct_initial: 5}}
  - name: funded
    profit_split: 80
    payout: {min_amount: "50", min_trading_days: 1, consistency_max_day_pct: 100,
             split_tiers: [{after_payouts: 3, split: 85}]}
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}}
      - {kind: max_loss, amount: {absolute: "1000"}, trailing: balance_intraday}
      - {kind: news, action: partial_profit, profit_counted_pct: 50}
"""


def life_pack():
    return parse_pack(LIFE_PACK)


def add_user(world: World, *, firm: str, role: str, name: str, trader_id: int | None = None) -> str:
    """A new user of ``firm`` with a token; returns the key for ``world.headers``."""
    with world.sessions.begin() as s:
        user = users.create_user(s, firm_id=firm, email=f"{name}@{firm}.example", password=PASSWORD, role=role,
                                 trader_id=trader_id)
        world.user_ids[f"{firm}:{name}"] = user.id
        world.tokens[f"{firm}:{name}"], _ = users.issue_token(s, user=user)
    return f"{firm}:{name}"


def provider_key(world: World, *, firm: str = "fa", platform: str) -> tuple[str, str]:
    with world.sessions.begin() as s:
        return create_key(s, firm_id=firm, platform=platform)


def signed_post(world: World, path: str, document, key: tuple[str, str], *, ts: int | None = None):
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    stamp = str(ts if ts is not None else int(time.time()))
    headers = {KEY_HEADER: key[0], TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(key[1], stamp, body),
               "Content-Type": "application/json"}
    return world.client.post(path, content=body, headers=headers)


def open_case(world: World, *, firm: str, account_ids: list[int], title: str = "copy trading ring") -> int:
    with world.sessions.begin() as s:
        case = Case(firm_id=firm, detector="manual", fingerprint=f"test:{title}:{account_ids}", status="open",
                    title=title, summary="", score=50)
        s.add(case)
        s.flush()
        for account_id in account_ids:
            s.add(CaseAccount(case_id=case.id, account_id=account_id, firm_id=firm))
        return case.id


def funded_account(sessions, *, firm: str, version_id: int, external_id: str, trader_id: int | None,
                   balance: Decimal, active_days: int = 3, deductions: Decimal = Decimal(0),
                   best_day: Decimal = Decimal(0), status: str = "funded") -> int:
    """A funded-phase account whose engine state says ``balance`` (flat), without any events."""
    with sessions.begin() as s:
        version = s.get(m.RulePackVersion, version_id)
        pack = parse_pack(version.body)
        program = compile_pack(pack).phase(pack.phases[-1].name)
        account = create_account(s, firm_id=firm, external_id=external_id, pack_version_id=version_id,
                                 phase=program.name, trader_id=trader_id)
        account.status = status
        st = program.new_state(external_id)
        st.balance = st.equity = balance
        st.active_days = active_days
        st.deductions = deductions
        st.best_day_profit = best_day
        st.phase_start = st.last_ts = dt.datetime(2026, 1, 5, tzinfo=UTC)
        s.add(m.AccountState(account_id=account.id, firm_id=firm, state=STATE_ENCODER.encode(st), last_seq=0,
                             balance=balance, equity=balance))
        return account.id


def approve_kyc(sessions, trader_id: int) -> None:
    with sessions.begin() as s:
        s.get(m.Trader, trader_id).kyc_status = "approved"


def add_life_pack(sessions, firm: str) -> int:
    with sessions.begin() as s:
        return add_pack(s, firm_id=firm, pack=life_pack(), activate=True).id
