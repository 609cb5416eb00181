"""The MetaTrader 5 terminal's trade history report (HTML or Excel) → propcrm events.

The terminal's *History → Report* saves a "Trade History Report": a header (``Name:``,
``Account:`` "login (currency, company, server type)", ``Company:``, ``Date:``) and sections, each a
title row, a row of column names and its rows — ``Positions`` (Time, Position, Symbol, Type, Volume,
Price, S / L, T / P, Time, Price, Commission, Swap, Profit), ``Orders``, ``Deals`` (Time, Deal,
Symbol, Type, Direction, Volume, Price, Order, Commission, Fee, Swap, Profit, Balance, Comment),
``Open Positions``, ``Working Orders`` and the summary. The HTML file is UTF-16 with a BOM; numbers
carry spaces as thousands separators (``10 020.31``, ``- 2.50``); times are ``YYYY.MM.DD hh:mm:ss``
in the *trade server's* time zone, so an import names that zone (:class:`ServerClock`).

Events come from the **Deals** (the same ``deal-<ticket>`` ids as the live connectors, so a report
that overlaps a streamed period adds nothing twice when imported under the connection's source) and
go through the deal mapping of :mod:`.mapping`. The report's deals do not name their position: an
entry deal opens the position named by its order (hedging accounts: the position ticket is the
opening order's); an exit deal is matched to the row of ``Positions`` (or ``Open Positions``) of the
same symbol and opposite side that was open at its time and still has volume — its closing time and
price first. A starting deposit before the first trade is the pack's initial balance, not a deposit,
and is left out unless asked for.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any

from ..port import PlatformEvent
from ..servertime import ServerClock
from .mapping import Mt5Deal, deal_events

TITLES = ("Positions", "Orders", "Deals", "Open Positions", "Working Orders", "Results", "Summary", "Trades")
ACTIONS = {"buy": 0, "sell": 1, "balance": 2, "credit": 3, "charge": 4, "correction": 5, "bonus": 6,
           "commission": 7, "daily commission": 8, "monthly commission": 9, "daily agent commission": 10,
           "monthly agent commission": 11, "interest rate": 12, "canceled buy": 13, "canceled sell": 14,
           "dividend": 15, "franked dividend": 16, "tax": 17, "agent commission": 18,
           "so compensation": 19, "so compensation credit": 20}
ENTRIES = {"in": 0, "out": 1, "in/out": 2, "inout": 2, "out by": 3}
_TIME = re.compile(r"^\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}(:\d{2})?$")
ZERO = Decimal(0)


class ReportError(ValueError):
    """The file is not a trade history report propcrm can read; the message says what is wrong."""


@dataclass
class ParsedReport:
    login: str | None
    currency: str | None
    events: list[PlatformEvent] = field(default_factory=list)
    deals: int = 0
    positions: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped_initial: Decimal | None = None


# ----------------------------------------------------------------------------------------- reading
class _Tables(HTMLParser):
    """Every table row of the document as a list of cell texts (a cell spanning n columns gives n)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._span = 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            span = dict(attrs).get("colspan") or "1"
            self._span = int(span) if span.isdigit() else 1
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            self._row.append(text)
            self._row.extend([""] * (max(self._span, 1) - 1))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if len(data) > 1 and data[1:2] == b"\x00" and data[0:1] != b"\x00":
        return data.decode("utf-16-le")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def html_rows(data: bytes) -> list[list[str]]:
    parser = _Tables()
    parser.feed(_decode(data))
    parser.close()
    return parser.rows


