"""`propcrm lifecycle …`: trader stages, payouts, scaling and the business numbers from the command line.

Approving a payout is not here on purpose: maker-checker needs two identified finance users, which
the API has (``POST /api/v1/payouts/{id}/prepare`` and ``…/approve``) and a shell does not.

Keep imports of heavy modules inside the commands: every `propcrm` invocation imports this module.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Optional

import typer

_DB = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"
Firm = Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")]
Url = Annotated[Optional[str], typer.Option("--database-url", help=_DB)]
_MAX_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL: a larger one is a usage error, not a database traceback


def _print(document) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False,
                     default=lambda v: v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else str(v)))


def _run(database_url: Optional[str], firm: Optional[str], work):
    """Run ``work(session, firm_id)`` in one transaction on the CLI's database."""
    from . import common as cli
    from ..adapters.db.session import sessions
    from ..services.errors import Conflict, Invalid, NotFound

    engine = cli.database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = cli.firm_of(session, firm, create=False)
            try:
                return work(session, firm_id)
            except (Invalid, Conflict, NotFound) as exc:
                raise cli.fail(str(exc)) from None
    finally:
        engine.dispose()


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this feature's commands to the `propcrm` app (and its `bench` group)."""
    lifecycle_app = typer.Typer(help="Trader lifecycle, payouts, capital scaling, business numbers.",
                                no_args_is_help=True)
    app.add_typer(lifecycle_app, name="lifecycle")

    @lifecycle_app.command("sync")
    def sync(firm: Firm = None, database_url: Url = None) -> None:
        """Bring every trader's stage up to date with their orders and accounts (and expire KYC)."""
        from ..services.lifecycle import sync_firm

        moved = _run(database_url, firm, lambda s, f: sync_firm(s, firm_id=f))
        print(f"{moved} trader(s) moved")

    @lifecycle_app.command("trader")
    def trader(trader_id: Annotated[int, typer.Argument(help="the trader's id", min=1, max=_MAX_ID)],
               firm: Firm = None, database_url: Url = None) -> None:
        """A trader's stage, KYC, accounts and timeline."""
        from ..services.communications import timeline
        from ..services.lifecycle import sync as sync_one
        from ..services.lifecycle import trader_view

        def work(session, firm_id):
            sync_one(session, firm_id=firm_id, trader_id=trader_id, actor="cli")
            return {**trader_view(session, firm_id=firm_id, trader_id=trader_id),
                    "timeline": timeline(session, firm_id=firm_id, trader_id=trader_id, limit=50)}

        _print(_run(database_url, firm, work))

    @lifecycle_app.command("eligibility")
    def eligibility(account_id: Annotated[int, typer.Argument(help="the account's id", min=1, max=_MAX_ID)],
                    firm: Firm = None, database_url: Url = None) -> None:
        """Every payout check of an account now, and the amount step by step."""
        from ..services.payouts import preview

        _print(_run(database_url, firm, lambda s, f: preview(s, firm_id=f, account_id=account_id)))

    @lifecycle_app.command("payouts")
    def payouts(status: Annotated[Optional[str], typer.Option("--status", help="requested | prepared | approved | "
                                                                           "rejected | refused")] = None,
                firm: Firm = None, database_url: Url = None) -> None:
        """Payouts of the firm."""
        from ..services.payouts import list_payouts, payout_view

        _print(_run(database_url, firm, lambda s, f: [payout_view(s, p) for p in list_payouts(s, firm_id=f,
                                                                                               status=status)]))

    @lifecycle_app.command("scale")
    def scale(firm: Firm = None, database_url: Url = None) -> None:
        """Review every funded account with a scaling plan: scale (or queue for approval) the eligible."""
        from ..services.scaling import run

        _print(_run(database_url, firm, lambda s, f: run(s, firm_id=f, actor="cli")))

    @lifecycle_app.command("numbers")
    def numbers(firm: Firm = None, database_url: Url = None) -> None:
        """Pass rates, time to pass, breaches by rule, payout ratio, open payout liability."""
        from ..services.business import business_numbers

        _print(_run(database_url, firm, lambda s, f: business_numbers(s, firm_id=f)))

    @lifecycle_app.command("settings")
    def settings(
        dual_approval_over: Annotated[Optional[str], typer.Option(
            "--dual-approval-over", help="payouts above this trader amount need two approvers")] = None,
        scaling_mode: Annotated[Optional[str], typer.Option("--scaling-mode", help="auto | approval")] = None,
        firm: Firm = None, database_url: Url = None,
    ) -> None:
        """Show (or set) the firm's payout approval threshold and scaling mode."""
        from ..services.accounts import money
        from ..services.lifecycle import settings_of, update_settings

        def work(session, firm_id):
            row = settings_of(session, firm_id)
            if dual_approval_over is not None or scaling_mode is not None:
                row = update_settings(session, firm_id=firm_id, dual_approval_over=dual_approval_over,
                                      scaling_mode=scaling_mode, actor="cli")
            return {"dual_approval_over": money(row.dual_approval_over), "scaling_mode": row.scaling_mode}

        _print(_run(database_url, firm, work))
