"""The issue-20 benchmarks' own machinery: `bench breach` carries every breach to the simulator, and the
simulator's traders stop on their own event while the platform keeps serving (how `bench platforms`
drains)."""

from __future__ import annotations

import time

import httpx

from propcrm.tools.platform_sim.bench_breach import bench_breach
from propcrm.tools.platform_sim.main import Simulator


def test_bench_breach_measures_every_breach_up_to_the_simulator_refusing_orders(tmp_path):
    lines: list[str] = []
    result = bench_breach(breaches=3, gap_s=0.05, workdir=str(tmp_path), print_=lines.append)
    assert result["refused"] == 3
    assert 0 < result["decision_p50_ms"] <= result["decision_max_ms"] < 30_000
    assert 0 < result["commit_p50_ms"] <= result["commit_max_ms"] < 30_000
    assert "3 of 3" in lines[0]


def test_the_simulator_s_traders_stop_while_its_platform_serves_on(tmp_path):
    sim = Simulator(str(tmp_path / "sim.db"), "1000", "Manager#2026", zone="+02:00").start(feed=False)
    try:
        logins = [sim.server.add_user(group="demo\\challenge", name=f"T{i}", leverage=100).login for i in range(3)]
        for login in logins:
            sim.server.balance_operation(login, 100_000_00, "pc init test")
        robots = sim.trade(logins, orders_per_s=200)
        time.sleep(0.3)
        sim.traders_stop.set()
        time.sleep(0.2)
        placed = sum(r.orders for r in robots.robots)
        assert placed > 0
        time.sleep(0.3)
        assert sum(r.orders for r in robots.robots) == placed  # no order after the stop
        answer = httpx.get(f"{sim.url}/api/auth/start", params={"version": 484, "agent": "t", "login": "1000",
                                                               "type": "manager"})
        assert answer.status_code == 200 and answer.json()["retcode"].startswith("0")
    finally:
        sim.close()
