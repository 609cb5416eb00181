"""Rule packs in the back office: the firm's packs, two versions side by side, editing a draft, the
what-if back-test of a version against stored history, activating and retiring, and moving accounts to
another version of their pack (the audited re-bind: its what-if, then the move).

Roles as in the JSON API (``api/routers/packs.py``): admin and risk read packs and run the what-if
(it only reads) and move accounts (preview, then confirm with a reason); only admin stores a draft,
activates or retires. Saving, activating and retiring
call the same service functions as ``POST /api/v1/packs`` and ``…/activate`` / ``…/retire``, so
the same validation and the same audit entries apply.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import yaml

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...services import rebind as rebind_service
from ...services import rulepacks as pack_service
from ...services.catalog import pack_of
from ...services.errors import Conflict, Invalid, NotFound
from .. import queries_packs as q
from .. import rule_form
from ...http.pages import Form, Role, SameSiteOnly, checked_form, redirect, render
from ...roles import ADMIN, RISK

router = APIRouter()

PACK_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VersionQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
VersionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _summary(session, user, pack_id: str) -> q.PackSummary:
    if not PACK_ID.match(pack_id):
        raise NotFound(f"no rule pack {pack_id}")
    return q.pack_or_404(session, firm_id=user.firm_id, pack_id=pack_id)


def _confirm_phrase(action: str, row) -> str:
    return f"{action} {row.pack_id} v{row.version}"


# --------------------------------------------------------------------------------------------------
# reading


@router.get("/office/packs")
def packs_index(request: Request, user: Role(*RISK), session: Db) -> Response:
    packs = q.pack_summaries(session, firm_id=user.firm_id)
    return render(request, "packs/index.html", {"packs": packs, "may_edit": user.role in ADMIN})


@router.get("/office/packs/{pack_id}")
def pack_page(request: Request, pack_id: str, user: Role(*RISK), session: Db,
              a: VersionQuery = None, b: VersionQuery = None, all: bool = False) -> Response:  # noqa: A002
    summary = _summary(session, user, pack_id)
    default_a, default_b = q.default_pair(summary)
    va = q.version_in(summary, a) or default_a
    vb = q.version_in(summary, b) or default_b
    sections = q.diff_versions(pack_of(va.row), pack_of(vb.row))
    changed = sum(1 for s in sections for r in s.rows if r.change != "same")
    return render(request, "packs/pack.html", {
        "summary": summary, "va": va, "vb": vb, "sections": sections, "changed": changed, "show_all": all,
        "text_diff": q.unified_diff(va.row, vb.row), "may_edit": user.role in ADMIN,
        "phrase": _confirm_phrase,
    })


# --------------------------------------------------------------------------------------------------
# editing a draft (admin, like POST /api/v1/packs)


def _draft_page(request: Request, summary: q.PackSummary, *, text: str, source, error: str | None = None,
                status: int = 200) -> Response:
    path = _error_path(error)
    return render(request, "packs/draft.html", {
        "summary": summary, "text": text, "source": source, "error": error,
        "next_version": max(v.row.version for v in summary.versions) + 1,
        "error_path": path, "error_where": _in_words(text, path) if path else None,
    }, status=status)


def _in_words(text: str, path: str) -> str | None:
    """``$.phases[0].rules[1].amount`` → ``phase “phase-1”, rule 2 (max_loss), amount`` (when the text parses)."""
    try:
        node = yaml.safe_load(text) if not text.lstrip().startswith("{") else json.loads(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    words = []
    for name, index in re.findall(r"\.([A-Za-z_]\w*)|\[(\d+)\]", path[1:]):
        try:
            node = node[name] if name else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
        if name and name not in ("phases", "rules"):
            words.append(name)
        elif index and isinstance(node, dict) and "name" in node and "rules" in node:
            words.append(f"phase “{node['name']}”")
        elif index and isinstance(node, dict) and "kind" in node:
            words.append(f"rule {int(index) + 1} ({node.get('id') or node['kind']})")
        elif index:
            words.append(f"item {int(index) + 1}")
    return ", ".join(words) or None


def _error_path(error: str | None) -> str | None:
    """The field a validation message names (``draft: $.phases[0].rules[1].amount: …`` → ``$.phases[0]…``)."""
    if not error:
        return None
    match = re.search(r"(\$[\w.\[\]-]*)", error)
    return match.group(1) if match and match.group(1) != "$" else None


def _saved(request: Request, summary: q.PackSummary, row, created: bool, *, how: str) -> Response:
    """After either editor saved: the pack page comparing the active version with the draft, and what happened."""
    base = summary.active or summary.versions[-1]
    where = f"/office/packs/{summary.pack_id}?a={base.row.id}&b={row.id}"
    if not created:
        return redirect(request, where, flash=f"{summary.pack_id} v{row.version} is already stored with exactly "
                                              f"this content ({row.status}); nothing was added.")
    return redirect(request, where, flash=f"Draft {summary.pack_id} v{row.version} saved{how}. Nothing changes for "
                                          f"any account until it is activated.")


def _editor_start(session, user, pack_id: str, source: int | None):
    """What both editors (the YAML and the form) open with: the pack, the text of the version they start from
    (the one asked for, else the active one, else the newest), numbered as the next version, and that version."""
    summary = _summary(session, user, pack_id)
    start = q.version_in(summary, source) or summary.active or summary.versions[-1]
    next_version = max(v.row.version for v in summary.versions) + 1
    return summary, q.editor_text(start.row, version=next_version), start


@router.get("/office/packs/{pack_id}/draft")
def draft_form(request: Request, pack_id: str, user: Role(*ADMIN), session: Db,
               source: Annotated[int | None, Query(alias="from", ge=1, le=2**31 - 1)] = None) -> Response:
    summary, text, start = _editor_start(session, user, pack_id, source)
    return _draft_page(request, summary, text=text, source=start)


@router.post("/office/packs/{pack_id}/draft")
def draft_save(request: Request, pack_id: str, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    summary = _summary(session, user, pack_id)
    text = form.get("pack", "")
    source = q.version_in(summary, int(form["from"])) if form.get("from", "").isascii() and form.get("from", "").isdigit() else None
    if not text.strip():
        return _draft_page(request, summary, text=text, source=source, error="The pack is empty.", status=422)
    try:
        pack = pack_service.read_pack(text.encode(), source="draft")
        if pack.id != summary.pack_id:
            raise Invalid(f"draft: $.id: this form edits pack {summary.pack_id}; keep `id: {summary.pack_id}` "
                          f"(got {pack.id})")
        row, created = pack_service.add_version(session, firm_id=user.firm_id, pack=pack, actor=user.actor)
    except (Invalid, Conflict) as exc:
        return _draft_page(request, summary, text=text, source=source, error=str(exc), status=422)
    return _saved(request, summary, row, created, how="")


# --------------------------------------------------------------------------------------------------
# what-if (admin, risk: it only reads)


@router.get("/office/packs/{pack_id}/whatif", dependencies=[SameSiteOnly])
def whatif_page(request: Request, pack_id: str, user: Role(*RISK), session: Db,
                a: VersionQuery = None, b: VersionQuery = None,
                scope: Annotated[str, Query(pattern="^(bound|pack|list)$")] = "bound",
                accounts: Annotated[str, Query(max_length=20_000)] = "",
                limit: Annotated[int, Query(ge=1, le=q.MAX_ACCOUNTS)] = q.DEFAULT_ACCOUNTS,
                run: bool = False) -> Response:
    summary = _summary(session, user, pack_id)
    default_a, default_b = q.default_pair(summary)
    va = q.version_in(summary, a) or default_a
    vb = q.version_in(summary, b) or default_b
    ctx = {"summary": summary, "va": va, "vb": vb, "scope": scope, "accounts_text": accounts, "limit": limit,
           "max_accounts": q.MAX_ACCOUNTS, "max_events": q.MAX_EVENTS, "max_listed": q.MAX_LISTED,
           "run": None, "error": None}
    if run:
        try:
            chosen, capped = q.select_accounts(session, firm_id=user.firm_id, summary=summary, scope=scope,
                                               base=va.row, external_ids=q.parse_ids(accounts), limit=limit)
        except Invalid as exc:
            ctx["error"] = str(exc)
            return render(request, "packs/whatif.html", ctx, status=422)
        result = q.run_whatif(session, firm_id=user.firm_id, a=va.row, b=vb.row, accounts=chosen,
                              capped_accounts=capped)
        ctx["run"] = result
        ctx["totals"] = q.totals(result)
        ctx["changes"] = sorted(result.result.changes().items(), key=lambda kv: (-kv[1], kv[0]))
    return render(request, "packs/whatif.html", ctx)


# --------------------------------------------------------------------------------------------------
# activate / retire (admin, like POST /api/v1/packs/{id}/activate and /retire)


def _status_change(request: Request, pack_id: str, version_id: int, user, session, form: dict[str, str], action: str):
    summary = _summary(session, user, pack_id)
    use = q.version_in(summary, version_id)
    back = f"/office/packs/{summary.pack_id}"
    phrase = _confirm_phrase(action, use.row)
    if form.get("confirm", "").strip() != phrase:
        return redirect(request, back, flash=f"Not {action}d: type “{phrase}” to confirm.")
    try:
        if action == "activate":
            pack_service.activate_version(session, firm_id=user.firm_id, version_id=use.row.id, actor=user.actor)
        else:
            pack_service.retire_version(session, firm_id=user.firm_id, version_id=use.row.id, actor=user.actor)
    except (Conflict, Invalid) as exc:
        return redirect(request, back, flash=f"Not {action}d: {exc}")
    if action == "activate":
        message = (f"{use.row.pack_id} v{use.row.version} is now active: new accounts and products get it; "
                   f"accounts already bound keep their version.")
    else:
        message = f"{use.row.pack_id} v{use.row.version} is retired; accounts bound to it keep it."
    return redirect(request, back, flash=message)


@router.post("/office/packs/{pack_id}/versions/{version_id}/activate")
def activate(request: Request, pack_id: str, version_id: VersionId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _status_change(request, pack_id, version_id, user, session, form, "activate")


@router.post("/office/packs/{pack_id}/versions/{version_id}/retire")
def retire(request: Request, pack_id: str, version_id: VersionId, user: Role(*ADMIN), session: Db, form: Form) -> Response:
    return _status_change(request, pack_id, version_id, user, session, form, "retire")


# --------------------------------------------------------------------------------------------------
# re-bind: move accounts to a version, the what-if first (admin, risk; like POST /api/v1/packs/{id}/rebind)


def _rebind_selection(values, summary: q.PackSummary) -> rebind_service.Selection:
    """The selection from the form's (or query's) fields: listed external ids, or filters."""
    from_id = values.get("from_version", "")
    phase = (values.get("phase") or "").strip()
    product = values.get("product", "")
    from_version = q.version_in(summary, int(from_id)).row.id if from_id.isascii() and from_id.isdigit() else None
    return rebind_service.Selection(
        external_ids=tuple(q.parse_ids(values.get("accounts", ""))), from_version_id=from_version,
        product_id=int(product) if product.isascii() and product.isdigit() and len(product) < 10 else None,
        phase=phase[:64] or None)


def _rebind_page(request: Request, summary, target, values, *, plan=None, error: str | None = None,
                 status: int = 200) -> Response:
    return render(request, "packs/rebind.html", {
        "summary": summary, "target": target, "values": values, "plan": plan,
        "view": rebind_service.plan_view(plan) if plan is not None else None, "error": error,
        "phases": [p.name for p in pack_of(target.row).phases],
    }, status=status)


@router.get("/office/packs/{pack_id}/versions/{version_id}/rebind", dependencies=[SameSiteOnly])
def rebind_page(request: Request, pack_id: str, version_id: VersionId, user: Role(*RISK), session: Db,
                accounts: Annotated[str, Query(max_length=20_000)] = "",
                from_version: Annotated[str, Query(max_length=12)] = "",
                phase: Annotated[str, Query(max_length=64)] = "",
                product: Annotated[str, Query(max_length=12)] = "",
                preview: bool = False) -> Response:
    summary = _summary(session, user, pack_id)
    target = q.version_in(summary, version_id)
    values = {"accounts": accounts, "from_version": from_version, "phase": phase, "product": product}
    if not preview:
        return _rebind_page(request, summary, target, values)
    try:
        plan = rebind_service.preview(session, firm_id=user.firm_id, version_id=target.row.id,
                                      selection=_rebind_selection(values, summary))
    except (Invalid, Conflict) as exc:
        return _rebind_page(request, summary, target, values, error=str(exc), status=422)
    return _rebind_page(request, summary, target, values, plan=plan)


@router.post("/office/packs/{pack_id}/versions/{version_id}/rebind")
def rebind_confirm(request: Request, pack_id: str, version_id: VersionId, user: Role(*RISK), session: Db,
                   form: Form) -> Response:
    summary = _summary(session, user, pack_id)
    target = q.version_in(summary, version_id)
    values = {name: form.get(name, "") for name in ("accounts", "from_version", "phase", "product")}
    try:
        plan = rebind_service.apply(session, firm_id=user.firm_id, version_id=target.row.id,
                                    selection=_rebind_selection(values, summary), reason=form.get("reason", ""),
                                    actor=user.actor, expect=form.get("expect") or None)
    except (Invalid, Conflict) as exc:  # refused before anything was written
        try:
            plan = rebind_service.preview(session, firm_id=user.firm_id, version_id=target.row.id,
                                          selection=_rebind_selection(values, summary))
        except (Invalid, Conflict):
            plan = None
        return _rebind_page(request, summary, target, values, plan=plan, error=f"Nothing was moved: {exc}",
                            status=422)
    changed = sum(1 for mv in plan.moves if mv.changed)
    return redirect(request, f"/office/packs/{summary.pack_id}",
                    flash=f"Moved {len(plan.moves)} account(s) to {summary.pack_id} v{target.row.version} "
                          f"({changed} with a changed status or decisions); each move is in the audit log.")


# --------------------------------------------------------------------------------------------------
# the form-based rule editor (admin): fields per rule kind from the pack schema, the YAML beside it


MAX_FORM_FIELDS = 2000
MAX_FORM_TEXT = 200_000


def _form_page(request: Request, summary: q.PackSummary, *, text: str, source, error: str | None = None,
               status: int = 200) -> Response:
    phases = None
    try:
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise Invalid("the YAML beside the form is not a rule pack (a mapping with phases)")
        phases = rule_form.rule_forms(doc)
    except (yaml.YAMLError, Invalid, AttributeError, TypeError) as exc:
        error = error or f"the YAML cannot be shown as a form: {exc}"
    path = _error_path(error)
    return render(request, "packs/form.html", {
        "summary": summary, "text": text, "source": source, "error": error, "phases": phases,
        "kinds": list(rule_form.kinds()), "next_version": max(v.row.version for v in summary.versions) + 1,
        "error_path": path, "error_where": _in_words(text, path) if path and phases is not None else None,
    }, status=status)


@router.get("/office/packs/{pack_id}/form")
def rule_form_page(request: Request, pack_id: str, user: Role(*ADMIN), session: Db,
                   source: Annotated[int | None, Query(alias="from", ge=1, le=2**31 - 1)] = None) -> Response:
    summary, text, start = _editor_start(session, user, pack_id, source)
    return _form_page(request, summary, text=text, source=start)


@router.post("/office/packs/{pack_id}/form")
async def rule_form_post(request: Request, pack_id: str, user: Role(*ADMIN), session: Db) -> Response:
    """``action``: ``yaml`` shows the form of the YAML as edited; ``apply`` writes the form into the YAML (and
    checks it) without saving; ``save`` writes it and saves a new draft exactly as the YAML editor does."""
    form = await checked_form(request, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_TEXT)
    summary = _summary(session, user, pack_id)
    text = form.get("pack") if isinstance(form.get("pack"), str) else ""
    chosen = form.get("from") if isinstance(form.get("from"), str) else ""
    source = q.version_in(summary, int(chosen)) if chosen.isascii() and chosen.isdigit() else None
    action = form.get("action")
    if action == "yaml":
        return _form_page(request, summary, text=text, source=source)
    try:
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise Invalid("the YAML beside the form is not a rule pack (a mapping with phases)")
        text = q.dump_doc(rule_form.apply_form(doc, form))
        pack = pack_service.read_pack(text.encode(), source="form")
        if pack.id != summary.pack_id:
            raise Invalid(f"form: $.id: this form edits pack {summary.pack_id}; keep `id: {summary.pack_id}` "
                          f"(got {pack.id})")
        if action != "save":
            return _form_page(request, summary, text=text, source=source)
        row, created = pack_service.add_version(session, firm_id=user.firm_id, pack=pack, actor=user.actor)
    except yaml.YAMLError as exc:
        return _form_page(request, summary, text=text, source=source, error=f"not YAML: {exc}", status=422)
    except (Invalid, Conflict) as exc:
        return _form_page(request, summary, text=text, source=source, error=str(exc), status=422)
    return _saved(request, summary, row, created, how=" from the form")
