"""Documents a trader downloads: a payout's statement and certificates, as PDF (fpdf2).

Plain facts laid out on an A4 page with the core fonts. Those fonts cover Latin-1 only, so every text
goes through :func:`latin1` (a minus sign becomes a hyphen, a character outside it a question mark): a
name in another script still prints, and the verification page shows it exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from fpdf import FPDF

_REPLACE = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
            "\u2026": "...", "\u2192": "->", "\u2265": ">=", "\u2264": "<=", "\u2248": "~", "\u2713": "v",
            "\u2717": "x"}


def latin1(text: object) -> str:
    """``text`` as the core PDF fonts can print it."""
    out = str(text)
    for old, new in _REPLACE.items():
        out = out.replace(old, new)
    return out.encode("latin-1", "replace").decode("latin-1")


def _page(title: str, firm: str) -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_title(latin1(title))
    pdf.set_author(latin1(firm))
    pdf.set_creator("propcrm")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 11)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(0, 8, latin1(firm), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "B", 20)
    pdf.multi_cell(0, 10, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    return pdf


def _rows(pdf: FPDF, rows: Sequence[tuple[str, str]], *, label_width: float = 60) -> None:  # noqa: D103
    for label, value in rows:
        pdf.set_font("Helvetica", "", 10)
        pdf.set_text_color(90, 90, 90)
        pdf.cell(label_width, 7, latin1(label))
        pdf.set_text_color(0, 0, 0)
        pdf.set_font("Helvetica", "B", 10)
        pdf.multi_cell(0, 7, latin1(value), new_x="LMARGIN", new_y="NEXT")


def payout_statement(*, firm: str, payout_id: int, facts: Sequence[tuple[str, str]],
                     steps: Sequence[tuple[str, str, str]], generated: dt.datetime) -> bytes:
    """A payout's statement: who, which account, how much, how it is paid, and the amount step by step
    (``steps``: label, amount, how it is derived)."""
    pdf = _page(f"Payout statement no. {payout_id}", firm)
    _rows(pdf, facts)
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, "How the amount is made up", new_x="LMARGIN", new_y="NEXT")
    for label, amount, how in steps:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(95, 6, latin1(label))
        pdf.cell(0, 6, latin1(amount), align="R", new_x="LMARGIN", new_y="NEXT")
        if how:
            pdf.set_font("Helvetica", "", 8)
            pdf.set_text_color(90, 90, 90)
            pdf.multi_cell(0, 4.5, latin1(how), new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(0, 0, 0)
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(0, 4.5, latin1(f"Generated {generated:%Y-%m-%d %H:%M} UTC by propcrm from the firm's records. "
                                  "Amounts are exact; the trader's amount is rounded down to the cent."),
                   new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def certificate(*, firm: str, title: str, name: str, lines: Sequence[str], facts: Sequence[tuple[str, str]],
                verify_url: str) -> bytes:
    """A certificate: the achievement in large type, its facts, and where anyone can verify it."""
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_title(latin1(title))
    pdf.set_author(latin1(firm))
    pdf.set_creator("propcrm")
    pdf.add_page()
    pdf.set_draw_color(31, 94, 255)
    pdf.set_line_width(1.2)
    pdf.rect(10, 10, pdf.w - 20, pdf.h - 20)
    pdf.set_y(28)
    pdf.set_font("Helvetica", "B", 14)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(0, 8, latin1(firm), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "B", 30)
    pdf.cell(0, 18, latin1(title), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 13)
    pdf.cell(0, 10, "awarded to", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 24)
    pdf.cell(0, 14, latin1(name), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    for line in lines:
        pdf.cell(0, 8, latin1(line), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 11)
    for label, value in facts:
        pdf.cell(0, 7, latin1(f"{label}: {value}"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(pdf.h - 32)
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, "Verify this certificate at", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(0, 5, latin1(verify_url), align="C", link=verify_url, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


__all__ = ["certificate", "latin1", "payout_statement"]
