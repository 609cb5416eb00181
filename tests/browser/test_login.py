"""Logging in and out in a real browser; each role lands on its own home and sees only its own menu."""

from __future__ import annotations

import pytest

MENUS = {
    "admin": {"Dashboard", "Accounts", "Traders", "Leads", "Tasks", "Support inbox", "KYC review", "Decisions",
              "Alerts", "Cases", "Payouts", "Products", "Scalings", "Rule packs", "Halts", "Audit log", "Calendar",
              "Platforms", "Leaderboard", "Users", "API keys", "Firm settings"},
    "risk": {"Dashboard", "Accounts", "Traders", "Tasks", "KYC review", "Decisions", "Alerts", "Cases", "Payouts",
             "Scalings", "Rule packs", "Halts", "Audit log", "Calendar", "Platforms", "Leaderboard"},
    "finance": {"Dashboard", "Accounts", "Traders", "Tasks", "Decisions", "Payouts", "Products", "Scalings",
                "Calendar"},
    "support": {"Accounts", "Traders", "Leads", "Tasks", "Support inbox", "KYC review", "Decisions", "Calendar",
                "Leaderboard"},
    "trader": {"My accounts", "Payouts", "Certificates", "Leaderboard", "Messages", "Profile & KYC"},
}

@pytest.mark.parametrize("role", sorted(MENUS))
def test_each_role_logs_in_to_its_home_and_sees_only_its_menu(page_as, role):
    page = page_as(role)
    assert page.url.endswith("/portal" if role == "trader" else "/office/accounts")
    menu = {text.strip() for text in page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()}
    assert menu == MENUS[role]


def test_a_wrong_password_is_refused_with_a_message_and_logout_ends_the_session(site, browser, page_as, shot):
    context = browser.new_context(base_url=site.url)
    page = context.new_page()
    page.goto("/office/accounts")
    assert "/login" in page.url  # logged out: sent to the login form, which remembers where to go
    page.get_by_label("Firm").fill("acme")
    page.get_by_label("E-mail").fill(site.email("risk"))
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong firm, e-mail or password."
    shot(page, "login")
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/office/accounts")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/office/accounts")
    assert "/login" in page.url
    context.close()


def test_the_keyboard_alone_logs_in_and_skips_to_the_content(site, browser):
    context = browser.new_context(base_url=site.url)
    page = context.new_page()
    page.goto("/login")

    def focused() -> str:
        return page.evaluate("() => { const e = document.activeElement;"
                             " return (e.id || e.getAttribute('class') || e.textContent || e.tagName).trim(); }")

    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(focused())
    assert order == ["skip", "brand", "firm", "email", "password", "primary"], order  # the skip link comes first
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert focused() == "firm"
    page.keyboard.type("acme")
    page.keyboard.press("Tab")
    page.keyboard.type(site.email("risk"))
    page.keyboard.press("Tab")
    page.keyboard.type(site.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/office/accounts")
    page.keyboard.press("Tab")
    assert focused() == "skip" and page.locator("a.skip").is_visible()  # shown when focused, hidden otherwise
    page.keyboard.press("Enter")
    assert focused() == "main"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)")
    context.close()
