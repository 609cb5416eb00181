"""A firm's settings without a database (services/firms.py): each field checked and named, and the
precedence of a firm's own notification channels over the process's defaults."""

from __future__ import annotations

import datetime as dt

import pytest

from propcrm.adapters.db.models_tenants import FirmSettings
from propcrm.adapters.notify import EmailNotifier, WebhookNotifier
from propcrm.adapters.platforms.secrets import SecretBox, new_key
from propcrm.services import firms
from propcrm.services.errors import Invalid


@pytest.mark.parametrize("field, value", [
    ("accent_colour", "blue"), ("accent_colour", "#12345"), ("smtp_port", "0"), ("smtp_port", "70000"),
    ("smtp_port", "25a"), ("smtp_host", "bad host"), ("risk_email", "nobody"), ("smtp_sender", "a@b@c"),
    ("webhook_url", "javascript:alert(1)"), ("webhook_url", "https://user:pw@hooks.example/x"),
    ("webhook_url", "http://["), ("product_name", "x" * 81), ("product_name", "tab\there"), ("name", ""),
    ("webhook_secret", "x" * 501), ("logo_key", "abc"),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(Invalid) as refused:
        firms._clean(field, value)
    assert str(refused.value).startswith(field)


def test_good_values_are_normalised_and_empty_clears():
    assert firms._clean("accent_colour", "#AbC123") == "#abc123"
    assert firms._clean("smtp_port", "587") == 587
    assert firms._clean("risk_email", " Desk@Firm.Example ") == "desk@firm.example"
    assert firms._clean("webhook_url", "https://hooks.example/x?a=1") == "https://hooks.example/x?a=1"
    for field in ("product_name", "accent_colour", "smtp_host", "smtp_port", "risk_email", "webhook_url",
                  "webhook_secret"):
        assert firms._clean(field, "") is None, field


def _row(box: SecretBox, **values) -> FirmSettings:
    secrets = {k: values.pop(k) for k in ("webhook_secret", "smtp_password") if k in values}
    return FirmSettings(firm_id="f", sealed=box.seal(secrets) if secrets else None,
                        updated_at=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc), **values)


def test_a_firms_own_channels_override_the_defaults_field_by_field():
    box = SecretBox(new_key().encode())
    email = EmailNotifier("smtp.default", 25, "bot@default", risk_address="risk@default")
    hook = WebhookNotifier("https://default.example/hook", "default-secret")
    assert firms.channels_for(None, email=email, webhook=hook, box=box) == (email, hook)
    assert firms.channels_for(_row(box), email=email, webhook=hook, box=box) == (email, hook)
    own_desk, same_hook = firms.channels_for(_row(box, risk_email="risk@f"), email=email, webhook=hook, box=box)
    assert (own_desk.host, own_desk.sender, own_desk.risk_address) == ("smtp.default", "bot@default", "risk@f")
    assert same_hook is hook and email.risk_address == "risk@default"
    # a URL without a secret is not a webhook of its own (it could not be signed)
    assert firms.channels_for(_row(box, webhook_url="https://f.example/h"), email=email, webhook=hook, box=box)[1] is hook
    own_server, own_hook = firms.channels_for(
        _row(box, smtp_host="mail.f", smtp_port=587, smtp_user="u", smtp_password="pw", webhook_url="https://f.example/h",
             webhook_secret="s"), email=email, webhook=hook, box=box)
    assert (own_server.host, own_server.port, own_server.starttls, own_server.sender) == ("mail.f", 587, True, "bot@default")
    assert own_hook.url == "https://f.example/h" and "pw" not in repr(own_server)
    # no default at all: a firm's own server still sends
    alone, none = firms.channels_for(_row(box, smtp_host="mail.f"), email=None, webhook=None, box=box)
    assert alone.host == "mail.f" and alone.sender == "propcrm@localhost" and none is None


def test_a_totp_secret_sealed_as_text_opens_only_with_its_key():
    from propcrm.adapters.platforms.secrets import SecretError

    box = SecretBox(new_key().encode())
    sealed = box.seal_text("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed and box.open_text(sealed).reveal() == "JBSWY3DPEHPK3PXP"
    assert box.open_text(None) is None
    with pytest.raises(SecretError):
        SecretBox(new_key().encode()).open_text(sealed)
