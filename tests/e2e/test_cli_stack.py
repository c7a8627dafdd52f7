"""`streamsense up / status / produce / tail / down` run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.local.process import port_in_use
from streams.local.stack import private_stack_env as stack_env
from streams.testing.stack import REPO

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
            int(env["STREAMSENSE_TRITON_METRICS_PORT"]), int(env["STREAMSENSE_PROMETHEUS_PORT"]),
            int(env["STREAMSENSE_METRICS_PORT"])]


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


def test_demo_stops_cleanly_on_ctrl_c_and_the_next_run_catches_the_planted_changes(tmp_path: Path):
    env = stack_env(tmp_path / "home")
    run_dir = tmp_path / "home" / "run"
    # Ctrl-C in a terminal signals the foreground process group: the demo, not the services it
    # started in their own sessions; it must stop them.
    demo = subprocess.Popen([*CLI, "demo", "--events", "4000", "--rate", "200"], cwd=REPO,
                            env={**os.environ, **env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = ""
    try:
        for line in demo.stdout:
            seen += line
            if line.startswith("worker started"):
                break
        time.sleep(4)  # mid-replay
        assert demo.poll() is None, seen
        assert len(list(run_dir.glob("*.pid"))) >= 3, seen  # kafka, triton, worker (and prometheus)
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130, seen + rest
    assert "interrupted; everything the demo started was stopped" in rest, rest[-3000:]
    assert not list(run_dir.glob("*.pid")), rest[-3000:]
    assert not any(port_in_use("127.0.0.1", p) for p in _ports(env))

    # The next run on the same home, the default stream (15,000 events): all four planted
    # changes are caught and no stable key raises an alert.
    result = run(env, "demo", "--events", "15000", "--rate", "1000", timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "stack up" in out and "worker started" in out
    # 3000 reviews (500 for each of 6 products), the campaign's 30, and 1500 articles, all enriched
    assert "4530 reviews and articles processed" in out, out[-4000:]
    assert "planted changes caught: 4 of 4" in out, out[-4000:]
    assert "why cyberpunk-2077 turned negative, says its alert: Mostly '" in out, out[-4000:]
    assert "false alerts on the stable keys: 0" in out, out[-4000:]
    made, engagements = map(int, re.search(r"recommendations: (\d+) for (\d+) clicks", out).groups())
    assert made == engagements > 100, out[-3000:]
    assert "shoppers' next click was in their top 10" in out
    report = Path(re.search(r"report: (\S+\.html)", out).group(1))
    page = report.read_text()
    assert page.count("<svg") == 13 and "planted change" in page and "sentiment_shift" in page
    assert "stopped: prometheus, triton, kafka" in out, out[-2000:]
    assert not list(run_dir.glob("*.pid"))
    assert not any(port_in_use("127.0.0.1", p) for p in _ports(env))
