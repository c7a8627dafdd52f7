"""`streamsense up / status / produce / tail / down` run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.local.process import port_in_use
from tests.conftest import REPO, stack_env

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "streams.cli"]


def run(env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env={**os.environ, **env, "COLUMNS": "200"}, cwd=REPO,
                            capture_output=True, text=True, input=stdin, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"streamsense {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def _ports(env: dict[str, str]) -> list[int]:
    return [int(env["STREAMSENSE_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]),
            int(env["STREAMSENSE_KAFKA_CONTROLLER_PORT"]),
            int(env["STREAMSENSE_TRITON_URL"].rsplit(":", 1)[1]),
            int(env["STREAMSENSE_TRITON_HTTP_URL"].rsplit(":", 1)[1]),
            int(env["STREAMSENSE_TRITON_METRICS_PORT"])]


def test_up_status_produce_tail_down(tmp_path: Path):
    env = stack_env(tmp_path / "home")
    pids: list[int] = []
    try:
        up = run(env, "up")
        assert "kafka running" in up.stderr and "triton running" in up.stderr
        pids = [int(p.read_text()) for p in (tmp_path / "home" / "run").glob("*.pid")]
        assert len(pids) == 2

        again = run(env, "up")  # idempotent: same processes
        assert sorted(int(p.read_text()) for p in (tmp_path / "home" / "run").glob("*.pid")) == sorted(pids)
        assert "created topics" not in again.stderr

        status = run(env, "status").stdout
        assert "kafka" in status and "triton" in status and "reviews.enriched" in status
        assert status.count(" yes ") == 2
        assert "no worker answers on this host's metrics ports" in status

        events = tmp_path / "reviews.jsonl"
        lines = [json.dumps({"review_id": f"r{i}", "product_id": f"p{i % 3}", "text": f"review {i}"})
                 for i in range(20)]
        events.write_text("\n".join([*lines, "this line is not json"]) + "\n")
        produced = run(env, "produce", "reviews", "--file", str(events))
        assert "sent 21 records to reviews" in produced.stderr

        tailed = run(env, "tail", "reviews", "--idle-timeout", "3")
        assert sorted(tailed.stdout.splitlines()) == sorted([*lines, "this line is not json"])

        bad = run(env, "produce", "review", "--synthetic", "1", check=False)
        assert bad.returncode == 1 and "unknown input topic 'review'" in bad.stderr
    finally:
        down = run(env, "down")
    assert "kafka" in down.stderr and "triton" in down.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} survived `streamsense down`"
    assert not any(port_in_use("127.0.0.1", p) for p in _ports(env))
    assert "nothing was running" in run(env, "down").stderr


def test_up_reports_a_taken_port_clearly(tmp_path: Path):
    import socket

    env = stack_env(tmp_path / "home")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["STREAMSENSE_TRITON_HTTP_URL"].rsplit(":", 1)[1])))
        blocker.listen()
        result = run(env, "up", check=False, timeout=120)
    try:
        assert result.returncode == 1
        assert "already in use" in result.stderr and "triton" in result.stderr
        # the broker that did start is stopped again: nothing half-up is left behind
        assert not list((tmp_path / "home" / "run").glob("*.pid"))
    finally:
        run(env, "down")


def test_bad_settings_are_reported(tmp_path: Path):
    env = {**stack_env(tmp_path / "home"), "STREAMSENSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    result = run(env, "status", check=False)
    assert result.returncode == 2 and "STREAMSENSE_KAFKA_SASL_MECHANISM" in result.stderr


def test_demo_short_run_enriches_everything_and_stops(tmp_path: Path):
    env = stack_env(tmp_path / "home")
    result = run(env, "demo", "--events", "3000", "--rate", "1000", timeout=600)
    out = result.stderr
    assert "stack up" in out and "worker started" in out
    # 3000 events: 600 reviews and 300 articles (the rest are clicks), all enriched
    assert "900 reviews and articles processed" in out, out[-3000:]
    assert "reviews.enriched (new) │ 600" in out and "news.enriched (new)    │ 300" in out
    # The planted product turning sour is caught, and the stable ones stay quiet.
    assert "planted change caught" in out, out[-3000:]
    assert "false alerts on the stable products: 0" in out
    # Every simulated click, add-to-cart and purchase got its recommendation list.
    made, engagements = map(int, re.search(r"recommendations: (\d+) for (\d+) clicks", out).groups())
    assert made == engagements > 100, out[-3000:]
    assert "shoppers' next click was in their top 10" in out
    assert "stopped: triton, kafka" in out
    assert not list((tmp_path / "home" / "run").glob("*.pid"))
    assert not any(port_in_use("127.0.0.1", p) for p in _ports(env))
