"""`propcrm packs rebind` and `propcrm halts …` (issue 19): moving accounts to another version of their pack,
and the firm-wide kill switch — in the service's database, audited with the operating-system user as actor.

Both show what they would do first: the re-bind its what-if (each account's status now and after, the
decisions that differ), the halt its count of accounts. Without ``--yes`` a terminal asks to confirm; a
script without ``--yes`` gets the preview only and nothing changes.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

FIRM_HELP = "firm id (default: the only firm)"
DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"
Firm = Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)]
Url = Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)]
Reason = Annotated[Optional[str], typer.Option("--reason", help="why (required to change anything; audited)")]
Yes = Annotated[bool, typer.Option("--yes", help="do it without asking (after printing the preview)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the preview / result as JSON")]


def _in_transaction(database_url: str | None, firm: str | None, action):
    from .common import in_firm_transaction

    return in_firm_transaction(database_url, firm, action)


def _confirmed(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print("nothing changed: add --yes (and --reason) to do it", file=sys.stderr)
        return False
    return typer.confirm(question, err=True)


def _print_plan(view: dict) -> None:
    target = view["target"]
    print(f"move to {target['pack_id']} v{target['version']} ({target['status']}): {len(view['accounts'])} account(s), "
          f"{view['changed']} changed by the move")
    for acc in view["accounts"]:
        status = acc["status_now"] if acc["status_now"] == acc["status_after"] else \
            f"{acc['status_now']} -> {acc['status_after']}"
        print(f"  {acc['external_id']} ({acc['phase']}, v{acc['from_version']['version']}): {status}; "
              f"{acc['events_replayed']} event(s) replayed")
        if acc["problem"]:
            print(f"    cannot move: {acc['problem']}")
        for d in acc["decisions_lost"]:
            print(f"    - {d['kind']} {d['rule']} at {d['ts']}: {d['message']}")
        for d in acc["decisions_gained"]:
            print(f"    + {d['kind']} {d['rule']} at {d['ts']}: {d['message']}")


def register(packs_app: typer.Typer, app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``packs rebind``, the ``halts`` group and ``bench rebind``."""

    @bench_app.command("rebind")
    def bench(accounts: Annotated[int, typer.Option(help="accounts to move")] = 100,
              events: Annotated[int, typer.Option(help="stored equity reports per account")] = 500) -> None:
        """Seconds for the re-bind's what-if and for the move, over a firm built here (SQLite)."""
        from ..tools.bench_rebind import bench_rebind

        bench_rebind(accounts=accounts, events=events)

    @packs_app.command("rebind")
    def rebind(
        to: Annotated[str, typer.Option("--to", help="the version to move to: PACK_ID:VERSION")],
        account: Annotated[Optional[list[str]], typer.Option("--account", help="an account's external id (repeat)")] = None,
        from_version: Annotated[Optional[int], typer.Option("--from-version", help="only accounts bound to this version number")] = None,
        product: Annotated[Optional[int], typer.Option("--product", help="only accounts sold as this product id")] = None,
        phase: Annotated[Optional[str], typer.Option("--phase", help="only accounts in this phase")] = None,
        reason: Reason = None, yes: Yes = False, as_json: AsJson = False, firm: Firm = None, database_url: Url = None,
    ) -> None:
        """Move accounts to another version of their rule pack: the what-if first (each history replayed under
        the new version), then, confirmed, the move — audited per account with old and new version and reason."""
        from ..services import rebind as service
        from ..services.accounts import resolve_pack_version
        from .common import cli_actor, fail

        pack_id, sep, number = to.partition(":")
        if not pack_id or not sep or not number.isdigit():
            raise fail("--to must be PACK_ID:VERSION")

        def selection(session, firm_id) -> tuple[int, service.Selection]:
            target = resolve_pack_version(session, firm_id=firm_id, pack_id=pack_id, version=int(number))
            from_id = None
            if from_version is not None:
                from_id = resolve_pack_version(session, firm_id=firm_id, pack_id=pack_id, version=from_version).id
            return target.id, service.Selection(external_ids=tuple(account or ()), from_version_id=from_id,
                                                product_id=product, phase=phase)

        def look(session, firm_id):
            version_id, chosen = selection(session, firm_id)
            return service.plan_view(service.preview(session, firm_id=firm_id, version_id=version_id,
                                                     selection=chosen))

        view = _in_transaction(database_url, firm, look)
        if as_json:
            print(json.dumps(view, default=str, indent=2))
        else:
            _print_plan(view)
        if view["problems"]:
            raise fail(f"{view['problems']} account(s) cannot be moved; nothing was moved")
        if not _confirmed(f"move these {len(view['accounts'])} account(s)?", yes):
            return
        if not reason:
            raise fail("--reason is required to move accounts")

        def move(session, firm_id):
            version_id, chosen = selection(session, firm_id)
            return service.plan_view(service.apply(session, firm_id=firm_id, version_id=version_id, selection=chosen,
                                                   reason=reason, actor=cli_actor(), expect=view["digest"]))

        done = _in_transaction(database_url, firm, move)
        print(f"moved {len(done['accounts'])} account(s) to {pack_id} v{number}", file=sys.stderr)

    halts_app = typer.Typer(help="The firm-wide kill switch: halt trading on a group of accounts, and resume.",
                            no_args_is_help=True)
    app.add_typer(halts_app, name="halts")

    @halts_app.command("halt")
    def halt(
        everything: Annotated[bool, typer.Option("--all", help="every account of the firm")] = False,
        product: Annotated[Optional[int], typer.Option("--product", help="accounts sold as this product id")] = None,
        pack: Annotated[Optional[str], typer.Option("--pack", help="accounts on any version of this pack")] = None,
        version_id: Annotated[Optional[int], typer.Option("--version-id", help="accounts bound to this version id")] = None,
        phase: Annotated[Optional[str], typer.Option("--phase", help="accounts in this phase")] = None,
        account: Annotated[Optional[list[str]], typer.Option("--account", help="an account's external id (repeat)")] = None,
        reason: Reason = None, yes: Yes = False, firm: Firm = None, database_url: Url = None,
    ) -> None:
        """Halt trading on every trading account of the scope (filters combine): each is disabled on its
        platform and marked halted; its events keep being evaluated. Prints the count first."""
        from ..services import halts as service
        from .common import cli_actor, fail

        def scope() -> service.HaltScope:
            return service.HaltScope(everything=everything, product_id=product, pack_id=pack,
                                     pack_version_id=version_id, phase=phase, accounts=tuple(account or ()))

        preview = _in_transaction(database_url, firm, lambda s, f: service.preview_halt(s, firm_id=f, scope=scope()))
        print(f"{preview.count:,} trading account(s) would be halted ({preview.scope.describe()})"
              + (f"; {preview.not_trading:,} in scope already stopped" if preview.not_trading else "")
              + (f"; unknown: {', '.join(preview.unknown)}" if preview.unknown else ""))
        if not _confirmed(f"halt trading on {preview.count:,} account(s)?", yes):
            return
        if not reason:
            raise fail("--reason is required to halt")
        row = _in_transaction(database_url, firm, lambda s, f: service.halt_view(service.halt(
            s, firm_id=f, scope=scope(), reason=reason, actor=cli_actor(), expected_count=preview.count)))
        print(f"halt {row['id']}: {row['accounts']:,} account(s) halted")

    @halts_app.command("resume")
    def resume(halt_id: Annotated[int, typer.Argument(help="the halt's id (propcrm halts list)")],
               reason: Reason = None, firm: Firm = None, database_url: Url = None) -> None:
        """Let the accounts a halt stopped trade again (not those breached or stopped by a person meanwhile)."""
        from ..services import halts as service
        from .common import cli_actor, fail

        if not reason:
            raise fail("--reason is required to resume")
        row = _in_transaction(database_url, firm, lambda s, f: service.halt_view(service.resume(
            s, firm_id=f, halt_id=halt_id, reason=reason, actor=cli_actor())))
        print(f"halt {row['id']} resumed: {row['resumed']:,} of {row['accounts']:,} account(s) trade again")

    @halts_app.command("list")
    def list_halts(firm: Firm = None, database_url: Url = None) -> None:
        """The firm's halts, newest first: scope, who, why, how many, and whether resumed."""
        from ..services import halts as service

        def rows(session, firm_id):
            return [service.halt_view(r, still=service.still_halted(session, firm_id=firm_id, halt_id=r.id))
                    for r in service.list_halts(session, firm_id=firm_id)]

        for row in _in_transaction(database_url, firm, rows):
            state = (f"resumed {row['resumed_at']:%Y-%m-%d %H:%M} by {row['resumed_by']} ({row['resumed']} back)"
                     if row["resumed_at"] else f"{row['still_halted']} still halted")
            print(f"#{row['id']} {row['created_at']:%Y-%m-%d %H:%M} {row['actor']}: {row['accounts']} account(s) "
                  f"{json.dumps(row['scope'])} — {row['reason']}; {state}")
