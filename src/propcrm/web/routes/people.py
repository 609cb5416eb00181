"""Your own password and sessions (every user, staff and traders), and the admin's users page.

The same services and rules as the JSON API (``api/auth.py`` ``/me/…``, ``api/routers/admin.py``): the
current password is checked outside any write transaction and throttled like a login; a new password
must meet the password rules; an admin disables and enables users, resets passwords, changes staff
roles and ends sessions — never their own account's, which another admin (or the operator) changes.
A refusal comes back to the page as a flash with the service's words. Small on purpose: the people
pages proper (profiles, invitations) come later.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...http.auth import Db, client_address
from ...services import apikey_admin, logins, totp
from ...services import users as user_service
from ...services.errors import Conflict, Invalid, NotFound
from ...services.passwords import generate_password
from ...http.pages import Form, Role, WebUser, WebUserReading, brand_of, home_of, redirect, render
from ...roles import ADMIN

router = APIRouter()

MAX_ID = 2**31 - 1
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/account/password")
def password_page(request: Request, user: WebUser, session: Db) -> Response:
    return render(request, "people/password.html", {
        "sessions": user_service.live_sessions(session, user_id=user.user_id),
        "min_length": user_service.MIN_PASSWORD,
    })


@router.post("/account/password")
async def change_password(request: Request, user: WebUserReading, form: Form) -> Response:
    current, new, again = form.get("current_password", ""), form.get("new_password", ""), form.get("new_password_again", "")
    if not current or not new:
        return redirect(request, "/account/password", flash="Not done: enter your current and your new password")
    if new != again:
        return redirect(request, "/account/password", flash="Not done: the two new passwords differ")
    if len(current) > user_service.MAX_PASSWORD or len(new) > user_service.MAX_PASSWORD:
        return redirect(request, "/account/password", flash="Not done: that password is too long")
    app = request.app
    verified, throttled = await run_in_threadpool(
        logins.check_current_password, app.state.read_sessions, app.state.login_throttle, user_id=user.user_id,
        firm_id=user.firm_id, email=user.email, password=current, address=client_address(request))
    if throttled is not None:
        return redirect(request, "/account/password",
                        flash=f"Not done: too many wrong passwords; try again in {throttled.retry_after} seconds")
    if verified is None:
        return redirect(request, "/account/password", flash="Not done: the current password is wrong")

    def change() -> int:
        with app.state.sessions.begin() as session:
            return user_service.change_own_password(session, user_id=user.user_id, verified_hash=verified,
                                                    new_password=new, actor=user.actor,
                                                    keep_token=request.state.token)

    try:
        ended = await run_in_threadpool(change)
    except (Invalid, Conflict, NotFound) as exc:
        return redirect(request, "/account/password", flash=f"Not done: {exc}")
    return redirect(request, home_of(user.role) if user.must_change_password else "/account/password",
                    flash=f"Your password is changed; {ended} other session(s) of yours ended")


@router.post("/account/sessions/end")
def end_my_other_sessions(request: Request, user: WebUser, session: Db, form: Form) -> Response:
    ended = user_service.end_sessions(session, firm_id=user.firm_id, user_id=user.user_id, actor=user.actor,
                                      keep_token=request.state.token)
    return redirect(request, "/account/password", flash=f"{ended} other session(s) of yours ended; this one stays")


# --------------------------------------------------------------------------------------------------
# the admin's users page


@router.get("/office/users")
def users_page(request: Request, user: Role(*ADMIN), session: Db) -> Response:
    return _users_page(request, user, session)


def _users_page(request: Request, user, session, generated: dict | None = None) -> Response:
    rows = []
    for row in user_service.list_users(session, firm_id=user.firm_id):
        chain = user_service.sponsor_chain(session, row.id)
        rows.append({"user": row, "sessions": user_service.live_sessions(session, user_id=row.id),
                     "sponsors": [chain[uid].email for uid in sorted(chain)], "you": row.id == user.user_id,
                     "two_factor": totp.enabled(row)})
    return render(request, "people/users.html", {"rows": rows, "staff_roles": user_service.STAFF_ROLES,
                                                 "generated": generated})


@router.post("/office/users")
def create_staff_user(request: Request, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    """An admin adds a staff member (a trader's login comes with the trader); an empty password is generated
    and shown on this answer only."""
    password = form.get("password", "")
    if len(password) > user_service.MAX_PASSWORD:
        return redirect(request, "/office/users", flash="Not done: that password is too long")
    role = form.get("role", "")
    if role not in user_service.STAFF_ROLES:
        return redirect(request, "/office/users", flash=f"Not done: role: one of {', '.join(user_service.STAFF_ROLES)}")
    chosen = password or generate_password()
    try:
        with session.begin_nested():
            row = user_service.create_user(session, firm_id=user.firm_id, email=form.get("email", ""), password=chosen,
                                           role=role, actor=user.actor, by_user_id=user.user_id)
    except (Invalid, Conflict, NotFound) as exc:
        return redirect(request, "/office/users", flash=f"Not done: {exc}")
    if password:
        return redirect(request, "/office/users", flash=f"{row.email} is added as {row.role}")
    return _users_page(request, user, session, generated={"email": row.email, "password": chosen})


@router.post("/office/users/{user_id}/two-factor/off")
def two_factor_off(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _admin_act(request, session, lambda row: f"Two-factor login of {row.email} is off; they enrol again",
                      lambda: totp.disable(session, firm_id=user.firm_id, user_id=user_id, actor=user.actor,
                                           by_user_id=user.user_id))


# --------------------------------------------------------------------------------------------------
# your own two-factor login (every user: staff, and traders from the portal's profile)


@router.get("/account/two-factor")
def two_factor_page(request: Request, user: WebUser, session: Db) -> Response:
    row = user_service.get_user(session, firm_id=user.firm_id, user_id=user.user_id)
    pending = totp.secret_of(row) if row.totp_secret and not totp.enabled(row) else None
    uri = totp.provisioning_uri(row, secret=pending, issuer=brand_of(request).product) if pending else None
    return render(request, "people/two_factor.html", {
        "enabled": totp.enabled(row), "since": row.totp_enabled_at, "secret": pending, "uri": uri,
        "qr": totp.qr_svg(uri) if uri else None, "left": totp.recovery_codes_left(session, user_id=row.id),
        "codes": None})


@router.post("/account/two-factor/start")
def two_factor_start(request: Request, user: WebUser, session: Db, form: Form) -> Response:
    try:
        with session.begin_nested():
            totp.start_enrolment(session, user_id=user.user_id, firm_id=user.firm_id)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/account/two-factor", flash=f"Not done: {exc}")
    return redirect(request, "/account/two-factor")


@router.post("/account/two-factor/confirm")
def two_factor_confirm(request: Request, user: WebUser, session: Db, form: Form) -> Response:
    try:
        with session.begin_nested():
            codes = totp.confirm_enrolment(session, user_id=user.user_id, firm_id=user.firm_id,
                                           code=form.get("code", ""), actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/account/two-factor", flash=f"Not done: {exc}")
    # the recovery codes are shown on this answer only (never in a cookie, a URL or the log)
    return render(request, "people/two_factor.html", {"enabled": True, "since": None, "secret": None, "uri": None,
                                                      "qr": None, "left": len(codes), "codes": codes})


# --------------------------------------------------------------------------------------------------
# platform API keys (admin)


@router.get("/office/api-keys")
def api_keys_page(request: Request, user: Role(*ADMIN), session: Db) -> Response:
    return _keys_page(request, user, session)


def _keys_page(request: Request, user, session, issued: dict | None = None) -> Response:
    keys = [apikey_admin.key_view(row) for row in apikey_admin.list_keys(session, firm_id=user.firm_id)]
    return render(request, "people/api_keys.html", {"keys": keys, "issued": issued})


@router.post("/office/api-keys")
def issue_api_key(request: Request, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    try:
        with session.begin_nested():
            row, secret = apikey_admin.issue_key(session, firm_id=user.firm_id, platform=form.get("platform", "").strip(),
                                                 actor=user.actor)
    except Invalid as exc:
        return redirect(request, "/office/api-keys", flash=f"Not done: {exc}")
    # the secret is shown on this answer only
    return _keys_page(request, user, session, issued={"id": row.id, "platform": row.platform, "secret": secret})


@router.post("/office/api-keys/{key_id}/revoke")
def revoke_api_key(request: Request, key_id: Annotated[str, Path(max_length=40)], user: Role(*ADMIN), session: Db,
                   form: Form) -> Response:
    row = apikey_admin.revoke_key(session, firm_id=user.firm_id, key_id=key_id, actor=user.actor)
    return redirect(request, "/office/api-keys", flash=f"Key {row.id} ({row.platform}) is revoked")


def _admin_act(request: Request, session, done, action) -> Response:
    try:
        with session.begin_nested():
            result = action()
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/users", flash=f"Not done: {exc}")
    return redirect(request, "/office/users", flash=done(result))


@router.post("/office/users/{user_id}/disable")
def disable(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _admin_act(request, session, lambda row: f"{row.email} is disabled; their sessions have ended",
                      lambda: user_service.set_active(session, firm_id=user.firm_id, user_id=user_id, active=False,
                                                      actor=user.actor, by_user_id=user.user_id))


@router.post("/office/users/{user_id}/enable")
def enable(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _admin_act(request, session, lambda row: f"{row.email} is enabled",
                      lambda: user_service.set_active(session, firm_id=user.firm_id, user_id=user_id, active=True,
                                                      actor=user.actor, by_user_id=user.user_id))


@router.post("/office/users/{user_id}/password")
def reset_password(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    password = form.get("password", "")
    if len(password) > user_service.MAX_PASSWORD:
        return redirect(request, "/office/users", flash="Not done: that password is too long")

    try:
        with session.begin_nested():
            row, generated = user_service.reset_password(session, firm_id=user.firm_id, user_id=user_id,
                                                         password=password or None, actor=user.actor,
                                                         by_user_id=user.user_id)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/users", flash=f"Not done: {exc}")
    if generated is None:
        return redirect(request, "/office/users", flash=f"The password of {row.email} is reset; their sessions have ended")
    # a generated password is shown on this answer only (never in a cookie, a URL or the log)
    return _users_page(request, user, session, generated={"email": row.email, "password": generated})


@router.post("/office/users/{user_id}/role")
def set_role(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _admin_act(request, session, lambda row: f"{row.email} is now {row.role}",
                      lambda: user_service.set_role(session, firm_id=user.firm_id, user_id=user_id,
                                                    role=form.get("role", ""), actor=user.actor,
                                                    by_user_id=user.user_id))


@router.post("/office/users/{user_id}/sessions/end")
def end_sessions(request: Request, user_id: UserId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _admin_act(request, session, lambda ended: f"{ended} session(s) ended",
                      lambda: user_service.end_sessions(session, firm_id=user.firm_id, user_id=user_id,
                                                        actor=user.actor))
