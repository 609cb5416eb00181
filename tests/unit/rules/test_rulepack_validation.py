"""A rule pack that cannot be used is refused with the path of the problem and what is wrong there."""

from __future__ import annotations

from decimal import Decimal

import pytest

from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import RulePackError, content_hash, parse_pack

from rulekit import pack_yaml

ML = "{kind: max_loss, amount: {pct_initial: 10}}"


def refused(text: str) -> str:
    with pytest.raises(RulePackError) as info:
        parse_pack(text, source="firm.yaml")
    message = str(info.value)
    assert message.startswith("firm.yaml: ")
    return message.removeprefix("firm.yaml: ")


@pytest.mark.parametrize(
    "rule, path, problem",
    [
        ("{kind: daily_loss, amount: {pct_initial: 5, absolute: 100}}", "$.phases[0].rules[1].amount",
         "amount needs exactly one of `pct_initial`, `pct_base`, `absolute` (got pct_initial, absolute)"),
        ("{kind: daily_loss, amount: {}}", "$.phases[0].rules[1].amount", "amount needs exactly one of"),
        ("{kind: daily_loss, amount: {pct_initial: 0}}", "$.phases[0].rules[1].amount", "`pct_initial` must be a percentage"),
        ("{kind: daily_loss, amount: {pct_initial: 101}}", "$.phases[0].rules[1].amount", "got 101"),
        ("{kind: daily_loss, amount: {absolute: -1}}", "$.phases[0].rules[1].amount", "`absolute` must be a number greater than 0"),
        ("{kind: daily_loss, amount: {absolute: lots}}", "$.phases[0].rules[1].amount.absolute", "Invalid decimal"),
        ("{kind: daily_loss}", "$.phases[0].rules[1]", "missing required field `amount`"),
        ("{kind: daily_loss, amount: {pct_initial: 5}, base: peak}", "$.phases[0].rules[1].base", "Invalid enum value 'peak'"),
        ("{kind: daily_loss, amount: {pct_initial: 5}, comparator: '<'}", "$.phases[0].rules[1].comparator", "Invalid enum value"),
        ("{kind: daily_loss, amount: {pct_initial: 5}, on_breach: warn}", "$.phases[0].rules[1].on_breach", "Invalid enum value 'warn'"),
        ("{kind: daily_loss, amount: {pct_initial: 5}, colour: red}", "$.phases[0].rules[1]", "unknown field `colour`"),
        ("{kind: daily_los, amount: {pct_initial: 5}}", "$.phases[0].rules[1].kind", "Invalid value 'daily_los'"),
        ("{kind: max_loss, id: m2, amount: {pct_base: 5}}", "$.phases[0].rules[1]", "`amount.pct_base` applies to daily_loss only"),
        ("{kind: max_loss, id: m2, amount: {pct_initial: 5}, lock: initial}", "$.phases[0].rules[1]",
         "`lock` needs a trailing max loss"),
        ("{kind: max_loss, id: m2, amount: {pct_initial: 5}, trailing: balance_eod, lock: never}", "$.phases[0].rules[1].lock",
         "Invalid enum value 'never'"),
        ("{kind: max_loss, id: m2, amount: {pct_initial: 5}, trailing: equity_intraday, lock: {initial_plus: -1}}",
         "$.phases[0].rules[1].lock", "`initial_plus` must be 0 or more"),
        ("{kind: max_loss, id: m2, amount: {pct_initial: 5}, trailing: hourly}", "$.phases[0].rules[1].trailing", "Invalid enum value"),
        ("{kind: min_trading_days, days: 0}", "$.phases[0].rules[1].days", "Expected `int` >= 1"),
        ("{kind: min_trading_days, days: 3, counts: {profitable_pct_initial: 0}}", "$.phases[0].rules[1].counts", "`profitable_pct_initial`"),
        ("{kind: consistency, max_best_day_pct: 0}", "$.phases[0].rules[1]", "`max_best_day_pct` must be a percentage"),
        ("{kind: max_lots}", "$.phases[0].rules[1]", "max_lots needs `per_position`, `total` or `per_symbol`"),
        ("{kind: max_lots, per_symbol: {XAUUSD: 0}}", "$.phases[0].rules[1]", "`per_symbol.XAUUSD` must be a number greater than 0"),
        ("{kind: lot_escalation, factor: 1}", "$.phases[0].rules[1]", "`factor` must be greater than 1"),
        ("{kind: news, impact: [extreme]}", "$.phases[0].rules[1].impact[0]", "Invalid enum value 'extreme'"),
        ("{kind: news, impact: []}", "$.phases[0].rules[1]", "`impact` must list at least one level"),
        ("{kind: news, before_s: -1}", "$.phases[0].rules[1].before_s", "Expected `int` >= 0"),
        ("{kind: news, action: partial_profit, profit_counted_pct: 150}", "$.phases[0].rules[1]", "`profit_counted_pct`"),
        ("{kind: early_warning, at_pct: [100]}", "$.phases[0].rules[1]", "between 0 and 100 (exclusive), got 100"),
        ("{kind: early_warning, limits: [per_trade_loss]}", "$.phases[0].rules[1].limits[0]", "Invalid enum value"),
        ("{kind: weekend_holding, weekend_start: {weekday: fri, time: '17:00', timezone: America/New_York}}",
         "$.phases[0].rules[1].weekend_start.weekday", "Invalid enum value 'fri'"),
        ("{kind: weekend_holding, weekend_start: {weekday: friday, time: '5pm', timezone: America/New_York}}",
         "$.phases[0].rules[1].weekend_start.time", "Expected `str` matching regex"),
        ("{kind: weekend_holding, weekend_start: {weekday: friday, time: '17:00', timezone: Mars/Olympus}}",
         "$.phases[0].rules[1].weekend_start", "unknown IANA timezone 'Mars/Olympus'"),
        ("{kind: trading_hours, timezone: UTC, windows: [{days: [monday], start: '10:00', end: '09:00'}]}",
         "$.phases[0].rules[1].windows[0]", "`end` 09:00 must be after `start` 10:00"),
        ("{kind: trading_hours, timezone: UTC, windows: []}", "$.phases[0].rules[1]", "`windows` must hold at least one window"),
        ("{kind: trading_hours, timezone: UTC, windows: [{days: [], start: '10:00', end: '11:00'}]}",
         "$.phases[0].rules[1].windows[0]", "`days` must list at least one weekday"),
    ],
)
def test_a_bad_rule_is_named_by_its_path(rule, path, problem):
    message = refused(pack_yaml(ML, rule))
    assert message.startswith(f"{path}: "), message
    assert problem in message


