"""The API reference at ``/docs`` works under the app's Content Security Policy (``script-src 'self'``).

Swagger UI's assets are served by the app itself (npm ``swagger-ui-dist``, copied by ``make`` into
``static/vendor``), started by a script file rather than an inline script; ReDoc is off. The browser test
``tests/browser/test_api_reference.py`` shows the operations render in Chromium.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from propcrm.api.app import create_app


class _References(HTMLParser):
    """Every URL a page makes the browser load, and the inline scripts it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in attrs
            if "src" in attrs:
                self.urls.append((tag, attrs["src"]))
        elif tag == "link" and attrs.get("href"):
            self.urls.append((tag, attrs["href"]))
        elif tag in ("img", "iframe", "source") and attrs.get("src"):
            self.urls.append((tag, attrs["src"]))
        for name, value in attrs.items():
            if name.startswith("on"):
                self.inline_scripts.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts.append(data.strip())


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(f"sqlite:///{tmp_path_factory.mktemp('docs') / 'docs.db'}")
    with TestClient(app) as client:
        yield client


def _references(client) -> tuple[_References, object]:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _References()
    page.feed(response.text)
    return page, response


def test_the_api_reference_loads_only_same_origin_assets_that_exist(client):
    page, _ = _references(client)
    assert {tag for tag, _ in page.urls} >= {"script", "link"}, page.urls
    for tag, url in page.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), f"{tag} loads {url} from elsewhere"
        answer = client.get(url)
        assert answer.status_code == 200, f"{url}: {answer.status_code}"
        assert answer.content, url
        if tag == "script":
            assert "javascript" in answer.headers["content-type"], url


def test_the_api_reference_has_no_inline_script_and_the_policy_allows_only_this_site(client):
    page, response = _references(client)
    assert page.inline_scripts == []
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'self'" in policy


def test_the_api_reference_is_swagger_ui_over_the_apps_openapi_document(client):
    page, response = _references(client)
    scripts = [url for tag, url in page.urls if tag == "script"]
    assert any(url.endswith("/swagger-ui-bundle.js") for url in scripts), scripts
    assert 'id="swagger-ui"' in response.text
    assert 'data-openapi-url="/openapi.json"' in response.text
    assert client.get("/openapi.json").json()["info"]["title"] == "propcrm"


def test_redoc_and_the_oauth2_redirect_page_are_off(client):
    """ReDoc would load its script and fonts from a CDN; the OAuth2 redirect page is an inline script (no OAuth2 here)."""
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404
