"""Products a firm sells: a rule pack version at its account size, for a price."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from . import audit
from .accounts import money
from .catalog import pack_of
from .errors import Conflict, Invalid, NotFound

MAX_PRICE = Decimal("1000000000")


def on_sale(session: Session, row: m.Product) -> bool:
    """Sold only while active and on a version that is not retired (``POST /orders`` refuses the rest)."""
    version = session.get(m.RulePackVersion, row.pack_version_id)
    return bool(row.active) and version is not None and version.status != "retired"


def product_view(row: m.Product, session: Session | None = None) -> dict[str, Any]:
    view = {"id": row.id, "name": row.name, "pack_version_id": row.pack_version_id,
            "account_size": money(row.account_size), "price": money(row.price), "currency": row.currency,
            "active": row.active}
    if session is not None:
        view["on_sale"] = on_sale(session, row)
    return view


def list_products(session: Session, *, firm_id: str) -> list[m.Product]:
    return list(session.scalars(select(m.Product).where(m.Product.firm_id == firm_id).order_by(m.Product.id)))


def create_product(session: Session, *, firm_id: str, name: str, pack_version_id: int, price: Decimal | str,
                   actor: str) -> m.Product:
    """A product of a live pack version; its account size and currency are the pack's own."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise Invalid("name must be 1 to 200 characters")
    try:
        amount = Decimal(str(price))
    except (InvalidOperation, ValueError):
        raise Invalid("price must be a decimal amount such as \"540.00\"") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
        raise Invalid(f"price must be between 0 and {MAX_PRICE}")
    version = session.get(m.RulePackVersion, pack_version_id)
    if version is None or version.firm_id != firm_id:
        raise Invalid(f"no rule pack version {pack_version_id} in firm {firm_id}")
    if version.status == "retired":
        raise Conflict(f"rule pack {version.pack_id} v{version.version} is retired and cannot be sold")
    pack = pack_of(version)
    row = m.Product(firm_id=firm_id, name=name, pack_version_id=version.id, account_size=pack.initial_balance,
                    price=amount, currency=pack.currency, active=True)
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="product.create", entity="product", entity_id=str(row.id),
                 after={"name": name, "pack": f"{version.pack_id} v{version.version}", "price": amount,
                        "currency": pack.currency}, firm_id=firm_id)
    return row


def get_product(session: Session, *, firm_id: str, product_id: int) -> m.Product:
    row = session.get(m.Product, product_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no product {product_id}")
    return row


def _price(price: Decimal | str) -> Decimal:
    try:
        amount = Decimal(str(price).strip())
    except (InvalidOperation, ValueError):
        raise Invalid("price must be a decimal amount such as \"540.00\"") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
        raise Invalid(f"price must be between 0 and {MAX_PRICE}")
    if amount != amount.quantize(Decimal("0.01")):
        raise Invalid("price must be to the cent at most (such as \"540.00\")")
    return amount


def update_product(session: Session, *, firm_id: str, product_id: int, name: str, price: Decimal | str,
                   actor: str) -> m.Product:
    """A new name or price; orders already placed keep the price they were placed at (``orders.list_price``).
    The pack version is not editable: a product is what it sells."""
    row = get_product(session, firm_id=firm_id, product_id=product_id)
    name = (name or "").strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise Invalid("name must be 1 to 200 printable characters")
    amount = _price(price)
    if not row.active:
        raise Conflict(f"product {row.name} is retired; create a new product instead")
    before = {"name": row.name, "price": row.price}
    if before == {"name": name, "price": amount}:
        return row
    row.name, row.price = name, amount
    audit.append(session, actor=actor, action="product.update", entity="product", entity_id=str(row.id),
                 before=before, after={"name": name, "price": amount}, firm_id=firm_id)
    return row


def retire_product(session: Session, *, firm_id: str, product_id: int, actor: str) -> m.Product:
    """No longer sold (``POST /orders`` refuses it); accounts bought with it keep it. Retiring is final."""
    row = get_product(session, firm_id=firm_id, product_id=product_id)
    if not row.active:
        raise Conflict(f"product {row.name} is already retired")
    row.active = False
    audit.append(session, actor=actor, action="product.retire", entity="product", entity_id=str(row.id),
                 before={"active": True}, after={"active": False}, firm_id=firm_id)
    return row
