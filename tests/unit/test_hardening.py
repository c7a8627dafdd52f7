"""Hostile input and hostile state, on fakes: timestamps of every shape never make decoding
raise and never reach a detector outside the sanity window; oversized records are
dead-lettered with the reason; forged state in a table is never unpickled."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.sequential import MentionSurgeDetector
from streams.adapters.metrics import Metrics
from streams.adapters.state_key import load_or_create_key
from streams.agents.detectors import KeyedMonitors
from streams.agents.text import TextProcessor
from streams.core.eventtime import EventTimeWindow
from streams.core.monitoring import MonitorConfig, Observation
from streams.core.rules import InputRules
from streams.core.state import StateSeal, compress, decompress
from streams.core.text import Analysis
from streams.errors import ForgedState
from streams.records import DecodeError, decode_input
from streams.testing import FakeTable, FakeTopic, fake_events

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
WINDOW = EventTimeWindow(behind_s=7 * 86400, ahead_s=3600)

# Timestamps of every shape: RFC 3339 with any offset and fraction, leap seconds, the ends of
# the calendar, epoch numbers of any size, and junk.
offsets = st.one_of(st.just("Z"), st.just("z"), st.builds(
    lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)))
rfc3339 = st.builds(
    lambda d, h, mi, s, frac, off: f"{d.isoformat()}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
    st.dates(), st.integers(0, 23), st.integers(0, 59), st.integers(0, 60),
    st.sampled_from(["", ".5", ".123", ".123456", ".123456789"]), offsets)
timestamps = st.one_of(
    rfc3339,
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:60Z",
                     "2016-12-31T23:59:60Z", "0001-01-01T00:00:00Z", "2026-11-22T10:00:00"]),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.booleans(),
    st.none())


@pytest.mark.parametrize("topic", ["reviews", "clicks", "news"])
@given(ts=timestamps)
@settings(max_examples=300, deadline=None)
def test_no_timestamp_makes_decoding_raise_and_none_escapes_the_window(topic: str, ts):
    base = {"reviews": {"review_id": "r", "product_id": "p", "text": "fine"},
            "clicks": {"event_id": "c", "user_id": "u", "item_id": "i", "action": "click"},
            "news": {"article_id": "n", "source": "s", "title": "t"}}[topic]
    try:
        raw = json.dumps({**base, "ts": ts}).encode()
    except ValueError:
        return
    record = decode_input(topic, raw)
    if isinstance(record, DecodeError):
        assert record.reason.startswith(("ts:", "invalid JSON")), record.reason
        return
    resolved = WINDOW.resolve(record.ts, broker_ms=NOW_MS, now=NOW)
    assert NOW - timedelta(days=7) <= resolved.ts <= NOW + timedelta(hours=1)
    assert bool(resolved.flags) == (record.ts is not None and resolved.ts != record.ts)


@given(broker_ms=st.one_of(st.none(), st.integers(-10**15, 10**15)), ts=st.datetimes(timezones=st.just(UTC)))
@settings(max_examples=300, deadline=None)
def test_an_untrusted_kafka_record_time_gives_way_to_the_worker_clock(broker_ms, ts):
    resolved = WINDOW.resolve(ts, broker_ms=broker_ms, now=NOW)
    assert NOW - timedelta(days=365 + 7) <= resolved.ts <= NOW + timedelta(hours=2)


@given(broker_ms=st.one_of(st.none(), st.integers(-10**15, 10**15), st.floats(0, 2e12)),
       ts=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
       lag_s=st.floats(-400 * 86400, 400 * 86400))
@settings(max_examples=500, deadline=None)
def test_the_click_paths_event_time_in_seconds_is_the_same_as_in_datetimes(broker_ms, ts, lag_s):
    now = NOW + timedelta(seconds=lag_s)
    resolved = WINDOW.resolve(ts, broker_ms=broker_ms, now=now)
    seconds, flags = WINDOW.resolve_s(None if ts is None else ts.timestamp(), broker_ms=broker_ms,
                                      now_s=now.timestamp())
    assert flags == resolved.flags
    assert seconds == pytest.approx(resolved.ts.timestamp(), abs=1e-3)


def test_the_calendar_ends_and_leap_seconds_decode():
    for ts, expected in [("0001-01-01T00:00:00+14:00", datetime.min.replace(tzinfo=UTC)),
                         ("9999-12-31T23:59:59-14:00", datetime.max.replace(tzinfo=UTC)),
                         ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC))]:
        review = decode_input("reviews", json.dumps({"review_id": "r", "product_id": "p", "text": "x",
                                                     "ts": ts}).encode())
        assert not isinstance(review, DecodeError) and review.ts == expected, (ts, review)


class _Inferencer:
    async def analyse(self, texts, *, domain=None):
        return [Analysis(sentiment={"label": "positive", "score": 0.9,
                                    "probs": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}},
                         entities=[], truncated=False, model="fake@1") for _ in texts]


def _events(values: list[dict | bytes]):
    return fake_events("reviews", values, timestamp=NOW.timestamp())


def test_hostile_reviews_are_enriched_with_their_time_corrected_or_dead_lettered():
    values = [
        {"review_id": "future", "product_id": "p1", "text": "fine", "ts": "9999-12-31T23:59:59-14:00"},
        {"review_id": "ancient", "product_id": "p1", "text": "fine", "ts": "0001-01-01T00:00:00+14:00"},
        {"review_id": "huge", "product_id": "p1", "text": "x" * 900_000},
        {"review_id": "ok", "product_id": "p1", "text": "fine", "ts": (NOW - timedelta(minutes=5)).isoformat()},
    ]
    output, deadletter, metrics = FakeTopic(), FakeTopic(), Metrics()
    processor = TextProcessor("reviews", inferencer=_Inferencer(), output=output, deadletter=deadletter,
                              metrics=metrics, rules=InputRules(window=WINDOW))
    asyncio.run(processor.process(_events(values)))
    by_id = {r["review_id"]: r for r in output.values()}
    assert set(by_id) == {"future", "ancient", "ok"}
    # The replaced time is the Kafka record time; the original is kept; the flag says why.
    assert by_id["future"]["time_flags"] == ["event_time_ahead"]
    assert by_id["future"]["ts"] == "2026-11-29T12:00:00.000Z"
    assert by_id["future"]["ts_original"] == "9999-12-31T23:59:59.999Z"
    assert by_id["ancient"]["time_flags"] == ["event_time_behind"]
    assert by_id["ok"]["time_flags"] == [] and by_id["ok"]["ts_original"] is None
    [dead] = deadletter.values()
    assert dead["offset"] == 2 and "over the input limit of 524288 bytes" in dead["error"]
    assert dead["raw_truncated"] and len(json.dumps(dead)) < 1_000_000
    replaced = metrics.event_time_replaced
    assert replaced.labels(topic="reviews", flag="event_time_ahead")._value.get() == 1


def test_an_enriched_record_over_the_output_limit_is_dead_lettered_not_sent():
    output, deadletter = FakeTopic(), FakeTopic()
    big = {"review_id": "big", "product_id": "p1", "text": "fine", "extra": "y" * 5000}
    processor = TextProcessor("reviews", inferencer=_Inferencer(), output=output, deadletter=deadletter,
                              metrics=Metrics(), rules=InputRules(max_output_bytes=4000))
    asyncio.run(processor.process(_events([big])))
    assert output.values() == []
    [dead] = deadletter.values()
    assert "over the output limit of 4000 bytes" in dead["error"]


def test_the_mention_surge_detector_survives_a_jump_to_year_9999():
    detector = MentionSurgeDetector(bucket_s=60, warmup=5)
    t = NOW.timestamp()
    for i in range(300):
        detector.update(t + i * 20)
    started = time.perf_counter()
    detector.update(datetime(9999, 12, 31, tzinfo=UTC).timestamp())
    assert time.perf_counter() - started < 2.0
    assert detector.quiet_buckets > 10**9  # the skipped buckets count as quiet ones


class _Forged:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_forged_pickle_in_a_monitor_table_is_rejected_not_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    table, metrics = FakeTable(), Metrics()
    monitors = KeyedMonitors(table, "product", MonitorConfig(), with_surge=False, metrics=metrics,
                             seal=StateSeal(os.urandom(32)))
    table["p1"] = base64.b64encode(pickle.dumps((1, _Forged(marker)))).decode()
    # Even a value that carries our format's header, but a MAC made without the key, is refused.
    table["p2"] = base64.b64encode(b"SSS1" + b"\0" * 32 + pickle.dumps((1, _Forged(marker)))).decode()
    batch = monitors.batch()
    for key in ("p1", "p2"):
        monitor = batch.get(key, key, fake_events("reviews", [b""])[0])
        monitor.observe(Observation("r1", "fine", "positive", 0.1, NOW))
    assert not marker.exists()
    assert metrics.state_rejected.labels(table="product-monitors")._value.get() == 2
    batch.save()  # the fresh monitors replace the forged values, sealed
    again = monitors.batch().get("p1", "p1", fake_events("reviews", [b""])[0])
    assert again.shift is not None and metrics.state_rejected.labels(table="product-monitors")._value.get() == 2


def test_a_valid_value_under_another_key_or_another_deployment_key_is_refused():
    seal = StateSeal(b"a" * 32)
    sealed = seal.seal(b"state", context="click-models/1")
    with pytest.raises(ForgedState):
        seal.open(sealed, context="click-models/2")
    with pytest.raises(ForgedState):
        StateSeal(b"b" * 32).open(sealed, context="click-models/1")


def test_decompression_is_capped():
    bomb = compress(b"\0" * 10_000_000)
    assert len(bomb) < 50_000  # a small value that would inflate 200-fold
    with pytest.raises(ForgedState, match="more than"):
        decompress(bomb, max_bytes=1_000_000)
    with pytest.raises(ForgedState):
        decompress(bomb[:100], max_bytes=1_000_000)


def test_the_state_key_is_created_once_with_owner_only_access(tmp_path: Path):
    path = tmp_path / "home" / "state.key"
    key, origin = load_or_create_key(key=None, key_file=None, default_file=path)
    assert origin == str(path) and len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_key(key=None, key_file=None, default_file=path)[0] == key
    assert load_or_create_key(key="ab" * 16, key_file=None, default_file=path)[0] == bytes.fromhex("ab" * 16)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_or_create_key(key="short", key_file=None, default_file=path)
    with pytest.raises(FileNotFoundError):  # a key file that was named must exist: never invented
        load_or_create_key(key=None, key_file=tmp_path / "missing.key", default_file=path)


def test_healthz_fails_once_the_event_loop_stops_beating():
    metrics = Metrics()
    metrics.beat()
    assert metrics.health(timeout_s=0.2)[0]
    time.sleep(0.3)
    alive, reason = metrics.health(timeout_s=0.2)
    assert not alive and "stuck" in reason


def test_the_scram_password_never_reaches_a_command_line(tmp_path, monkeypatch):
    """The storage tool gets its SCRAM user from a 0600 argument file the java launcher expands
    (tests/integration/test_secured_kafka.py runs the real tool with it); the file is gone after."""
    from streams.local import kafka

    seen = []

    def run_step(cmd, *, what, quiet=True, secrets=()):
        argfile = Path(cmd[-1][1:])
        seen.append((list(cmd), argfile.read_text(), argfile.stat().st_mode & 0o777, list(secrets)))

    monkeypatch.setattr(kafka, "run_step", run_step)
    props = tmp_path / "server.properties"
    for name in ("server.properties", "b.pem", "ca.pem"):
        (tmp_path / name).write_text("")
    security = kafka.BrokerSecurity(mechanism="SCRAM-SHA-512", username="streamsense", password="s3cret pw",
                                    pem=tmp_path / "b.pem", cafile=tmp_path / "ca.pem")
    kafka._format_storage(["java", "-cp", "libs/*"], props, security)
    [(cmd, content, mode, secrets)] = seen
    assert not any("s3cret" in part for part in cmd) and cmd[-1].startswith("@")
    assert "'SCRAM-SHA-512=[name=\"streamsense\",password=\"s3cret pw\"]'" in content
    assert content.startswith("'kafka.tools.StorageTool' 'format'") and mode == 0o600
    assert secrets == ["s3cret pw"] and not (tmp_path / "format.args").exists()
    with pytest.raises(kafka.ServiceError, match="quote, backslash"):
        kafka.argfile_quote("it's")
