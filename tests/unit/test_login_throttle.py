"""The login throttle: per account and per address, sliding windows, Retry-After, what gets audited."""

from __future__ import annotations

from propcrm.services.logins import LoginThrottle, account_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_account_is_throttled_after_its_failures_until_the_oldest_leaves_the_window():
    clock = Clock()
    throttle = LoginThrottle(account_failures=3, account_window=60, address_failures=100, clock=clock)
    key = account_key("fa", "Risk@FA.example ")
    assert key == account_key("fa", "risk@fa.example")  # e-mails are compared as logins are
    for i in range(3):
        assert throttle.admit(address=f"10.0.0.{i}", account=key) is None  # from several addresses
        throttle.failed(address=f"10.0.0.{i}", account=key)
        clock.now += 10
    refused = throttle.admit(address="10.0.0.9", account=key)
    assert refused is not None and refused.which == "account" and refused.first and refused.refused == 1
    assert refused.retry_after == 30  # the first failure (t=1000) leaves the window at t=1060; now t=1030
    again = throttle.admit(address="10.0.0.9", account=key)
    assert not again.first and again.refused == 2
    assert throttle.admit(address="10.0.0.9", account=account_key("fa", "other@fa.example")) is None
    clock.now += 31
    assert throttle.admit(address="10.0.0.9", account=key) is None
    # the next failure reports the refused attempts, once
    assert throttle.failed(address="10.0.0.9", account=key)[2] == 2


def test_an_address_is_throttled_after_its_failures_whatever_the_accounts():
    clock = Clock()
    throttle = LoginThrottle(account_failures=100, address_failures=5, address_window=600, clock=clock)
    for i in range(5):
        assert throttle.admit(address="203.0.113.7", account=account_key("fa", f"guess{i}@fa.example")) is None
        throttle.failed(address="203.0.113.7", account=account_key("fa", f"guess{i}@fa.example"))
    refused = throttle.admit(address="203.0.113.7", account=account_key("fa", "new@fa.example"))
    assert refused.which == "address" and refused.retry_after == 600
    assert throttle.admit(address="198.51.100.1", account=account_key("fa", "new@fa.example")) is None


def test_an_address_may_only_try_so_many_logins_a_minute_even_successful_ones():
    clock = Clock()
    throttle = LoginThrottle(address_attempts=4, attempt_window=60, clock=clock)
    for _ in range(4):
        assert throttle.admit(address="a", account=account_key("fa", "risk@fa.example")) is None
        throttle.succeeded(account=account_key("fa", "risk@fa.example"))
    assert throttle.admit(address="a", account=account_key("fa", "risk@fa.example")).which == "address"
    clock.now += 60
    assert throttle.admit(address="a", account=account_key("fa", "risk@fa.example")) is None


def test_a_success_clears_the_accounts_failures_but_not_the_addresss():
    clock = Clock()
    throttle = LoginThrottle(account_failures=2, address_failures=3, clock=clock)
    key = account_key("fa", "risk@fa.example")
    throttle.failed(address="a", account=key)
    throttle.succeeded(account=key)
    assert throttle.failed(address="a", account=key)[:2] == (1, 2)


def test_memory_is_bounded(monkeypatch):
    from propcrm.services import logins

    monkeypatch.setattr(logins, "MAX_KEYS", 100)
    throttle = LoginThrottle()
    for i in range(1000):
        throttle.failed(address=f"a{i}", account=f"k{i}")
    assert len(throttle._account.keys) <= 101 and len(throttle._address.keys) <= 101
