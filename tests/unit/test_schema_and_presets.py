"""The published JSON Schema is the one the validator uses, and every preset satisfies it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import (
    PRESETS_DIR,
    canonical_json,
    content_hash,
    json_schema,
    load_pack,
    parse_pack,
    preset_names,
)

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "rulepack.schema.json"


def test_the_published_schema_is_current():
    assert json.loads(PUBLISHED.read_text()) == json_schema(), (
        "docs/rulepack.schema.json is stale: run `propcrm packs schema > docs/rulepack.schema.json`"
    )


def _indented_like_old_msgspec(node):
    """A schema as msgspec < 0.23 made it: docstrings with their source indentation kept."""
    if isinstance(node, dict):
        return {key: value.replace("\n", "\n    ") if key == "description" and isinstance(value, str)
                else _indented_like_old_msgspec(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_indented_like_old_msgspec(item) for item in node]
    return node


def test_the_schema_does_not_depend_on_how_msgspec_formats_docstrings(monkeypatch):
    """msgspec 0.23 stopped keeping docstring indentation; the published schema must not change with it."""
    import msgspec

    from propcrm.domain import rulepack

    current = json_schema()
    real_schema = msgspec.json.schema
    monkeypatch.setattr(rulepack.msgspec.json, "schema", lambda t: _indented_like_old_msgspec(real_schema(t)))
    assert "\\n    " in json.dumps(msgspec.json.schema(rulepack.RulePack)), "the stand-in should indent"
    assert json_schema() == current


def test_the_schema_describes_each_struct_with_its_cleaned_docstring():
    import inspect

    from propcrm.domain import rulepack

    described = {name: node["description"] for name, node in json_schema()["$defs"].items() if "description" in node}
    assert {"PayoutPolicy", "ScalingPlan"} <= set(described)
    for name, text in described.items():
        assert text == inspect.cleandoc(getattr(rulepack, name).__doc__), name


def test_the_required_presets_ship():
    assert {"two-step-100k", "one-step-100k", "futures-eod-50k", "intraday-trailing-50k"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_against_the_published_schema_and_compiles(name):
    raw = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())
    jsonschema.validate(json.loads(json.dumps(raw, default=str)), json.loads(PUBLISHED.read_text()))
    pack = load_pack(name)
    compiled = compile_pack(pack)
    assert compiled.hash.startswith("sha256:") and pack.sources, "each preset cites the rule text it implements"
    assert (ROOT / "docs" / "presets" / f"{name}.md").exists(), "each preset has a doc page"


def test_the_schema_rejects_what_the_validator_rejects():
    schema = json.loads(PUBLISHED.read_text())
    bad = {"id": "x", "version": 1, "currency": "USD", "initial_balance": "1", "timezone": "UTC",
           "day_start": "00:00", "phases": [{"name": "a", "rules": [{"kind": "daily_loss"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_content_hash_ignores_spelling_but_not_rules():
    a = parse_pack(
        "id: p\nversion: 1\ncurrency: USD\ninitial_balance: 100000\ntimezone: UTC\nday_start: '00:00'\n"
        "phases: [{name: a, rules: [{kind: daily_loss, amount: {pct_initial: 5}}]}]\n"
    )
    b = parse_pack(
        '{"phases": [{"rules": [{"amount": {"pct_initial": "5.0"}, "kind": "daily_loss", "base": "balance"}],'
        ' "name": "a"}], "id": "p", "version": 1, "currency": "USD", "initial_balance": "100000",'
        ' "timezone": "UTC", "day_start": "00:00"}'
    )
    c = parse_pack(
        "id: p\nversion: 1\ncurrency: USD\ninitial_balance: 100000\ntimezone: UTC\nday_start: '00:00'\n"
        "phases: [{name: a, rules: [{kind: daily_loss, amount: {pct_initial: 4}}]}]\n"
    )
    assert b"5" in canonical_json(a)
    assert content_hash(a) != content_hash(c)
    # 5 and 5.0 are different decimal spellings: the hash is over exact values, so they differ too,
    # but a default spelled out (base: balance) must not change it.
    d = parse_pack(
        "id: p\nversion: 1\ncurrency: USD\ninitial_balance: 100000\ntimezone: UTC\nday_start: '00:00'\n"
        "phases: [{name: a, rules: [{kind: daily_loss, amount: {pct_initial: 5}, base: balance}]}]\n"
    )
    assert content_hash(a) == content_hash(d)
    assert content_hash(b) != content_hash(c)


def test_yaml_decimals_are_read_exactly():
    pack = parse_pack(
        "id: p\nversion: 1\ncurrency: USD\ninitial_balance: 100000.10\ntimezone: UTC\nday_start: '00:00'\n"
        "phases: [{name: a, rules: [{kind: daily_loss, amount: {pct_initial: 0.1}}]}]\n"
    )
    assert str(pack.initial_balance) == "100000.10"
    assert str(pack.phases[0].rules[0].amount.pct_initial) == "0.1"