def xlsx_rows(data: bytes) -> list[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds
        raise ReportError(f"not a readable Excel workbook: {type(exc).__name__}: {exc}") from None
    sheet = book.worksheets[0]
    rows = []
    for values in sheet.iter_rows(values_only=True):
        cells = []
        for value in values:
            if value is None:
                cells.append("")
            elif isinstance(value, dt.datetime):
                cells.append(value.strftime("%Y.%m.%d %H:%M:%S"))
            elif isinstance(value, float):
                cells.append(repr(value))
            else:
                cells.append(" ".join(str(value).split()))
        rows.append(cells)
    book.close()
    return rows


def _number(text: str, what: str) -> Decimal:
    cleaned = text.replace("\xa0", "").replace(" ", "").replace(",", "")
    if cleaned in ("", "-"):
        return ZERO
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        raise ReportError(f"{what}: {text!r} is not a number") from None


def _time(text: str, what: str) -> dt.datetime:
    text = text.strip()
    if not _TIME.match(text):
        raise ReportError(f"{what}: {text!r} is not a time YYYY.MM.DD hh:mm:ss")
    fmt = "%Y.%m.%d %H:%M:%S" if text.count(":") == 2 else "%Y.%m.%d %H:%M"
    return dt.datetime.strptime(text, fmt)


@dataclass
class _Section:
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def col(self, row: list[str], name: str, occurrence: int = 0) -> str:
        seen = -1
        for index, title in enumerate(self.header):
            if title.strip().lower() == name.lower():
                seen += 1
                if seen == occurrence:
                    return row[index] if index < len(row) else ""
        raise ReportError(f"the {name!r} column is missing")


def _sections(rows: list[list[str]]) -> tuple[dict[str, _Section], dict[str, str]]:
    sections: dict[str, _Section] = {}
    header_info: dict[str, str] = {}
    current: str | None = None
    expect_header = False
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        filled = [c for c in cells if c]
        if not filled:
            continue
        if len(filled) == 1 and filled[0] in TITLES:
            current, expect_header = filled[0], True
            continue
        if current is None:
            for index, cell in enumerate(cells):
                if cell.endswith(":") and cell[:-1] in ("Name", "Account", "Company", "Date"):
                    value = next((c for c in cells[index + 1:] if c), "")
                    header_info[cell[:-1]] = value
            continue
        if expect_header:
            sections[current] = _Section(cells, [])
            expect_header = False
            continue
        if _TIME.match(cells[0] if cells else ""):
            sections[current].rows.append((number, cells))
    return sections, header_info


# ----------------------------------------------------------------------------------------- mapping
@dataclass
class _Position:
    ticket: str
    symbol: str
    side: str
    volume: Decimal
    opened: dt.datetime
    closed: dt.datetime | None
    close_price: Decimal | None
    left: Decimal = ZERO


def parse_report(data: bytes, *, clock: ServerClock, filename: str = "", initial_balance: Decimal | None = None,
                 keep_initial_deposit: bool = False) -> ParsedReport:
    """Read an MT5 trade history report (HTML, or XLSX by content) into events keyed by the report's login."""
    if data[:2] == b"PK" or filename.lower().endswith(".xlsx"):
        rows = xlsx_rows(data)
    else:
        rows = html_rows(data)
    sections, info = _sections(rows)
    if "Deals" not in sections:
        raise ReportError("no Deals section: this is not an MT5 trade history report (History → Report, HTML or "
                          "Open XML)")
    account = info.get("Account", "")
    match = re.match(r"^\s*(\d+)\s*(?:\(([A-Z]{3})[,)])?", account)
    parsed = ParsedReport(login=match.group(1) if match else None, currency=match.group(2) if match else None)
    login = parsed.login or "report"

    positions: list[_Position] = []
    for title in ("Positions", "Open Positions"):
        section = sections.get(title)
        if section is None:
            continue
        for number, row in section.rows:
            where = f"{title}, row {number}"
            try:
                closed_at = section.col(row, "Time", 1) if title == "Positions" else ""
                close_price = section.col(row, "Price", 1) if title == "Positions" else ""
                volume = _number(section.col(row, "Volume").split("/")[0], f"{where}, Volume")
                positions.append(_Position(
                    ticket=section.col(row, "Position"), symbol=section.col(row, "Symbol"),
                    side=section.col(row, "Type").lower(), volume=volume,
                    opened=_time(section.col(row, "Time"), f"{where}, Time"),
                    closed=_time(closed_at, f"{where}, Time") if closed_at else None,
                    close_price=_number(close_price, f"{where}, Price") if close_price else None, left=volume))
            except ReportError as exc:
                parsed.warnings.append(f"{where}: {exc}; row skipped")
    parsed.positions = len(positions)

    deals = sections["Deals"]
    traded = False
    for number, row in deals.rows:
        where = f"Deals, row {number}"
        try:
            kind = deals.col(row, "Type").strip().lower()
            if kind not in ACTIONS:
                raise ReportError(f"unknown deal type {kind!r}")
            action = ACTIONS[kind]
            direction = deals.col(row, "Direction").strip().lower()
            entry = ENTRIES.get(direction, 0)
            when = _time(deals.col(row, "Time"), f"{where}, Time")
            ticket = int(_number(deals.col(row, "Deal"), f"{where}, Deal"))
            lots = _number(deals.col(row, "Volume").split("/")[0], f"{where}, Volume")
            price = _number(deals.col(row, "Price"), f"{where}, Price")
            order = deals.col(row, "Order")
            commission = _number(deals.col(row, "Commission"), f"{where}, Commission")
            try:
                commission += _number(deals.col(row, "Fee"), f"{where}, Fee")
            except ReportError as exc:
                if "missing" not in str(exc):
                    raise
            swap = _number(deals.col(row, "Swap"), f"{where}, Swap")
            profit = _number(deals.col(row, "Profit"), f"{where}, Profit")
            try:
                comment = deals.col(row, "Comment")
            except ReportError:
                comment = ""
        except ReportError as exc:
            parsed.warnings.append(f"{where}: {exc}; row skipped")
            continue
        symbol = deals.col(row, "Symbol")
        position = order
        if action in (0, 1) and entry in (1, 3):
            found = _match(positions, symbol, "sell" if action == 0 else "buy", when, price, lots)
            if found is None:
                parsed.warnings.append(f"{where}: no position of {symbol} open at {when} for exit deal {ticket}; "
                                       f"its order {order} is used as the position")
            else:
                position = found.ticket
        if action in (0, 1):
            traded = True
        elif action == 2 and not traded and not keep_initial_deposit and initial_balance is not None \
                and profit == initial_balance and parsed.skipped_initial is None:
            parsed.skipped_initial = profit
            continue
        lowered = comment.lower()
        reason = 3 if lowered.startswith("[sl") else 4 if lowered.startswith("[tp") else 5 if lowered.startswith("[so") else 0
        deal = Mt5Deal(deal=ticket, login=login, action=action, entry=entry, reason=reason,
                       time_ms=int((when - dt.datetime(1970, 1, 1)).total_seconds()) * 1000, symbol=symbol,
                       price=price, lots=lots, profit=profit, storage=swap, commission=commission,
                       position=int(position) if str(position).isdigit() else 0, order=int(order) if order.isdigit() else 0,
                       comment=comment)
        parsed.events.extend(deal_events(deal, clock))
        parsed.deals += 1
    return parsed


def _match(positions: list[_Position], symbol: str, side: str, when: dt.datetime, price: Decimal,
           lots: Decimal) -> _Position | None:
    candidates = [p for p in positions if p.symbol == symbol and p.side == side and p.opened <= when
                  and (p.closed is None or when <= p.closed) and p.left >= lots]
    if not candidates:
        return None
    exact = [p for p in candidates if p.closed == when and p.close_price == price]
    chosen = (exact or sorted(candidates, key=lambda p: (p.closed is None, p.closed or when, p.opened)))[0]
    chosen.left -= lots
    return chosen


__all__ = ["ParsedReport", "ReportError", "html_rows", "parse_report", "xlsx_rows"]
