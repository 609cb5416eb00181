"""Rule pack pages on both backends: who may see and do what, editing a draft (validation with the
field named, a new version stored), versions side by side, the what-if back-test on stored history
(checked against the engine's own what-if), activation and retirement (audited)."""

from __future__ import annotations

import html
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import select
from support.web import browse

from propcrm.adapters.db import models as m
from propcrm.domain.program import compile_pack
from propcrm.engine.replay import whatif as engine_whatif
from propcrm.services.catalog import pack_of

pytestmark = pytest.mark.usefixtures("cheap_argon2")

PACK = "two-step-100k"


def textarea(page_html: str, name: str = "pack") -> str:
    match = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', page_html, re.S)
    assert match, page_html[:2000]
    return html.unescape(match.group(1))


def versions(world, firm="fa") -> list[m.RulePackVersion]:
    with world.sessions() as s:
        return list(s.scalars(select(m.RulePackVersion).where(m.RulePackVersion.firm_id == firm)
                              .order_by(m.RulePackVersion.version)))


def tighter_daily_loss(text: str, pct: str = "3") -> str:
    """The editor's text with phase-1's daily loss at ``pct`` % (the first daily_loss rule)."""
    head, sep, tail = text.partition("kind: daily_loss")
    assert sep, text
    changed, n = re.subn(r"pct_initial: 5\b", f"pct_initial: {pct}", tail, count=1)
    assert n == 1
    return head + sep + changed


def save_draft(world, pct: str = "3"):
    page = browse(world, "fa:admin")
    text = textarea(page.get(f"/office/packs/{PACK}/draft").text)
    assert "version: 2" in text
    return page.post_form(f"/office/packs/{PACK}/draft", {"pack": tighter_daily_loss(text, pct)})


# --------------------------------------------------------------------------------------------------
# who may


