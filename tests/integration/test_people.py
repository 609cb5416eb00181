"""Managing people, on both backends: disabling and enabling users, password resets and changes, ending
sessions, role changes — and the maker-checker rule between people: no one person can create (or take
over) the approvers of a payout and pay it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, select, text

from propcrm.adapters.db import models as m
from propcrm.services import users
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account
from support.staff import PASSWORD, build_world
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")
NEW = "a brand new passphrase"


def login(world, email: str, password: str, firm: str = "fa"):
    world.client.cookies.clear()
    return world.client.post("/api/v1/login", json={"firm": firm, "email": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alive(world, token: str) -> bool:
    world.client.cookies.clear()
    return world.client.get("/api/v1/me", headers=bearer(token)).status_code == 200


# --------------------------------------------------------------------------------------------------
# users


def test_a_disabled_users_sessions_end_at_once_and_they_cannot_log_in_until_enabled(world):
    admin, uid = world.headers("admin"), world.user_ids["fa:support"]
    second = world.fresh_token("support")
    done = world.client.post(f"/api/v1/users/{uid}/disable", headers=admin)
    assert done.status_code == 200 and done.json()["active"] is False and done.json()["live_sessions"] == 0
    assert not alive(world, world.tokens["fa:support"]) and not alive(world, second)
    assert login(world, "support@fa.example", PASSWORD).status_code == 401
    assert world.audit("user.login_failed")[-1].after["reason"] == "inactive user"
    again = world.client.post(f"/api/v1/users/{uid}/disable", headers=admin)
    assert again.status_code == 409 and "already disabled" in again.json()["error"]
    entry = world.audit("user.disable")[-1]
    assert entry.entity_id == str(uid) and entry.after["sessions_ended"] == 2
    assert entry.actor.startswith(f"user:{world.user_ids['fa:admin']}:")
    assert world.client.post(f"/api/v1/users/{uid}/enable", headers=admin).json()["active"] is True
    assert not alive(world, second)  # enabling does not bring old sessions back
    assert login(world, "support@fa.example", PASSWORD).status_code == 200
    assert world.audit("user.enable")[-1].entity_id == str(uid)
    # an admin cannot lock themselves out, nor touch another firm's users
    me = world.client.post(f"/api/v1/users/{world.user_ids['fa:admin']}/disable", headers=admin)
    assert me.status_code == 409 and "yourself" in me.json()["error"]
    for action in ("disable", "enable", "sessions/end"):
        assert world.client.post(f"/api/v1/users/{uid}/{action}", headers=world.headers("fb:admin")).status_code == 404
    assert world.client.post(f"/api/v1/users/{uid}/password", json={"password": NEW},
                             headers=world.headers("fb:admin")).status_code == 404


def test_a_password_reset_ends_the_users_sessions_and_only_the_new_password_works(world):
    admin, uid = world.headers("admin"), world.user_ids["fa:risk"]
    weak = world.client.post(f"/api/v1/users/{uid}/password", json={"password": "password1234"}, headers=admin)
    assert weak.status_code == 422 and "too easy to guess" in weak.json()["error"]
    assert alive(world, world.tokens["fa:risk"])  # a refused reset changes nothing
    done = world.client.post(f"/api/v1/users/{uid}/password", json={"password": NEW}, headers=admin)
    assert done.status_code == 200 and done.json()["password"] is None
    assert not alive(world, world.tokens["fa:risk"])
    assert login(world, "risk@fa.example", PASSWORD).status_code == 401
    assert login(world, "risk@fa.example", NEW).status_code == 200
    generated = world.client.post(f"/api/v1/users/{uid}/password", json={}, headers=admin).json()["password"]
    assert len(generated) >= 20 and login(world, "risk@fa.example", generated).status_code == 200
    entries = world.audit("user.password_reset")
    assert [e.after["generated"] for e in entries] == [False, True]
    assert NEW not in repr([e.after for e in entries]) and generated not in repr([e.after for e in entries])
    own = world.client.post(f"/api/v1/users/{world.user_ids['fa:admin']}/password", json={"password": NEW},
                            headers=admin)
    assert own.status_code == 409 and "/me/password" in own.json()["error"]


@pytest.mark.parametrize("who", ["risk", "trader"])
def test_changing_ones_own_password_needs_the_current_one_and_ends_the_other_sessions(world, who):
    mine, other = world.tokens[f"fa:{who}"], world.fresh_token(who)
    wrong = world.client.post("/api/v1/me/password", json={"current_password": "not it at all",
                                                           "new_password": NEW}, headers=bearer(mine))
    assert wrong.status_code == 403 and "current password is wrong" in wrong.json()["error"]
    weak = world.client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "12345678"},
                             headers=bearer(mine))
    assert weak.status_code == 422 and "at least 12 characters" in weak.json()["error"]
    done = world.client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW},
                             headers=bearer(mine))
    assert done.status_code == 200 and done.json() == {"ended": 1}
    assert alive(world, mine) and not alive(world, other)
    assert login(world, f"{who}@fa.example", PASSWORD).status_code == 401
    assert login(world, f"{who}@fa.example", NEW).status_code == 200
    assert world.audit("user.password_change")[-1].after["other_sessions_ended"] == 1


def test_ending_sessions_of_another_user_and_ones_own_other_sessions(world):
    admin = world.headers("admin")
    other = world.fresh_token("finance")
    ended = world.client.post(f"/api/v1/users/{world.user_ids['fa:finance']}/sessions/end", headers=admin)
    assert ended.json() == {"ended": 2}
    assert not alive(world, world.tokens["fa:finance"]) and not alive(world, other)
    spare = world.fresh_token("admin")
    mine = world.client.post("/api/v1/me/sessions/end", headers=admin)
    assert mine.json() == {"ended": 1} and alive(world, world.tokens["fa:admin"]) and not alive(world, spare)
    assert [e.after["kept_current"] for e in world.audit("user.sessions_ended")] == [False, True]


def test_an_admin_changes_a_staff_role_and_becomes_that_users_sponsor(world):
    admin, uid = world.headers("admin"), world.user_ids["fa:support"]
    changed = world.client.post(f"/api/v1/users/{uid}/role", json={"role": "finance"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "finance" and changed.json()["sponsors"] == [world.user_ids["fa:admin"]]
    assert world.client.get("/api/v1/products", headers=world.headers("support")).status_code == 200  # acts as finance
    for body, status in (({"role": "trader"}, 422), ({"role": "root"}, 422)):
        assert world.client.post(f"/api/v1/users/{uid}/role", json=body, headers=admin).status_code == status
    trader = world.client.post(f"/api/v1/users/{world.user_ids['fa:trader']}/role", json={"role": "risk"},
                               headers=admin)
    assert trader.status_code == 422 and "only a staff user's role" in trader.json()["error"]
    own = world.client.post(f"/api/v1/users/{world.user_ids['fa:admin']}/role", json={"role": "risk"}, headers=admin)
    assert own.status_code == 409
    entry = world.audit("user.role_change")[-1]
    assert entry.before["role"] == "support" and entry.after["role"] == "finance"


# --------------------------------------------------------------------------------------------------
# the web pages


def flash(response) -> str:
    import re

    found = re.search(r'<p class="flash" role="status"[^>]*>(.*?)</p>', response.text, re.S)
    return " ".join(found.group(1).split()) if found else ""


@pytest.mark.parametrize("who", ["support", "trader"])
def test_staff_and_traders_change_their_own_password_on_the_web(world, who):
    other = world.fresh_token(who)
    page = browse(world, who)
    form = page.get("/account/password")
    assert form.status_code == 200 and 'name="current_password"' in form.text and "2 time(s)" in form.text
    post = lambda **f: page.post_form("/account/password", f, follow_redirects=True)  # noqa: E731
    assert "current password is wrong" in flash(post(current_password="nope nope nope", new_password=NEW,
                                                     new_password_again=NEW))
    assert "differ" in flash(post(current_password=PASSWORD, new_password=NEW, new_password_again=NEW + "x"))
    assert "too easy to guess" in flash(post(current_password=PASSWORD, new_password="password1234",
                                             new_password_again="password1234"))
    done = post(current_password=PASSWORD, new_password=NEW, new_password_again=NEW)
    assert "Your password is changed; 1 other session(s)" in flash(done)
    assert alive(world, world.tokens[f"fa:{who}"]) and not alive(world, other)
    assert login(world, f"{who}@fa.example", NEW).status_code == 200
    # ending one's other sessions from the page (the login just above and one more)
    again = world.fresh_token(who)
    page = browse(world, who)
    assert "2 other session(s) of yours ended" in flash(page.post_form("/account/sessions/end", follow_redirects=True))
    assert not alive(world, again)


def test_the_admins_users_page(world):
    for role in ("risk", "finance", "support", "trader"):
        assert browse(world, role).get("/office/users").status_code == 403
        assert 'href="/office/users"' not in browse(world, role).get("/account/password").text
    page = browse(world, "admin")
    listing = page.get("/office/users")
    assert listing.status_code == 200 and 'href="/office/users"' in listing.text
    assert "support@fa.example" in listing.text and "admin@fb.example" not in listing.text
    support = world.user_ids["fa:support"]
    done = page.post_form(f"/office/users/{support}/disable", follow_redirects=True)
    assert "support@fa.example is disabled" in flash(done) and not alive(world, world.tokens["fa:support"])
    page = browse(world, "admin")
    generated = page.post_form(f"/office/users/{support}/password", {"password": ""})
    assert generated.status_code == 200 and "set-cookie" not in generated.headers  # shown, never in a cookie
    import re

    password = re.search(r"<code>([^<]+)</code>", generated.text).group(1)
    assert page.post_form(f"/office/users/{support}/enable").status_code == 303
    assert login(world, "support@fa.example", password).status_code == 200
    page = browse(world, "admin")
    assert "support@fa.example is now finance" in flash(
        page.post_form(f"/office/users/{support}/role", {"role": "finance"}, follow_redirects=True))
    mine = page.post_form(f"/office/users/{world.user_ids['fa:admin']}/disable", follow_redirects=True)
    assert "yourself" in flash(mine)
    assert page.post_form(f"/office/users/{world.user_ids['fb:admin']}/disable").status_code == 404
    assert [e.action for e in world.audit("user.disable")] == ["user.disable"]


# --------------------------------------------------------------------------------------------------
# maker-checker between people


@pytest.fixture
def payable(world):
    """A helper making a payout of t1 (500 profit) that ``preparer`` has prepared; returns its id."""
    world.life = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])

    def make(preparer: str) -> int:
        account = funded_account(world.sessions, firm="fa", version_id=world.life,
                                 external_id=f"F{next(world.counter)}", trader_id=world.traders["t1"],
                                 balance=Decimal("10500"))
        payout = world.client.post("/api/v1/payouts", json={"account_id": account},
                                   headers=world.headers("trader")).json()
        prepared = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={},
                                     headers=world.headers(preparer))
        assert prepared.status_code == 200, prepared.text
        return payout["id"]

    return make


def created_by_admin(world, name: str, role: str = "finance") -> str:
    """A user the admin creates through the API, with a session."""
    made = world.client.post("/api/v1/users", json={"email": f"{name}@fa.example", "password": PASSWORD,
                                                    "role": role}, headers=world.headers("admin"))
    assert made.status_code == 201, made.text
    world.user_ids[f"fa:{name}"] = made.json()["id"]
    world.tokens[f"fa:{name}"] = login(world, f"{name}@fa.example", PASSWORD).json()["token"]
    world.client.cookies.clear()
    return name


def approve(world, payout: int, who: str):
    return world.client.post(f"/api/v1/payouts/{payout}/approve", headers=world.headers(who))


def test_one_admin_cannot_pay_through_finance_users_they_created(world, payable):
    f1, f2 = created_by_admin(world, "f1"), created_by_admin(world, "f2")
    payout = payable(f1)
    refused = approve(world, payout, f2)
    assert refused.status_code == 409
    assert "maker-checker" in refused.json()["error"] and "share a sponsor, admin@fa.example" in refused.json()["error"]
    by_admin = approve(world, payout, "admin")
    assert by_admin.status_code == 409 and "admin@fa.example sponsored f1@fa.example" in by_admin.json()["error"]
    assert world.client.get(f"/api/v1/payouts/{payout}", headers=world.headers("admin")).json()["approvals"] == 0
    # the admin prepares, a finance user they created approves: the same person twice
    mine = payable("admin")
    assert "sponsored f1@fa.example" in approve(world, mine, f1).json()["error"]
    # someone the admin did not create, reset or promote may approve either
    assert approve(world, payout, "finance").json()["status"] == "approved"
    assert approve(world, mine, "finance").json()["status"] == "approved"


def test_a_password_reset_or_a_role_change_by_an_admin_makes_them_a_sponsor_and_transitively(world, payable):
    admin = world.headers("admin")
    payout = payable("admin")
    # the admin resets the root finance user's password: the admin could now log in as them
    world.client.post(f"/api/v1/users/{world.user_ids['fa:finance']}/password", json={"password": NEW}, headers=admin)
    world.tokens["fa:finance"] = login(world, "finance@fa.example", NEW).json()["token"]
    # a reset password is a one-time one: nothing before the user chose their own (test_tenant_lifecycle.py)
    assert "password change required" in approve(world, payout, "finance").json()["error"]
    # changing the password oneself does not end the sponsorship (the admin could have done that too) …
    world.client.post("/api/v1/me/password", json={"current_password": NEW, "new_password": PASSWORD},
                      headers=world.headers("finance"))
    assert "sponsored finance@fa.example" in approve(world, payout, "finance").json()["error"]
    # … the operator's reset does (the command line is the installation's owner)
    with world.sessions.begin() as s:
        users.reset_password(s, firm_id="fa", user_id=world.user_ids["fa:finance"], password=NEW,
                             actor="cli:operator")
    world.tokens["fa:finance"] = login(world, "finance@fa.example", NEW).json()["token"]
    world.client.post("/api/v1/me/password", json={"current_password": NEW, "new_password": PASSWORD},
                      headers=world.headers("finance"))
    assert approve(world, payout, "finance").json()["status"] == "approved"
    # promoting a support user to finance makes the admin their sponsor
    world.client.post(f"/api/v1/users/{world.user_ids['fa:support']}/role", json={"role": "finance"}, headers=admin)
    other = payable("admin")
    assert "sponsored support@fa.example" in approve(world, other, "support").json()["error"]
    # transitively: the admin creates a second admin, who creates a finance user
    created_by_admin(world, "admin2", role="admin")
    made = world.client.post("/api/v1/users", json={"email": "f3@fa.example", "password": PASSWORD, "role": "finance"},
                             headers=world.headers("admin2"))
    world.tokens["fa:f3"] = login(world, "f3@fa.example", PASSWORD).json()["token"]
    assert made.json()["sponsors"] == sorted([world.user_ids["fa:admin"], world.user_ids["fa:admin2"]])
    assert "admin@fa.example sponsored f3@fa.example" in approve(world, other, "f3").json()["error"]


def test_two_approvers_must_be_independent_of_each_other_too(world, payable):
    assert world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"},
                             headers=world.headers("admin")).status_code == 200
    f1, f2 = created_by_admin(world, "f1"), created_by_admin(world, "f2")
    payout = payable("finance")  # a root prepares
    assert approve(world, payout, f1).json()["status"] == "prepared"  # f1 is independent of the preparer
    second = approve(world, payout, f2)
    assert second.status_code == 409 and "who approved it" in second.json()["error"]
    assert approve(world, payout, "admin").status_code == 409  # f1's sponsor
    root = add_user(world, firm="fa", role="finance", name="f9")  # created by the operator: a root
    assert approve(world, payout, root).json()["status"] == "approved"


def test_the_payout_page_says_why_an_approval_is_refused(world, payable):
    f1, f2 = created_by_admin(world, "f1"), created_by_admin(world, "f2")
    payout = payable(f1)
    page = browse(world, f"fa:{f2}")
    shown = page.get(f"/office/payouts/{payout}")
    assert 'data-testid="not-independent"' in shown.text and "share a sponsor" in shown.text
    assert 'data-testid="not-independent"' not in browse(world, "finance").get(f"/office/payouts/{payout}").text
    page = browse(world, f"fa:{f2}")
    answer = page.post_form(f"/office/payouts/{payout}/approve", follow_redirects=True)
    assert "maker-checker" in answer.text and "share a sponsor" in answer.text
    assert world.client.get(f"/api/v1/payouts/{payout}", headers=world.headers("admin")).json()["status"] == "prepared"


def test_the_demo_firm_can_do_a_real_two_person_payout_with_its_seeded_staff(db_url):
    from propcrm.cli.serve import DEMO_FIRM, seed_demo_firm
    from propcrm.services.evaluation import EvaluationWorker
    from propcrm.services.passwords import password_problem

    app, world = build_world(db_url)
    with world.client:
        demo = seed_demo_firm(app.state.sessions, accounts=5)
        EvaluationWorker(app.state.sessions).run_until_idle()
        tokens = {}
        for email, password in demo.logins.items():
            assert len(password) >= 20 and password_problem(password, email=email, firm_id=DEMO_FIRM) is None
            answer = login(world, email, password, firm=DEMO_FIRM)
            assert answer.status_code == 200, answer.text
            tokens[email.split("@")[0]] = answer.json()["token"]
        world.client.cookies.clear()
        with world.sessions() as s:
            account = s.scalar(select(m.Account.id).where(m.Account.external_id == "DEMO-FUNDED-1"))
        payout = world.client.post("/api/v1/payouts", json={"account_id": account},
                                   headers=bearer(tokens["trader"])).json()
        assert payout["status"] == "requested", payout
        assert world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={},
                                 headers=bearer(tokens["finance"])).status_code == 200
        paid = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=bearer(tokens["admin"]))
        assert paid.status_code == 200 and paid.json()["status"] == "approved", paid.text


# --------------------------------------------------------------------------------------------------
# migration 0010: creators are read back from the audit log


def test_the_migration_finds_each_users_creator_in_the_audit_log(db_url, tmp_path, request):
    from alembic import command

    from propcrm.adapters.db.session import alembic_config, migrate

    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:  # a second schema beside the fixture's, migrated by hand
        schema = f"t_{uuid.uuid4().hex[:12]}"
        base = db_url.split("?")[0]
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        request.addfinalizer(lambda: _drop(admin, schema))
        url = f"{base}?options=-csearch_path%3D{schema}"
    command.upgrade(alembic_config(url), "0008")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO firms (id, name, created_at) VALUES ('f', 'F', CURRENT_TIMESTAMP)"))
        for uid, email in ((1, "boss@f.example"), (2, "made@f.example"), (3, "cli@f.example")):
            conn.execute(text("INSERT INTO users (id, firm_id, email, password_hash, role, active, created_at) "
                              "VALUES (:id, 'f', :email, 'x', 'finance', true, CURRENT_TIMESTAMP)"),
                         {"id": uid, "email": email})
        for seq, (entity_id, actor) in enumerate((("2", "user:1:boss@f.example"), ("3", "cli:root")), start=1):
            conn.execute(text("INSERT INTO audit_log (seq, firm_id, ts, actor, action, entity, entity_id, prev_hash, "
                              "hash) VALUES (:seq, 'f', CURRENT_TIMESTAMP, :actor, 'user.create', 'user', :eid, "
                              "'0', :hash)"), {"seq": seq, "actor": actor, "eid": entity_id, "hash": f"h{seq}"})
    migrate(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, created_by_user_id FROM users ORDER BY id")).all())
    engine.dispose()
    assert rows == {1: None, 2: 1, 3: None}


def _drop(admin, schema: str) -> None:
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
