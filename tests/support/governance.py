"""The re-bind's worked example, shared by its API, page and browser tests: pack ``fix-100k`` (the
``two-step-100k`` preset renamed) whose phase-1 daily loss was entered as 4% where the firm means 5%."""

from __future__ import annotations

import msgspec

from propcrm.domain.rulepack import RulePack, load_pack
from propcrm.services.rulepacks import read_pack


def fix_pack(version: int, daily_pct: int) -> RulePack:
    """``two-step-100k`` renamed ``fix-100k``, with phase 1's daily loss at ``daily_pct``% of initial."""
    data = msgspec.to_builtins(load_pack("two-step-100k"))
    data["id"], data["version"] = "fix-100k", version
    for rule in data["phases"][0]["rules"]:
        if rule["kind"] == "daily_loss":
            rule["amount"] = {"pct_initial": daily_pct}
    return read_pack(msgspec.json.encode(data))


def equity(eid: str, account: str, ts: str, value: str) -> dict:
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": "100000"}
