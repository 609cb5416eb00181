"""Rule packs: a firm's rules as data (GUIDE §3).

A pack is YAML or JSON, validated by these msgspec structs; the published JSON Schema
(``propcrm schema``, ``docs/rulepack.schema.json``) is generated from the same structs, so the schema
and the validator cannot disagree. Every error names the path (``$.phases[0].rules[2].amount``) and the
problem. A pack's identity is ``id`` + ``version`` + a SHA-256 content hash over its canonical JSON (keys
sorted, defaults left out), so two spellings of the same rules hash the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local time HH:MM")]
HHMM_END = Annotated[
    str, msgspec.Meta(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$", description="local time HH:MM, or 24:00")
]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[int, msgspec.Meta(ge=0)]
Comparator = Literal["below", "at_or_below"]
Action = Literal["violation", "breach"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def _check_positive(name: str, value: Decimal | None) -> None:
    if value is not None and not (value.is_finite() and value > _ZERO):
        raise ValueError(f"`{name}` must be a number greater than 0, got {value}")


def _check_pct(name: str, value: Decimal | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    low_ok = value >= _ZERO if allow_zero else value > _ZERO
    if not (value.is_finite() and low_ok and value <= _HUNDRED):
        bound = "from 0 to 100" if allow_zero else "greater than 0 and at most 100"
        raise ValueError(f"`{name}` must be a percentage {bound}, got {value}")


def _check_zone(name: str, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"`{name}`: unknown IANA timezone {value!r}") from None


def parse_hhmm(text: str) -> dt.time:
    hours, minutes = text.split(":")
    if hours == "24":
        return dt.time.max
    return dt.time(int(hours), int(minutes))


class Amount(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of: a percentage of the initial balance, a percentage of the rule's base, an absolute amount."""

    pct_initial: Decimal | None = None
    pct_base: Decimal | None = None
    absolute: Decimal | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("pct_initial", "pct_base", "absolute") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "amount needs exactly one of `pct_initial`, `pct_base`, `absolute`"
                + (f" (got {', '.join(given)})" if given else "")
            )
        _check_pct("pct_initial", self.pct_initial)
        _check_pct("pct_base", self.pct_base)
        _check_positive("absolute", self.absolute)

    def resolve(self, *, initial: Decimal, base: Decimal | None = None) -> Decimal:
        """The amount in account currency, exact."""
        if self.absolute is not None:
            return self.absolute
        if self.pct_initial is not None:
            return initial * self.pct_initial / _HUNDRED
        assert base is not None and self.pct_base is not None
        return base * self.pct_base / _HUNDRED


class InitialPlus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Trailing stops once the level reaches initial balance + this amount."""

    initial_plus: Decimal

    def __post_init__(self) -> None:
        if not self.initial_plus.is_finite() or self.initial_plus < _ZERO:
            raise ValueError(f"`initial_plus` must be 0 or more, got {self.initial_plus}")


class ProfitableDays(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A day counts when its closed net profit is at least this % of the initial balance."""

    profitable_pct_initial: Decimal

    def __post_init__(self) -> None:
        _check_pct("profitable_pct_initial", self.profitable_pct_initial)


