"""The simulator's cheaper paths (issue 20): a batch of orders is written as one transaction and a
restart finds all of it; reads by group, cached deal JSON and cached trading states answer what the
general paths answer."""

from __future__ import annotations

import json

import msgspec

from propcrm.tools.platform_sim.robots import Robots
from propcrm.tools.platform_sim.server import SimServer
from propcrm.tools.platform_sim.webapi import WebApi


class Wall:
    def __init__(self) -> None:
        self.now = 1_772_614_800.0

    def __call__(self) -> float:
        self.now += 0.013
        return self.now


def _trading(path) -> tuple[SimServer, list[int], Robots]:
    server = SimServer(str(path), zone="+02:00", wall=Wall())
    logins = []
    for i in range(20):
        account = server.add_user(group="bench\\challenge" if i % 4 else "other\\x", name=f"T{i}", leverage=100)
        server.balance_operation(account.login, 100_000_00, "pc init test")
        logins.append(account.login)
    robots = Robots(server, logins, orders_per_s=1, reckless_share=0.2, reckless_scale=30, seed=3)
    return server, logins, robots


def test_a_batch_of_orders_is_written_together_and_a_restart_finds_every_change(tmp_path):
    server, logins, robots = _trading(tmp_path / "sim.db")
    for round_ in range(30):
        with server.batch():
            for _ in range(15):
                robots.act(robots._rng.choice(robots.robots))
        server.tick(0.5)
    server.rollover(triple=True)
    deals = [(d.Deal, d.Login, d.Profit_c, d.Storage_c) for d in server.deals]
    accounts = {a.login: (a.balance_c, a.rights, a.group) for a in server.accounts.values()}
    positions = {p.ticket: (p.login, p.volume_ext, p.storage_c) for p in server.positions.values()}
    next_ticket = server.next_ticket
    server.close()
    again = SimServer(str(tmp_path / "sim.db"), zone="+02:00")
    assert [(d.Deal, d.Login, d.Profit_c, d.Storage_c) for d in again.deals] == deals
    assert {a.login: (a.balance_c, a.rights, a.group) for a in again.accounts.values()} == accounts
    assert {p.ticket: (p.login, p.volume_ext, p.storage_c) for p in again.positions.values()} == positions
    assert again.next_ticket == next_ticket and again.next_deal == deals[-1][0] + 1
    for body in again._db.execute("SELECT body FROM deals"):  # records stay JSON objects of the same fields
        assert set(json.loads(body[0])) >= {"Deal", "Login", "wall_ms"}
    again.close()


def test_reads_by_group_and_the_cached_answers_are_the_general_ones(tmp_path):
    server, logins, robots = _trading(tmp_path / "sim.db")
    api = WebApi(server, manager="1000", password="x")
    for _ in range(200):
        robots.act(robots._rng.choice(robots.robots))
    server.tick(1.0)
    grouped = server.logins_of(group="bench\\*")
    assert grouped == [login for i, login in enumerate(logins) if i % 4]
    start = server.deals[len(server.deals) // 2].Time
    many = server.deals_between(grouped, start, start + 86400)
    one_by_one = sorted((d for login in grouped for d in server.deals_between([login], start, start + 86400)),
                        key=lambda d: d.Deal)
    assert many == one_by_one and many
    assert all(d.web_json() == msgspec.json.encode(d.to_web()) for d in server.deals)
    for _ in range(3):  # cached states follow trades, ticks and settings
        answer = msgspec.json.decode(api.account_get_batch({"group": "bench\\*"}, None, None).body)["answer"]
        assert answer == [api._state(login) for login in grouped if api._has_state(login)]
        robots.act(robots._rng.choice(robots.robots))
        server.tick(0.3)
        server.update_user(grouped[0], leverage=50)
    server.update_user(grouped[1], group="other\\y")
    assert grouped[1] not in server.logins_of(group="bench\\*")
    server.close()
