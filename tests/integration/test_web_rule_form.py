"""The form-based rule editor (issue 16) on both backends: fields per rule kind from the pack schema, the YAML
beside it, both through the rule pack's own validation; an untouched form saves the same pack, a change saves a
new draft version, a bad value is refused naming the field and saves nothing; rules are added and removed."""

from __future__ import annotations

from html.parser import HTMLParser

import msgspec
import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.services.catalog import pack_of
from propcrm.web import rule_form
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")
PACK = "two-step-100k"
URL = f"/office/packs/{PACK}/form"


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        yield world


class FormReader(HTMLParser):
    """What a browser would post from the rule form: inputs, checked boxes, selected options, the textarea."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self.inside = False
        self.select: str | None = None
        self.options: list[tuple[str, bool]] = []
        self.textarea: str | None = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == "rule-form":
            self.inside = True
        if not self.inside:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value") or ""))
        elif tag == "select":
            self.select, self.options = a.get("name"), []
        elif tag == "option" and self.select:
            self.options.append((a.get("value") or "", "selected" in a))
        elif tag == "textarea":
            self.textarea, self.text = a.get("name"), ""

    def handle_data(self, data):
        if self.textarea:
            self.text += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select" and self.select:
            chosen = next((v for v, sel in self.options if sel), self.options[0][0] if self.options else "")
            self.fields.append((self.select, chosen))
            self.select = None
        elif tag == "textarea" and self.textarea:
            self.fields.append((self.textarea, self.text))
            self.textarea = None


def read_form(html: str) -> dict[str, list[str]]:
    reader = FormReader()
    reader.feed(html)
    out: dict[str, list[str]] = {}
    for name, value in reader.fields:
        if name != "csrf":
            out.setdefault(name, []).append(value)
    return out


def submit(page, fields: dict[str, list[str]], action: str, **changes: str):
    data = {**{k: v for k, v in fields.items()}, **{k: [v] for k, v in changes.items()}, "action": [action]}
    return page.post_form(URL, data)


def versions(world) -> list[m.RulePackVersion]:
    with world.sessions() as s:
        return list(s.scalars(select(m.RulePackVersion).where(m.RulePackVersion.firm_id == "fa",
                                                              m.RulePackVersion.pack_id == PACK)
                              .order_by(m.RulePackVersion.version)))


def without_version(pack) -> dict:
    data = msgspec.to_builtins(pack)
    data.pop("version")
    return data


def test_the_fields_come_from_the_schema():
    assert set(rule_form.kinds()) >= {"daily_loss", "max_loss", "profit_target", "news", "consistency"}
    daily = {s.name: s for s in rule_form.specs("daily_loss")}
    assert daily["amount"].control == "choice" and daily["amount"].required
    assert set(daily["amount"].options) == {"pct_initial", "pct_base", "absolute"}
    assert daily["base"].control == "enum" and daily["base"].default == "balance"
    assert {s.name: s.control for s in rule_form.specs("news")}["impact"] == "multi"
    assert {s.name: s.control for s in rule_form.specs("max_loss")}["lock"] == "yaml"


def test_who_may_open_it(world):
    for role, status in (("admin", 200), ("risk", 403), ("finance", 403), ("support", 403), ("trader", 403)):
        assert browse(world, role).get(URL).status_code == status, role
    assert browse(world, "fb:admin").get("/office/packs/no-such-pack/form").status_code == 404
    assert browse(world, "risk").post_form(URL, {"action": "save", "pack": "x"}).status_code == 403
    assert f'href="{URL}"' in browse(world, "admin").get(f"/office/packs/{PACK}").text


def test_an_untouched_form_saves_the_same_pack_and_a_change_saves_a_draft(world):
    admin = browse(world, "admin")
    page = admin.get(URL)
    fields = read_form(page.text)
    assert fields["r.0.0.amount.unit"] == ["pct_initial"] and fields["r.0.0.amount.value"] == ["5"]
    assert fields["r.0.0.base"] == ["balance"]  # a default shows as chosen
    saved = submit(admin, fields, "save")
    assert saved.status_code == 303, saved.text
    [v1, v2] = versions(world)
    assert v2.status == "draft" and v2.version == 2
    assert without_version(pack_of(v2)) == without_version(pack_of(v1))  # the round trip changes nothing
    # a change: daily loss 4 % and the max loss touching the level
    fields = read_form(admin.get(URL).text)
    changed = submit(admin, fields, "save", **{"r.0.0.amount.value": "4", "r.0.1.comparator": "at_or_below"})
    assert changed.status_code == 303
    v3 = versions(world)[-1]
    rules = pack_of(v3).phases[0].rules
    assert str(rules[0].amount.pct_initial) == "4" and rules[1].comparator == "at_or_below"


def test_bad_values_are_refused_naming_the_field(world):
    admin = browse(world, "admin")
    fields = read_form(admin.get(URL).text)
    refused = submit(admin, fields, "save", **{"r.0.0.amount.value": "abc"})
    assert refused.status_code == 422
    assert "phases[0].rules[0]" in refused.text and "amount" in refused.text
    assert 'value="abc"' in refused.text  # the form keeps what was typed
    assert submit(admin, fields, "save", **{"r.0.0.base": "sometimes"}).status_code == 422
    assert submit(admin, fields, "save", **{"r.0.1.lock": "{initial_plus: [unclosed"}).status_code == 422
    assert len(versions(world)) == 1


def test_rules_are_added_and_removed_and_the_yaml_shows_as_a_form(world):
    admin = browse(world, "admin")
    fields = read_form(admin.get(URL).text)
    added = submit(admin, fields, "apply", **{"add.0": "consistency"})
    assert added.status_code == 422 and "max_best_day_pct" in added.text  # required, still empty
    fields = read_form(added.text)
    kinds = [k for k in fields if k.endswith(".max_best_day_pct")]
    assert len(kinds) == 1
    last = kinds[0].rsplit(".", 1)[0]
    removed_index = "r.0.2"  # phase-1's third rule
    with world.sessions() as s:
        before = [type(r).__name__ for r in pack_of(s.get(m.RulePackVersion, world.version["fa"])).phases[0].rules]
    saved = submit(admin, fields, "save", **{kinds[0]: "40", f"{removed_index}.remove": "yes"})
    assert saved.status_code == 303, saved.text
    after = [type(r).__name__ for r in pack_of(versions(world)[-1]).phases[0].rules]
    assert len(before) >= 3
    assert after == [k for n, k in enumerate(before) if n != 2] + ["Consistency"], (before, after, last)
    # the YAML beside the form: edited there, shown as the form
    text = fields["pack"][0].replace("comparator: below", "comparator: at_or_below", 1)
    shown = admin.post_form(URL, {"pack": text, "action": "yaml"})
    assert shown.status_code == 200
    assert any(v == ["at_or_below"] for k, v in read_form(shown.text).items() if k.endswith(".comparator"))