@pytest.mark.parametrize(
    "edit, path, problem",
    [
        (lambda y: y.replace("timezone: Europe/Prague\n", ""), "$", "missing required field `timezone`"),
        (lambda y: y.replace("Europe/Prague", "Europe/Atlantis"), "$", "unknown IANA timezone 'Europe/Atlantis'"),
        (lambda y: y.replace('"00:00"', '"24:00"'), "$.day_start", "Expected `str` matching regex"),
        (lambda y: y.replace('"100000"', '"-5"'), "$", "`initial_balance` must be a number greater than 0"),
        (lambda y: y.replace("version: 1", "version: 0"), "$.version", "Expected `int` >= 1"),
        (lambda y: y.replace("currency: USD", "currency: usd"), "$.currency", "Expected `str` matching regex"),
        (lambda y: y.replace("id: test-pack", "id: Test Pack"), "$.id", "Expected `str` matching regex"),
        (lambda y: y.split("phases:")[0] + "phases: []\n", "$.phases", "length >= 1"),
        (lambda y: y + "owner: me\n", "$", "unknown field `owner`"),
    ],
)
def test_a_bad_pack_field_is_named(edit, path, problem):
    message = refused(edit(pack_yaml(ML)))
    assert message.startswith(f"{path}: "), message
    assert problem in message


def test_two_rules_of_one_kind_need_ids():
    message = refused(pack_yaml(ML, "{kind: max_loss, amount: {pct_initial: 5}}"))
    assert message == "$.phases[0]: two rules have the id 'max_loss'; give each rule of the same kind its own `id`"


def test_one_profit_target_per_phase():
    message = refused(pack_yaml("{kind: profit_target, amount: {pct_initial: 10}}", "{kind: profit_target, id: t2, amount: {pct_initial: 5}}"))
    assert message == "$.phases[0]: a phase has at most one profit_target"


def test_lock_at_target_needs_a_target():
    message = refused(pack_yaml("{kind: max_loss, amount: {pct_initial: 10}, trailing: balance_eod, lock: target}"))
    assert message == "$.phases[0]: rule 'max_loss': `lock: target` needs a profit_target in the phase"


def test_phase_names_are_unique_and_the_split_is_a_percentage():
    assert refused(pack_yaml(phases=[("a", [ML]), ("a", [ML])])) == "$: phase names must be unique"
    text = pack_yaml(phases=[("funded", [ML])]).replace("  - name: funded\n", "  - name: funded\n    profit_split: 120\n")
    assert refused(text).startswith("$.phases[0]: `profit_split` must be a percentage")


def test_an_error_in_a_later_phase_names_that_phase():
    text = pack_yaml(phases=[("phase-1", [ML]), ("phase-2", [ML, "{kind: daily_loss, amount: {pct_base: 0}}"])])
    assert refused(text).startswith("$.phases[1].rules[1].amount: ")


def test_json_packs_are_validated_the_same_way():
    text = (
        '{"id":"x","version":1,"currency":"USD","initial_balance":"100000","timezone":"UTC","day_start":"00:00",'
        '"phases":[{"name":"p","rules":[{"kind":"daily_loss","amount":{"pct_initial":"0"}}]}]}'
    )
    assert refused(text).startswith("$.phases[0].rules[0].amount: `pct_initial` must be a percentage")


def test_not_a_pack_at_all():
    assert refused("- a\n- b\n").startswith("a rule pack is a mapping")
    assert refused("id: [\n").startswith("not valid YAML/JSON")


def test_yaml_numbers_are_exact_decimals_and_spelling_does_not_change_the_hash():
    yaml_pack = parse_pack(pack_yaml("{kind: daily_loss, amount: {pct_initial: 4.1}}"))
    assert yaml_pack.phases[0].rules[0].amount.pct_initial == Decimal("4.1")
    json_pack = parse_pack(
        '{"id":"test-pack","version":1,"currency":"USD","initial_balance":"100000","timezone":"Europe/Prague",'
        '"day_start":"00:00","phases":[{"name":"phase-1","rules":[{"kind":"daily_loss","base":"balance",'
        '"amount":{"pct_initial":"4.1"}}]}]}'
    )
    assert content_hash(yaml_pack) == content_hash(json_pack)
    compiled = compile_pack(yaml_pack)
    assert compiled.hash == content_hash(yaml_pack)
