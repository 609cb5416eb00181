"""MT5 "Trade History Report" files built from the documented layout, for the import tests.

The terminal (History → Report → HTML / Open XML) writes a header (Name, Account, Company, Date) and
the sections Positions, Orders, Deals, Open Positions, Working Orders and Results, each a title row,
a header row and its rows; numbers with spaces as thousands separators and ``- `` before negatives;
times ``YYYY.MM.DD hh:mm:ss`` in server time. The HTML is UTF-16 with a BOM and uses colspans.
"""

from __future__ import annotations

import html
import io

HEADER_POSITIONS = ["Time", "Position", "Symbol", "Type", "Volume", "Price", "S / L", "T / P", "Time", "Price",
                    "Commission", "Swap", "Profit"]
HEADER_ORDERS = ["Open Time", "Order", "Symbol", "Type", "Volume", "Price", "S / L", "T / P", "Time", "State",
                 "", "Comment"]
HEADER_DEALS = ["Time", "Deal", "Symbol", "Type", "Direction", "Volume", "Price", "Order", "Commission", "Fee",
                "Swap", "Profit", "Balance", "Comment"]


def money(text: str) -> str:
    """``-1234.50`` as the report writes it: ``- 1 234.50``."""
    negative = text.startswith("-")
    whole, _, cents = text.lstrip("-").partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return ("- " if negative else "") + " ".join(groups) + ("." + cents if cents else "")


POSITIONS = [
    ["2026.03.02 10:00:00", "5001", "EURUSD", "buy", "1", "1.08500", "1.08000", "1.09500", "2026.03.02 11:30:00",
     "1.08000", "-7.00", "-7.00", money("-500.00")],
    ["2026.03.02 10:00:05", "5002", "GBPUSD", "sell", "0.5", "1.27000", "", "", "2026.03.02 12:30:00", "1.26800",
     "-3.50", "0.00", money("100.00")],
    ["2026.03.03 09:00:00", "5006", "XAUUSD", "buy", "2", "2 300.00", "", "", "2026.03.03 10:00:00", "2 270.00",
     "-10.00", "0.00", money("-6000.00")],
]
DEALS = [
    ["2026.03.02 09:00:00", "1000", "", "balance", "", "", "", "", "0.00", "0.00", "0.00", money("100000.00"),
     money("100000.00"), "Initial deposit"],
    ["2026.03.02 10:00:00", "1001", "EURUSD", "buy", "in", "1", "1.08500", "5001", "-3.50", "0.00", "0.00", "0.00",
     money("99996.50"), ""],
    ["2026.03.02 10:00:05", "1002", "GBPUSD", "sell", "in", "0.5", "1.27000", "5002", "-1.75", "0.00", "0.00", "0.00",
     money("99994.75"), ""],
    ["2026.03.02 11:30:00", "1003", "EURUSD", "sell", "out", "1", "1.08000", "5003", "-3.50", "0.00", "-7.00",
     money("-500.00"), money("99484.25"), "[sl 1.08000]"],
    ["2026.03.02 12:00:00", "1004", "GBPUSD", "buy", "out", "0.2", "1.26900", "5004", "-0.70", "0.00", "0.00",
     money("20.00"), money("99503.55"), ""],
    ["2026.03.02 12:30:00", "1005", "GBPUSD", "buy", "out", "0.3", "1.26800", "5005", "-1.05", "0.00", "0.00",
     money("60.00"), money("99562.50"), ""],
    ["2026.03.03 09:00:00", "1006", "XAUUSD", "buy", "in", "2", "2 300.00", "5006", "-5.00", "0.00", "0.00", "0.00",
     money("99557.50"), ""],
    ["2026.03.03 10:00:00", "1007", "XAUUSD", "sell", "out", "2", "2 270.00", "5007", "-5.00", "0.00", "0.00",
     money("-6000.00"), money("93552.50"), ""],
]


def html_report(*, login: str = "51234567", deals=DEALS, positions=POSITIONS) -> bytes:
    def row(cells, *, header=False, spans=None):
        tag = "th" if header else "td"
        out = []
        for index, cell in enumerate(cells):
            span = (spans or {}).get(index)
            attr = f' colspan="{span}"' if span else ""
            out.append(f"<{tag} nowrap{attr}>{html.escape(cell)}</{tag}>")
        return "<tr align=\"right\">" + "".join(out) + "</tr>\n"

    def title(text):
        return f'<tr align="center"><td colspan="14" style="height: 30px"><div style="font: 10pt Tahoma"><b>{text}</b></div></td></tr>\n'

    parts = ["<!DOCTYPE html><html><head><title>51234567: Ada Trader - Trade History Report</title>",
             '<meta http-equiv="Content-Type" content="text/html; charset=utf-16"></head><body><div align="center">',
             '<table cellspacing="1" cellpadding="3" border="0">\n',
             '<tr align="center"><td colspan="14"><div style="font: 14pt Tahoma"><b>Trade History Report</b></div></td></tr>\n',
             row(["Name:", "", "", "Ada Trader"], spans={0: 3}),
             row(["Account:", "", "", f"{login} (USD, Demo Broker Ltd, demo, Hedge)"], spans={0: 3}),
             row(["Company:", "", "", "Demo Broker Ltd"], spans={0: 3}),
             row(["Date:", "", "", "2026.03.04 08:00"], spans={0: 3}),
             title("Positions"), row(HEADER_POSITIONS, header=True)]
    parts += [row(r) for r in positions]
    parts += [title("Orders"), row(HEADER_ORDERS, header=True)]
    parts += [title("Deals"), row(HEADER_DEALS, header=True)]
    parts += [row(r) for r in deals]
    parts += [row(["", "", "", "", "", "", "", "", "-36.50", "0.00", "-7.00", money("93552.50"), "", ""])]
    parts += [title("Open Positions"), row(HEADER_POSITIONS[:9] + ["Market Price", "Swap", "Profit", "Comment"], header=True)]
    parts += [title("Results"), row(["Total Net Profit:", "", "", money("-6447.50")])]
    parts.append("</table></div></body></html>")
    return "".join(parts).encode("utf-16")


def xlsx_report(*, login: str = "51234567", deals=DEALS, positions=POSITIONS) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Trade History Report"])
    sheet.append(["Name:", None, None, "Ada Trader"])
    sheet.append(["Account:", None, None, f"{login} (USD, Demo Broker Ltd, demo, Hedge)"])
    sheet.append(["Positions"])
    sheet.append(HEADER_POSITIONS)
    for r in positions:
        sheet.append(r)
    sheet.append(["Deals"])
    sheet.append(HEADER_DEALS)
    for r in deals:  # Excel keeps numbers as numbers
        sheet.append([_cell(c, i) for i, c in enumerate(r)])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _cell(text: str, index: int):
    if index in (5, 6, 8, 9, 10, 11, 12) and text:
        return float(text.replace(" ", "").replace("- ", "-"))
    if index in (1,) and text:
        return int(text)
    return text
