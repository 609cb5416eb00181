"""A firm's symbol table: how its price ticks become money (issue 15).

One table per firm, replaced whole (``set``) or extended and updated symbol by symbol (``import``,
e.g. a CSV exported from a platform's symbol specifications). Validated at the edge: a refusal names
the line or entry and the field, and nothing of a refused table is stored. The evaluation driver reads
it when it builds an engine's market (:func:`table_for`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import msgspec
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.market import SymbolSpec, SymbolTable, parse_symbol_table
from . import audit
from .errors import Invalid

MAX_TABLE_BYTES = 2 * 1024 * 1024
MAX_SYMBOLS = 20_000
CSV_COLUMNS = ("symbol", "profit_currency", "contract_size", "tick_size", "tick_value", "digits")
_ENCODER = msgspec.json.Encoder(decimal_format="string")


def read_table(body: bytes, *, fmt: str = "json") -> SymbolTable:
    """A validated table from JSON (``[spec, …]`` or ``{"symbols": [...]}``) or CSV with a header row
    naming :data:`CSV_COLUMNS` (empty cells: not given); :class:`Invalid` says what is wrong."""
    if len(body) > MAX_TABLE_BYTES:
        raise Invalid(f"a symbol table is at most {MAX_TABLE_BYTES:,} bytes")
    try:
        table = _read_csv(body) if fmt == "csv" else parse_symbol_table(body)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if len(table.symbols) > MAX_SYMBOLS:
        raise Invalid(f"a symbol table holds at most {MAX_SYMBOLS:,} symbols")
    return table


def _read_csv(body: bytes) -> SymbolTable:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("symbol table: CSV must be UTF-8") from None
    rows = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in rows.fieldnames or ()]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown or "symbol" not in header or "profit_currency" not in header:
        raise ValueError(f"symbol table: the CSV header must name symbol, profit_currency and any of "
                         f"{', '.join(CSV_COLUMNS[2:])}; got {', '.join(header) or 'nothing'}")
    specs = []
    for line, row in enumerate(rows, start=2):
        data = {k.strip(): v.strip() for k, v in row.items() if k is not None and v is not None and v.strip()}
        try:
            specs.append(msgspec.convert(data, SymbolSpec, strict=False))
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"symbol table: line {line}: {exc}") from None
    return parse_symbol_table({"symbols": [msgspec.to_builtins(s) for s in specs]})


def table_for(session: Session, firm_id: str) -> SymbolTable | None:
    """The firm's stored table, or None when it has none (then no position is marked to market)."""
    row = session.get(m.SymbolTable, firm_id)
    if row is None:
        return None
    return parse_symbol_table(row.body)


def set_table(session: Session, *, firm_id: str, table: SymbolTable, actor: str, merge: bool = False) -> SymbolTable:
    """Store ``table`` as the firm's (``merge``: its symbols replace or join the stored ones), audited."""
    row = session.get(m.SymbolTable, firm_id)
    before = parse_symbol_table(row.body) if row is not None else SymbolTable()
    specs = {**before.by_symbol(), **table.by_symbol()} if merge else table.by_symbol()
    if len(specs) > MAX_SYMBOLS:
        raise Invalid(f"a symbol table holds at most {MAX_SYMBOLS:,} symbols")
    stored = SymbolTable(symbols=tuple(specs[name] for name in sorted(specs)))
    body = _ENCODER.encode(stored).decode()
    now = dt.datetime.now(dt.timezone.utc)
    if row is None:
        row = m.SymbolTable(firm_id=firm_id, body=body, symbols=len(specs), updated_at=now, updated_by=actor[:200])
        session.add(row)
    else:
        row.body, row.symbols, row.updated_at, row.updated_by = body, len(specs), now, actor[:200]
    changed = sorted(name for name in specs if before.by_symbol().get(name) != specs[name])
    removed = sorted(set(before.by_symbol()) - set(specs))
    audit.append(session, actor=actor, action="symbols.import" if merge else "symbols.set", entity="symbol_table",
                 entity_id=firm_id, before={"symbols": len(before.symbols)},
                 after={"symbols": len(specs), "changed": changed[:100], "removed": removed[:100]}, firm_id=firm_id)
    session.flush()
    return stored


def table_view(session: Session, *, firm_id: str) -> dict[str, Any]:
    row = session.get(m.SymbolTable, firm_id)
    if row is None:
        return {"symbols": [], "updated_at": None, "updated_by": None}
    return {"symbols": msgspec.to_builtins(parse_symbol_table(row.body).symbols, enc_hook=str),
            "updated_at": row.updated_at, "updated_by": row.updated_by}


__all__ = ["CSV_COLUMNS", "MAX_TABLE_BYTES", "read_table", "set_table", "table_for", "table_view"]
