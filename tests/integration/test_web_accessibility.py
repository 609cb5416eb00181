"""Every form field of every page has a label a screen reader announces, and every data table a name:
checked on the pages each role opens (its menu, and the detail pages behind it), with data in them."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

PAGES = {
    "admin": ["/office/accounts", "/office/accounts/{A1}", "/office/decisions", "/office/cases", "/office/payouts",
              "/office/scalings", "/office/packs", "/office/packs/two-step-100k",
              "/office/packs/two-step-100k/draft", "/office/packs/two-step-100k/whatif", "/office/audit",
              "/office/dashboard", "/office/platforms", "/office/calendar", "/office/users", "/account/password"],
    "risk": ["/office/accounts", "/office/accounts/{A1}", "/office/cases", "/office/audit", "/office/platforms",
             "/office/halts", "/office/halts?pack=two-step-100k&preview=true",
             "/office/packs/two-step-100k/versions/{V1}/rebind", "/account/password"],
    "finance": ["/office/payouts", "/office/dashboard", "/account/password"],
    "support": ["/office/accounts", "/office/accounts/{A1}", "/office/accounts/{A1}/trades", "/office/decisions",
                "/account/password"],
    "trader": ["/portal", "/portal/accounts/{A1}", "/portal/accounts/{A1}/trades", "/portal/payouts",
               "/portal/certificates", "/portal/profile", "/portal/messages", "/account/password"],
}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: list[dict] = []
        self.labels_for: set[str] = set()
        self.in_label = 0
        self.tables: list[dict] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.labels_for.add(a["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and a.get("type", "text") in ("hidden", "submit", "button", "reset", "image"):
                return
            self.fields.append({**a, "_tag": tag, "_wrapped": self.in_label > 0})
        elif tag == "table":
            self.tables.append({**a, "_caption": False})
        elif tag == "caption" and self.tables:
            self.tables[-1]["_caption"] = True

    def handle_endtag(self, tag):
        if tag == "label" and self.in_label:
            self.in_label -= 1


def unlabelled(html: str) -> tuple[list[str], list[str]]:
    page = Page()
    page.feed(html)
    fields = [f"<{f['_tag']} name={f.get('name')!r} id={f.get('id')!r}>" for f in page.fields
              if not (f["_wrapped"] or f.get("aria-label") or f.get("aria-labelledby") or f.get("title")
                      or (f.get("id") and f["id"] in page.labels_for))]
    tables = [repr({k: v for k, v in t.items() if not k.startswith("_")}) for t in page.tables
              if not (t["_caption"] or t.get("aria-label") or t.get("aria-labelledby"))]
    return fields, tables


@pytest.fixture
def world(tmp_path):
    _, world = build_world(f"sqlite:///{tmp_path / 'a11y.db'}")
    with world.client:
        yield seed(world)


@pytest.mark.parametrize("role", sorted(PAGES))
def test_every_field_has_a_label_and_every_table_a_name(world, role):
    page = browse(world, f"fa:{role}")
    problems = []
    for path in PAGES[role]:
        url = path.format(A1=world.accounts["A1"], V1=world.version["fa"])
        response = page.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert '<html lang="en">' in response.text and 'class="skip" href="#main"' in response.text
        fields, tables = unlabelled(response.text)
        problems += [f"{url}: field without a label {f}" for f in fields]
        problems += [f"{url}: table without a caption or aria-label {t}" for t in tables]
        assert re.search(r"<h1[ >]", response.text), f"{url} has no page heading"
    assert not problems, "\n".join(problems)
