"""Rows of the permission matrix for the re-bind and the kill switch (issue 19): risk and admin only.
Each call acts on a fresh account of firm fa (a re-bind moves it to a draft v2 of its pack; a halt stops it)."""

from __future__ import annotations

import msgspec

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import load_pack
from propcrm.services import halts
from propcrm.services.catalog import add_pack
from support.routes import RISK, Route
from support.staff import World


def _draft_v2(w: World, who) -> str:
    """A draft version 2 of the pack the world's accounts are bound to (made once)."""
    if "fa:v2" not in w.version:
        with w.sessions.begin() as s:
            pack = msgspec.structs.replace(load_pack("two-step-100k"), version=2)
            w.version["fa:v2"] = add_pack(s, firm_id="fa", pack=pack).id
    return str(w.version["fa:v2"])


def _fresh_external(w: World) -> str:
    with w.sessions() as s:
        return s.get(m.Account, w.new_account()).external_id


def _halted(w: World, who) -> str:
    external = _fresh_external(w)
    with w.sessions.begin() as s:
        return str(halts.halt(s, firm_id="fa", scope=halts.HaltScope(accounts=(external,)), reason="test",
                              actor="test").id)


ROUTES = [
    Route("POST", "/api/v1/packs/{version_id}/rebind/preview", RISK, path=_draft_v2,
          body=lambda w, who: {"account_ids": [w.new_account()]}),
    Route("POST", "/api/v1/packs/{version_id}/rebind", RISK, path=_draft_v2,
          body=lambda w, who: {"account_ids": [w.new_account()], "reason": "fixed rule"}),
    Route("POST", "/api/v1/halts/preview", RISK, body=lambda w, who: {"accounts": [_fresh_external(w)]}),
    Route("POST", "/api/v1/halts", RISK,
          body=lambda w, who: {"scope": {"accounts": [_fresh_external(w)]}, "reason": "feed fault"}),
    Route("GET", "/api/v1/halts", RISK),
    Route("POST", "/api/v1/halts/{halt_id}/resume", RISK, path=_halted, body=lambda w, who: {"reason": "feed back"}),
]
