"""The password rules (NIST SP 800-63B style): what is refused, why, and what is accepted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propcrm.services.passwords import MIN_PASSWORD, generate_password, password_problem


@pytest.mark.parametrize("password,why", [
    ("password", "at least 12 characters (this one has 8)"),
    ("12345678", "at least 12 characters"),
    ("", "at least 12 characters"),
    ("password1234", "too easy to guess"),
    ("Password123!", "too easy to guess"),
    ("qwertyuiop12", "too easy to guess"),
    ("123456789012", "too easy to guess"),
    ("aaaaaaaaaaaaaaaa", "too easy to guess"),
    ("iloveyou2024!", "too easy to guess"),
    ("passwordpassword", "too easy to guess"),
    ("demo-admin-3fa9c1", "must not contain the name part of the e-mail address"),  # the old demo passwords
    ("my risk@fa.example secret", "must not contain the e-mail address"),
    ("trading at acme-prop is fun", "must not contain the firm's id"),
    ("tab\there and there", "control characters"),
    ("x" * 1025, "at most 1,024 characters"),
    (None, "must be text"),
])
def test_weak_and_context_passwords_are_refused_with_the_reason(password, why):
    email = "admin@demo.propcrm" if password == "demo-admin-3fa9c1" else "risk@fa.example"
    firm = "demo" if password == "demo-admin-3fa9c1" else "acme-prop"
    problem = password_problem(password, email=email, firm_id=firm)
    assert problem is not None and why in problem, problem


def test_the_reason_for_a_common_password_says_what_to_do():
    problem = password_problem("Password123!", email="risk@fa.example")
    assert "commonly used password" in problem and "passphrase" in problem


@pytest.mark.parametrize("password", [
    "correct horse battery staple",
    "a long enough one",
    "Tr0ub4dor-and-3-horses",
    "žluťoučký kůň úpěl ódy",  # any Unicode
    "x7#Kq9!vR2@mZ",
    "seven ravens circled the old lighthouse " + "x" * 900,  # long: only the first 72 characters are estimated
])
def test_strong_passwords_are_accepted(password):
    assert password_problem(password, email="risk@fa.example", firm_id="fa") is None


@settings(max_examples=40, deadline=None)
@given(st.emails())
def test_generated_passwords_meet_the_rules_and_are_long(email):
    password = generate_password(email=email, firm_id="demo")
    assert len(password) >= 20 > MIN_PASSWORD
    assert password_problem(password, email=email, firm_id="demo") is None


def test_generated_passwords_differ():
    assert len({generate_password() for _ in range(50)}) == 50