def test_role_matrix_of_the_pages(world):
    for who in ("fa:finance", "fa:support", "fa:trader"):
        page = browse(world, who)
        for path in ("/office/packs", f"/office/packs/{PACK}", f"/office/packs/{PACK}/whatif",
                     f"/office/packs/{PACK}/draft"):
            assert page.get(path).status_code == 403, (who, path)
        assert page.post_form(f"/office/packs/{PACK}/draft", {"pack": "x"}).status_code == 403
    risk = browse(world, "fa:risk")
    for path in ("/office/packs", f"/office/packs/{PACK}", f"/office/packs/{PACK}/whatif?run=true"):
        response = risk.get(path)
        assert response.status_code == 200, (path, response.text[:500])
    body = risk.get(f"/office/packs/{PACK}").text
    assert "Edit a new draft" not in body and "/activate" not in body  # no buttons risk may not use
    assert risk.get(f"/office/packs/{PACK}/draft").status_code == 403
    v1 = versions(world)[0]
    assert risk.post_form(f"/office/packs/{PACK}/draft", {"pack": "{}"}).status_code == 403
    assert risk.post_form(f"/office/packs/{PACK}/versions/{v1.id}/retire",
                          {"confirm": f"retire {PACK} v1"}).status_code == 403
    assert versions(world)[0].status == "active"
    admin = browse(world, "fa:admin")
    foreign = admin.post_form(f"/office/packs/{PACK}/versions/{v1.id}/retire", {"confirm": f"retire {PACK} v1"},
                              headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    world.client.cookies.clear()
    response = world.client.get("/office/packs", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert world.client.post(f"/office/packs/{PACK}/versions/{v1.id}/retire",
                             data={"confirm": f"retire {PACK} v1"}).status_code == 401
    assert versions(world)[0].status == "active"


def test_another_firms_pack_version_is_not_found(world):
    page = browse(world, "fa:admin")
    fb_version = world.version["fb"]
    assert page.get(f"/office/packs/{PACK}?a={fb_version}").status_code == 404
    assert page.get("/office/packs/no-such-pack").status_code == 404
    assert page.get("/office/packs/NOT%20AN%20ID").status_code == 404
    response = page.post_form(f"/office/packs/{PACK}/versions/{fb_version}/retire", {"confirm": f"retire {PACK} v1"})
    assert response.status_code == 404
    assert versions(world, "fb")[0].status == "active"


def test_posts_without_csrf_are_refused(world):
    page = browse(world, "fa:admin")
    v1 = versions(world)[0]
    text = textarea(page.get(f"/office/packs/{PACK}/draft").text)
    assert page.post_form(f"/office/packs/{PACK}/draft", {"pack": text}, csrf=False).status_code == 403
    assert page.post_form(f"/office/packs/{PACK}/versions/{v1.id}/retire", {"confirm": f"retire {PACK} v1"},
                          csrf=False).status_code == 403
    assert len(versions(world)) == 1 and versions(world)[0].status == "active"


# --------------------------------------------------------------------------------------------------
# the index, drafts and the side-by-side diff


def test_index_lists_versions_with_accounts_and_products(world):
    with world.sessions.begin() as s:
        s.add(m.Product(firm_id="fa", name="Challenge <100k>", pack_version_id=world.version["fa"],
                        account_size=Decimal("100000"), price=Decimal("540"), currency="USD"))
    body = browse(world, "fa:risk").get("/office/packs").text
    assert PACK in body and "v1" in body and "badge active" in body
    assert "Challenge &lt;100k&gt;" in body  # escaped
    assert re.search(r'<td class="num">3</td>', body)  # A1, A2, A3 are bound to v1 of firm fa


def test_an_invalid_draft_names_the_field_and_stores_nothing(world):
    page = browse(world, "fa:admin")
    text = textarea(page.get(f"/office/packs/{PACK}/draft").text)
    bad = tighter_daily_loss(text, "-3")
    response = page.post_form(f"/office/packs/{PACK}/draft", {"pack": bad})
    assert response.status_code == 422
    assert 'role="alert"' in response.text and "pct_initial" in response.text
    assert "Not saved" in response.text and "phase “phase-1”, rule 1 (daily_loss), amount" in response.text
    assert textarea(response.text) == bad  # the text is kept for correcting
    broken = page.post_form(f"/office/packs/{PACK}/draft", {"pack": text.replace("phases:", "phases: 7\nx:")})
    assert broken.status_code == 422 and "Not saved" in broken.text
    escaped = page.post_form(f"/office/packs/{PACK}/draft", {"pack": text.replace("name: ", "nam<script>x</script>: ", 1)})
    assert escaped.status_code == 422 and "<script>x</script>" not in escaped.text and "&lt;script&gt;" in escaped.text
    other = page.post_form(f"/office/packs/{PACK}/draft", {"pack": text.replace(f"id: {PACK}", "id: other-pack", 1)})
    assert other.status_code == 422 and "$.id" in other.text
    same_version = page.post_form(f"/office/packs/{PACK}/draft",
                                  {"pack": tighter_daily_loss(text).replace("version: 2", "version: 1", 1)})
    assert same_version.status_code == 422 and "new version" in same_version.text
    assert len(versions(world)) == 1
    assert not world.audit("pack.add")[1:]  # only the seed's own version (stored without the service) or none


def test_a_saved_draft_is_a_new_version_and_the_diff_shows_the_changed_threshold(world):
    response = save_draft(world)
    assert response.status_code == 303, response.text[:1000]
    rows = versions(world)
    assert [(r.version, r.status) for r in rows] == [(1, "active"), (2, "draft")]
    assert json.loads(rows[1].body)["phases"][0]["rules"][0]["amount"] == {"pct_initial": "3"}
    assert [e.entity_id for e in world.audit("pack.add")][-1] == f"{PACK} v2"
    page = browse(world, "fa:risk")
    location = response.headers["location"]
    assert location == f"/office/packs/{PACK}?a={rows[0].id}&b={rows[1].id}"
    body = page.get(f"/office/packs/{PACK}").text  # default: active vs newest draft
    assert "1</strong> setting differs" in body or "<strong>1</strong> setting" in body
    changed = re.findall(r'<tr class="changed">(.*?)</tr>', body, re.S)
    assert len(changed) == 1
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", changed[0], re.S)]
    assert cells[0] == "phase-1" and cells[1].startswith("daily_loss") and cells[2] == "amount.pct_initial"
    assert cells[3:] == ["5", "3", "changed"]
    text = html.unescape(body)
    assert re.search(r'<span class="del">-\s+"pct_initial": "5"</span><span class="add">\+\s+"pct_initial": "3"</span>', text)
    # unchanged settings only on request
    assert "early_warning" not in body
    assert "early_warning" in page.get(f"/office/packs/{PACK}?all=true").text
    # the same content again stores nothing
    admin = browse(world, "fa:admin")
    text = textarea(admin.get(f"/office/packs/{PACK}/draft?from={rows[1].id}").text)
    assert "version: 3" in text and "pct_initial: 3" in text
    again = admin.post_form(f"/office/packs/{PACK}/draft", {"pack": text.replace("version: 3", "version: 2", 1)})
    assert again.status_code == 303 and len(versions(world)) == 2
    assert "nothing was added" in admin.get(again.headers["location"]).text


# --------------------------------------------------------------------------------------------------
# what-if


def history(account: str, low: str) -> list[dict]:
    return [
        {"id": f"{account}-o", "type": "trade_opened", "account": account, "ts": "2026-03-02T09:00:00Z",
         "position": "p1", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
        {"id": f"{account}-e1", "type": "equity", "account": account, "ts": "2026-03-02T10:00:00Z",
         "equity": "99000", "balance": "100000"},
        {"id": f"{account}-e2", "type": "equity", "account": account, "ts": "2026-03-02T11:00:00Z",
         "equity": low, "balance": "100000"},
    ]


def test_whatif_reports_the_breach_the_draft_would_add_like_the_engine(world, tmp_path):
    a1 = history("A1", "96000.00")  # 4 % down: within 5 %, beyond 3 %
    a2 = history("A2", "99500.00")  # 0.5 % down: within both
    world.ingest(*a1, *a2)
    world.evaluate()
    assert save_draft(world).status_code == 303
    v1, v2 = versions(world)
    page = browse(world, "fa:risk")  # risk may run it
    response = page.get(f"/office/packs/{PACK}/whatif?run=true&a={v1.id}&b={v2.id}&scope=bound&limit=50")
    assert response.status_code == 200, response.text[:2000]
    body = response.text
    assert "1 account would end differently" in body
    rows = re.findall(r'<tr class="changed">(.*?)</tr>', body, re.S)
    assert len(rows) == 1 and ">A1</a>" in rows[0]
    assert "breached (daily_loss)" in rows[0] and "96,000.00" in rows[0] and "97,000.00" in rows[0]
    assert "A2" not in "".join(rows)
    # the engine's own what-if (propcrm whatif) on the same history agrees
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(e) + "\n" for e in a1 + a2))
    with world.sessions() as s:
        packs = [compile_pack(pack_of(s.get(m.RulePackVersion, v.id))) for v in (v1, v2)]
    expected = engine_whatif(packs[0], packs[1], events, phase="phase-1").to_dict()
    assert [(d["account"], d["a"], d["b"]) for d in expected["differences"]] == [("A1", "active", "breached (daily_loss)")]
    assert '<span class="badge active">active</span>' in rows[0]
    # totals: breached by daily_loss 0 → 1
    assert re.search(r"Breached by daily_loss</th><td class=\"num\">0</td><td class=\"num\"><strong>1</strong>", body)
    # an explicit list, and a bad one
    listed = page.get(f"/office/packs/{PACK}/whatif?run=true&a={v1.id}&b={v2.id}&scope=list&accounts=A2").text
    assert "0 accounts would end differently" in listed
    assert page.get(f"/office/packs/{PACK}/whatif?run=true&scope=list&accounts=").status_code == 422
    assert page.get(f"/office/packs/{PACK}/whatif?run=true&limit=100000").status_code == 422


def test_whatif_is_bounded_and_says_so(world, monkeypatch):
    from propcrm.web import queries_packs

    # three accounts with history for a budget of two (accounts without history are not chosen by scope)
    world.ingest(*history("A1", "96000.00"), *history("A2", "96000.00"), *history("A3", "96000.00"))
    monkeypatch.setattr(queries_packs, "MAX_EVENTS", 4)
    body = browse(world, "fa:risk").get(f"/office/packs/{PACK}/whatif?run=true&limit=2").text
    assert "only the newest 2 were replayed" in body
    assert "the event bound was reached" in body.lower() or "histories were replayed up to" in body


# --------------------------------------------------------------------------------------------------
# activate / retire


def test_activation_needs_the_confirmation_text_changes_the_active_version_and_is_audited(world):
    assert save_draft(world).status_code == 303
    v1, v2 = versions(world)
    page = browse(world, "fa:admin")
    wrong = page.post_form(f"/office/packs/{PACK}/versions/{v2.id}/activate", {"confirm": "yes"})
    assert wrong.status_code == 303
    assert [r.status for r in versions(world)] == ["active", "draft"]
    assert f"Not activated: type “activate {PACK} v2” to confirm." in page.get(wrong.headers["location"]).text
    done = page.post_form(f"/office/packs/{PACK}/versions/{v2.id}/activate", {"confirm": f"activate {PACK} v2"})
    assert done.status_code == 303
    assert [r.status for r in versions(world)] == ["retired", "active"]
    entry = world.audit("pack.activate")[-1]
    assert entry.entity_id == f"{PACK} v2"
    assert entry.actor == f"user:{world.user_ids['fa:admin']}:admin@fa.example"
    assert entry.after["retired"] == [f"{PACK} v1"]
    shown = page.get(done.headers["location"])
    assert "is now active" in shown.text
    # accounts keep their version
    with world.sessions() as s:
        assert s.get(m.Account, world.accounts["A1"]).pack_version_id == v1.id
    # activating the active one again is a conflict, said on the page
    again = page.post_form(f"/office/packs/{PACK}/versions/{v2.id}/activate", {"confirm": f"activate {PACK} v2"})
    assert again.status_code == 303
    assert "already active" in page.get(again.headers["location"]).text
    retired = page.post_form(f"/office/packs/{PACK}/versions/{v2.id}/retire", {"confirm": f"retire {PACK} v2"})
    assert retired.status_code == 303 and [r.status for r in versions(world)] == ["retired", "retired"]
    assert world.audit("pack.retire")[-1].entity_id == f"{PACK} v2"


def test_pack_text_is_escaped_everywhere(world):
    page = browse(world, "fa:admin")
    text = textarea(page.get(f"/office/packs/{PACK}/draft").text)
    evil = re.sub(r"^name: .*$", "name: '<script>alert(1)</script>'", text, count=1, flags=re.M)
    assert page.post_form(f"/office/packs/{PACK}/draft", {"pack": evil}).status_code == 303
    for path in ("/office/packs", f"/office/packs/{PACK}", f"/office/packs/{PACK}/whatif",
                 f"/office/packs/{PACK}/draft?from={versions(world)[1].id}"):
        body = page.get(path).text
        assert "<script>alert(1)</script>" not in body, path
        assert path.endswith("/whatif") or "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path
