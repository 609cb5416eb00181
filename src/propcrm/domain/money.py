"""Exact money.

All money is :class:`decimal.Decimal`. Amounts are compared and stored exactly as the platform sent
them; derived thresholds (percentages of a balance) are computed exactly too — a percentage of an
amount with two decimals has at most four, and nothing is rounded inside the engine. Rounding happens
only at the edges, and explicitly:

* :func:`fmt` renders an amount for people with two decimals, ROUND_HALF_EVEN, thousands separators.
* :func:`to_cents` quantizes to the cent with ROUND_DOWN (used where money is paid out: never more).
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal, localcontext

ZERO = Decimal(0)
HUNDRED = Decimal(100)
CENT = Decimal("0.01")


def pct(amount: Decimal, percent: Decimal) -> Decimal:
    """``percent`` % of ``amount``, exact."""
    return amount * percent / HUNDRED


def fmt(amount: Decimal | None) -> str:
    """``94999.005`` → ``"94,999.00"`` (half-even to the cent; display only, never compared)."""
    if amount is None:
        return "—"
    if not amount.is_finite() or amount.adjusted() >= 26:  # never from bounded events; shown, not written out
        return f"{amount:.6E}"
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_EVEN):,.2f}"


def fmt_pct(percent: Decimal) -> str:
    """``Decimal("5")`` → ``"5%"``, ``Decimal("2.5")`` → ``"2.5%"``."""
    text = format(percent.normalize(), "f")
    return f"{text}%"


def to_cents(amount: Decimal) -> Decimal:
    """Round toward zero to the cent: the amount a firm may pay without paying too much."""
    return amount.quantize(CENT, rounding=ROUND_DOWN)


def wide_context():
    """Decimal arithmetic without an exponent limit, for reading a state an older version stored
    before events were bounded (lots of 1e1000000): it is shown, not refused with an overflow."""
    return localcontext(Context(prec=28, Emax=MAX_EMAX, Emin=MIN_EMIN))