class WeekTime(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A moment of the week in a timezone, e.g. Friday 17:00 America/New_York."""

    weekday: Weekday
    time: HHMM
    timezone: str

    def __post_init__(self) -> None:
        _check_zone("timezone", self.timezone)


class HoursWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    days: list[Weekday]
    start: HHMM
    end: HHMM_END

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("`days` must list at least one weekday")
        if parse_hhmm(self.end) <= parse_hhmm(self.start):
            raise ValueError(f"`end` {self.end} must be after `start` {self.start}")


class Rule(msgspec.Struct, tag_field="kind", frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every rule. ``id`` defaults to the kind; two rules of one kind in a phase need ids."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None

    @property
    def rule_id(self) -> str:
        return self.id or self.__struct_config__.tag  # type: ignore[return-value]


class DailyLoss(Rule, tag="daily_loss", frozen=True):
    """Equity may not fall below ``base − amount`` within one trading day."""

    amount: Amount
    base: Literal["balance", "equity", "max_balance_equity", "initial"] = "balance"
    on_breach: Literal["fail", "pause"] = "fail"
    comparator: Comparator = "below"


class MaxLoss(Rule, tag="max_loss", frozen=True):
    """Equity may never fall below the max-loss level: static, or trailing a peak until it locks."""

    amount: Amount
    trailing: Literal["none", "equity_intraday", "balance_intraday", "balance_eod"] = "none"
    lock: Union[Literal["initial", "target"], InitialPlus, None] = None
    comparator: Comparator = "below"

    def __post_init__(self) -> None:
        if self.amount.pct_base is not None:
            raise ValueError("`amount.pct_base` applies to daily_loss only; use `pct_initial` or `absolute`")
        if self.trailing == "none" and self.lock is not None:
            raise ValueError("`lock` needs a trailing max loss (`trailing` is `none`)")


class PerTradeLoss(Rule, tag="per_trade_loss", frozen=True):
    """The realised loss of one position (all its partial closes, after costs) may not exceed the amount."""

    amount: Amount
    action: Action = "violation"

    def __post_init__(self) -> None:
        if self.amount.pct_base is not None:
            raise ValueError("`amount.pct_base` applies to daily_loss only")


class ProfitTarget(Rule, tag="profit_target", frozen=True):
    amount: Amount
    measure: Literal["balance", "equity"] = "balance"

    def __post_init__(self) -> None:
        if self.amount.pct_base is not None:
            raise ValueError("`amount.pct_base` applies to daily_loss only")


class MinTradingDays(Rule, tag="min_trading_days", frozen=True):
    days: PositiveInt
    counts: Union[Literal["opened"], ProfitableDays] = "opened"


class MaxDuration(Rule, tag="max_duration", frozen=True):
    """The phase must be passed within this many calendar days of its first event."""

    days: PositiveInt


class Inactivity(Rule, tag="inactivity", frozen=True):
    """The account fails when no trade activity is seen for this many 24-hour days.

    ``activity`` says what resets the timer: any trade opened or closed (the default), only an
    opening, or only a close (For Traders: days count from the last closed position).
    """

    days: PositiveInt
    activity: Literal["any_trade", "opened", "closed"] = "any_trade"


class Consistency(Rule, tag="consistency", frozen=True):
    """Best day ≤ ``max_best_day_pct`` % of total profit: a blocker of passing, never a breach."""

    max_best_day_pct: Decimal

    def __post_init__(self) -> None:
        _check_pct("max_best_day_pct", self.max_best_day_pct)


class MaxLots(Rule, tag="max_lots", frozen=True):
    per_position: Decimal | None = None
    total: Decimal | None = None
    per_symbol: dict[str, Decimal] | None = None
    action: Action = "violation"

    def __post_init__(self) -> None:
        if self.per_position is None and self.total is None and not self.per_symbol:
            raise ValueError("max_lots needs `per_position`, `total` or `per_symbol`")
        _check_positive("per_position", self.per_position)
        _check_positive("total", self.total)
        for symbol, lots in (self.per_symbol or {}).items():
            _check_positive(f"per_symbol.{symbol}", lots)


class MaxOpenPositions(Rule, tag="max_open_positions", frozen=True):
    count: PositiveInt
    action: Action = "violation"


class MaxTradesPerDay(Rule, tag="max_trades_per_day", frozen=True):
    count: PositiveInt
    action: Action = "violation"


class StopLossRequired(Rule, tag="stop_loss_required", frozen=True):
    action: Action = "violation"


class Hedging(Rule, tag="hedging", frozen=True):
    """Opening a position opposite an open position on the same symbol in the same account."""

    action: Action = "violation"


class MinHoldingTime(Rule, tag="min_holding_time", frozen=True):
    """No more than ``max_share_pct`` % of closed positions may be held under ``seconds``."""

    seconds: PositiveInt = 60
    max_share_pct: Decimal = Decimal(50)
    min_trades: PositiveInt = 10
    action: Literal["blocker", "violation"] = "blocker"

    def __post_init__(self) -> None:
        _check_pct("max_share_pct", self.max_share_pct, allow_zero=True)


class LotEscalation(Rule, tag="lot_escalation", frozen=True):
    """Martingale: opening ≥ ``factor`` × the lots of the position that just lost."""

    factor: Decimal = Decimal(2)
    action: Action = "violation"

    def __post_init__(self) -> None:
        if not (self.factor.is_finite() and self.factor > 1):
            raise ValueError(f"`factor` must be greater than 1, got {self.factor}")


_LATE_S = 3600  # how late a calendar entry may arrive by default (one hour)


class NewsWindow(Rule, tag="news", frozen=True):
    """Opening or closing (SL/TP/pending fills included) within the window around a news event."""

    before_s: Seconds = 120
    after_s: Seconds = 120
    impact: list[Literal["low", "medium", "high"]] = msgspec.field(default_factory=lambda: ["high"])
    action: Literal["violation", "breach", "partial_profit"] = "violation"
    profit_counted_pct: Decimal = _ZERO
    symbol_currencies: dict[str, list[str]] | None = None
    # Which trades the window catches: opened or closed inside it (FTMO, FundedNext), or only those
    # opened and closed inside the same window (For Traders: a trade opened before it may close inside).
    inside: Literal["opened_or_closed", "opened_and_closed"] = "opened_or_closed"
    # With partial_profit: each close inside counts on its own, or the whole position is affected
    # (FundedNext: "if a trader closes a portion of an order, the entire order is affected").
    profit_scope: Literal["close", "position"] = "close"
    # How long after its own time a calendar entry may still arrive and be judged against the trades
    # in its window: the engine remembers each account's trades that long (and at most MAX_RECENT).
    late_s: Annotated[int, msgspec.Meta(ge=0, le=604800)] = _LATE_S

    def __post_init__(self) -> None:
        if not self.impact:
            raise ValueError("`impact` must list at least one level")
        _check_pct("profit_counted_pct", self.profit_counted_pct, allow_zero=True)
        if self.late_s == _LATE_S:
            # msgspec leaves a default out by identity: the default written out must hash as left out
            msgspec.structs.force_setattr(self, "late_s", _LATE_S)
        if self.profit_scope == "position" and self.action != "partial_profit":
            raise ValueError("`profit_scope: position` needs `action: partial_profit`")


class WeekendHolding(Rule, tag="weekend_holding", frozen=True):
    weekend_start: WeekTime = WeekTime(weekday="friday", time="17:00", timezone="America/New_York")
    action: Action = "violation"


class OvernightHolding(Rule, tag="overnight_holding", frozen=True):
    """Positions must be closed before the end of the trading day."""

    action: Action = "violation"


class TradingHours(Rule, tag="trading_hours", frozen=True):
    """Positions may be opened only inside these local windows."""

    timezone: str
    windows: list[HoursWindow]
    action: Action = "violation"

    def __post_init__(self) -> None:
        _check_zone("timezone", self.timezone)
        if not self.windows:
            raise ValueError("`windows` must hold at least one window")


class EarlyWarning(Rule, tag="early_warning", frozen=True):
    """A warning when usage of a limit crosses each threshold (once per limit, threshold and day)."""

    at_pct: list[Decimal] = msgspec.field(default_factory=lambda: [Decimal(80)])
    limits: list[Literal["daily_loss", "max_loss"]] = msgspec.field(
        default_factory=lambda: ["daily_loss", "max_loss"]
    )

    def __post_init__(self) -> None:
        if not self.at_pct:
            raise ValueError("`at_pct` must list at least one threshold")
        for value in self.at_pct:
            if not (value.is_finite() and _ZERO < value < _HUNDRED):
                raise ValueError(f"`at_pct` thresholds must be between 0 and 100 (exclusive), got {value}")


AnyRule = Union[
    DailyLoss,
    MaxLoss,
    PerTradeLoss,
    ProfitTarget,
    MinTradingDays,
    MaxDuration,
    Inactivity,
    Consistency,
    MaxLots,
    MaxOpenPositions,
    MaxTradesPerDay,
    StopLossRequired,
    Hedging,
    MinHoldingTime,
    LotEscalation,
    NewsWindow,
    WeekendHolding,
    OvernightHolding,
    TradingHours,
    EarlyWarning,
]
RULE_KINDS: tuple[str, ...] = tuple(cls.__struct_config__.tag for cls in AnyRule.__args__)  # type: ignore[attr-defined]


PAYOUT_RESETS = ("trading_days", "best_day", "deductions")


class SplitTier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From the ``after_payouts``-th approved payout on, the trader's share is ``split`` %."""

    after_payouts: Annotated[int, msgspec.Meta(ge=0)]
    split: Decimal

    def __post_init__(self) -> None:
        _check_pct("split", self.split)


class PayoutPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """When a funded account may be paid and how much (docs/lifecycle.md).

    The trader's amount is (profit since the last payout − deducted profit) × split %, rounded
    down to the cent. ``resets`` names the counters a payout withdrawal starts again.
    """

    min_amount: Decimal = _ZERO
    min_trading_days: Annotated[int, msgspec.Meta(ge=0)] = 0
    consistency_max_day_pct: Decimal | None = None
    split_tiers: list[SplitTier] = msgspec.field(default_factory=list)
    resets: list[Literal["trading_days", "best_day", "deductions"]] = msgspec.field(
        default_factory=lambda: list(PAYOUT_RESETS)
    )
    require_flat: bool = True

    def __post_init__(self) -> None:
        if not (self.min_amount.is_finite() and self.min_amount >= _ZERO):
            raise ValueError(f"`min_amount` must be 0 or more, got {self.min_amount}")
        _check_pct("consistency_max_day_pct", self.consistency_max_day_pct)
        after = [tier.after_payouts for tier in self.split_tiers]
        if after != sorted(set(after)):
            raise ValueError("`split_tiers` must be in increasing order of `after_payouts`, each once")


class Phase(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    rules: list[AnyRule]
    profit_split: Decimal | None = None
    payout: PayoutPolicy | None = None

    def __post_init__(self) -> None:
        _check_pct("profit_split", self.profit_split)
        seen: set[str] = set()
        for rule in self.rules:
            if rule.rule_id in seen:
                raise ValueError(
                    f"two rules have the id {rule.rule_id!r}; give each rule of the same kind its own `id`"
                )
            seen.add(rule.rule_id)
        targets = [r for r in self.rules if isinstance(r, ProfitTarget)]
        if len(targets) > 1:
            raise ValueError("a phase has at most one profit_target")
        for rule in self.rules:
            if isinstance(rule, MaxLoss) and rule.lock == "target" and not targets:
                raise ValueError(f"rule {rule.rule_id!r}: `lock: target` needs a profit_target in the phase")


class ScalingPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Capital scaling of funded accounts (docs/lifecycle.md): every ``every_months`` since funding or
    the last scaling, an account that meets every condition grows by ``increase_pct`` % of its size,
    up to ``max_balance``; ``split_steps`` gives the profit split after the 1st, 2nd, … scaling (the
    last one repeats)."""

    max_balance: Decimal
    every_months: PositiveInt = 4
    min_profit_pct: Decimal = Decimal(10)
    min_payouts: Annotated[int, msgspec.Meta(ge=0)] = 2
    require_balance_in_profit: bool = True
    max_risk_score: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    require_no_violations: bool = True
    increase_pct: Decimal = Decimal(25)
    split_steps: list[Decimal] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        _check_positive("max_balance", self.max_balance)
        _check_pct("increase_pct", self.increase_pct)
        if not (self.min_profit_pct.is_finite() and self.min_profit_pct >= _ZERO):
            raise ValueError(f"`min_profit_pct` must be 0 or more, got {self.min_profit_pct}")
        for value in self.split_steps:
            _check_pct("split_steps", value)


class RulePack(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: PositiveInt
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    initial_balance: Decimal
    timezone: str
    day_start: HHMM
    phases: Annotated[list[Phase], msgspec.Meta(min_length=1)]
    name: str | None = None
    description: str | None = None
    sources: list[str] | None = None
    scaling: ScalingPlan | None = None

    def __post_init__(self) -> None:
        _check_positive("initial_balance", self.initial_balance)
        _check_zone("timezone", self.timezone)
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError("phase names must be unique")

    def phase_index(self, name: str) -> int:
        for index, phase in enumerate(self.phases):
            if phase.name == name:
                return index
        raise KeyError(f"pack {self.id} v{self.version} has no phase {name!r} (phases: {', '.join(p.name for p in self.phases)})")


class RulePackError(ValueError):
    """A rule pack that cannot be used; the message names the path and the problem."""


class _DecimalLoader(yaml.SafeLoader):
    """YAML loader that reads floats as exact decimals (``5.5`` is ``Decimal('5.5')``, not a binary float)."""


_DecimalLoader.add_constructor(
    "tag:yaml.org,2002:float", lambda loader, node: Decimal(loader.construct_scalar(node).replace("_", ""))
)


def parse_pack(raw: bytes | str, *, source: str = "<pack>") -> RulePack:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        if text.lstrip().startswith("{"):
            return msgspec.json.decode(text.encode(), type=RulePack, strict=False)
        data = yaml.load(text, Loader=_DecimalLoader)  # noqa: S506 - a SafeLoader subclass
    except msgspec.ValidationError as exc:
        raise RulePackError(f"{source}: {_describe(exc)}") from None
    except (msgspec.DecodeError, yaml.YAMLError) as exc:
        raise RulePackError(f"{source}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RulePackError(f"{source}: a rule pack is a mapping with `id`, `version`, `phases`, …")
    try:
        return msgspec.convert(data, RulePack, strict=False)
    except msgspec.ValidationError as exc:
        raise RulePackError(f"{source}: {_describe(exc)}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    reason, sep, path = message.rpartition(" - at `")
    if sep:
        return f"{path.rstrip('`')}: {reason}"
    return f"$: {message}"


def load_pack(path: str | Path) -> RulePack:
    """Load a pack from a file, or a preset by name (``propcrm packs presets``)."""
    candidate = Path(path)
    if not candidate.exists():
        preset = PRESETS_DIR / f"{path}.yaml"
        if preset.exists():
            candidate = preset
        else:
            raise RulePackError(f"{path}: no such file, and no preset of that name")
    return parse_pack(candidate.read_bytes(), source=str(path))


PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


_CANONICAL = msgspec.json.Encoder(order="sorted", decimal_format="string")


def canonical_json(pack: RulePack) -> bytes:
    """Keys sorted, default values left out, decimals as strings: the bytes the content hash covers."""
    return _CANONICAL.encode(msgspec.to_builtins(pack, builtin_types=(Decimal,), order="sorted"))


def content_hash(pack: RulePack) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(pack)).hexdigest()


_DECIMAL_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"},
        {"type": "number"},
    ],
    "description": "a decimal: a string like \"2500.50\" or a number (read from its text, never via float)",
}


def _decimals_as_text_or_number(node: object) -> object:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "decimal":
            return dict(_DECIMAL_SCHEMA)
        return {key: _decimals_as_text_or_number(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_decimals_as_text_or_number(item) for item in node]
    return node


def _descriptions_cleaned(node: object) -> object:
    """Descriptions (docstrings) with their indentation removed as ``inspect.cleandoc`` does.

    msgspec before 0.23 kept a docstring's indentation and 0.23 removes it; cleaning it here gives the
    same published schema with any msgspec.
    """
    if isinstance(node, dict):
        return {key: inspect.cleandoc(value) if key == "description" and isinstance(value, str)
                else _descriptions_cleaned(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_descriptions_cleaned(item) for item in node]
    return node


def json_schema() -> dict:
    """The published JSON Schema of a rule pack, generated from the structs that validate packs."""
    schema = _descriptions_cleaned(_decimals_as_text_or_number(msgspec.json.schema(RulePack)))
    assert isinstance(schema, dict)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "propcrm rule pack"
    return schema
