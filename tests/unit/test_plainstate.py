"""Detector state as plain JSON (streams/core/plainstate.py): nothing read back can run code,
and a monitor restored mid-stream behaves exactly as the one that kept running."""

from __future__ import annotations

import base64
import json
import pickle
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import plainstate
from streams.core.monitoring import MonitorConfig, Observation, SubjectMonitor
from streams.core.state import StateSeal, decompress

SEAL = StateSeal(b"k" * 32)
T0 = datetime(2026, 11, 22, tzinfo=UTC)


def stream(seed: int, n: int) -> list[Observation]:
    rng = random.Random(seed)
    change, gap = rng.randrange(100, n), rng.choice([1, 7, 60])
    out = []
    for i in range(n):
        p = 0.1 if i < change else rng.choice([0.3, 0.6])
        # Bursts of mentions after the change drive the surge detector too.
        ts = T0 + timedelta(seconds=gap * i if i < change else gap * change + (i - change))
        negative = rng.random() < p
        out.append(Observation(f"e{i}", f"text {i}", "negative" if negative else "positive",
                               0.9 if negative else 0.1, ts))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.05, 0.95), surge=st.booleans())
def test_a_restored_monitor_continues_exactly_as_the_original(seed, cut, surge):
    observations = stream(seed, 700)
    config = MonitorConfig(warmup=30, arl0=300, surge_warmup=10)
    kept = SubjectMonitor("entity", "Apple", config, with_surge=surge)
    at = int(cut * len(observations))
    for obs in observations[:at]:
        kept.observe(obs)
    restored = SubjectMonitor.loads(kept.dumps(SEAL, context="entity-monitors/Apple"), SEAL,
                                    context="entity-monitors/Apple")
    assert restored is not None
    for obs in observations[at:]:
        # As JSON, as they are sent (an alert may hold NaN, which never equals itself).
        assert [a.model_dump_json() for a in restored.observe(obs)] == \
            [a.model_dump_json() for a in kept.observe(obs)]
    assert restored.dumps(SEAL, context="x") == kept.dumps(SEAL, context="x")


class Boom:
    def __reduce__(self):
        return (Path("/tmp/streamsense-plainstate-pwned").touch, ())


def test_a_sealed_pickle_from_an_old_version_is_discarded_never_unpickled(tmp_path):
    target = Path("/tmp/streamsense-plainstate-pwned")
    target.unlink(missing_ok=True)
    sealed = SEAL.seal(pickle.dumps((1, Boom())), context="product-monitors/p1")
    assert SubjectMonitor.loads(sealed, SEAL, context="product-monitors/p1") is None
    assert not target.exists()


@pytest.mark.parametrize("payload, message", [
    (b'{"c":"Popen","a":{}}', "not one of"),
    (b'{"d":{"version":2,"monitor":{"c":"SubjectMonitor","a":{"__class__":1}}}}', "bad attributes"),
    (b'{"x":1}', "unexpected 'x'"),
    (b'{"d":{}, "t":[]}', "unexpected object"),
    (b"[" * 5000 + b"]" * 5000, "deeper than|not JSON"),
    (b"\x80\x04K\x01.", "not JSON"),
])
def test_anything_but_plain_data_of_named_classes_is_refused(payload, message):
    with pytest.raises(plainstate.PlainStateError, match=message):
        plainstate.loads(payload, {"SubjectMonitor": SubjectMonitor})


def test_a_monitor_is_stored_as_readable_json():
    monitor = SubjectMonitor("product", "p1", MonitorConfig())
    payload = SEAL.open(monitor.dumps(SEAL, context="c"), context="c")
    body = json.loads(decompress(payload, max_bytes=100_000))
    assert body["d"]["version"] == 2 and body["d"]["monitor"]["c"] == "SubjectMonitor"
    with pytest.raises(plainstate.PlainStateError, match="not plain data"):
        plainstate.dumps(object(), {})


def test_keyed_monitors_decode_only_what_they_did_not_store_themselves(monkeypatch):
    from streams.adapters.metrics import Metrics
    from streams.agents.detectors import KeyedMonitors
    from streams.testing import FakeTable

    decoded = []
    real = SubjectMonitor.loads.__func__
    monkeypatch.setattr(SubjectMonitor, "loads", classmethod(
        lambda cls, *a, **k: decoded.append(1) or real(cls, *a, **k)))
    table = FakeTable()
    monitors = KeyedMonitors(table, "product", MonitorConfig(), with_surge=False, metrics=Metrics(), seal=SEAL,
                             cache_keys=2)
    first = SubjectMonitor("product", "p1", MonitorConfig())
    monitors.store("p1", first)
    assert monitors.load("p1") is first and decoded == []  # what this worker stored last
    # Loaded but never saved (a batch that failed): the next load reads the table again.
    again = monitors.load("p1")
    assert again is not first and decoded == [1]
    monitors.store("p1", again)
    other = SubjectMonitor("product", "p1", MonitorConfig())
    other.negatives.append({"id": "x"})
    table["p1"] = base64.b64encode(other.dumps(SEAL, context="product-monitors/p1")).decode()
    assert monitors.load("p1").negatives == [{"id": "x"}] and decoded == [1, 1]  # changed underneath
    for key in ("a", "b", "c"):  # bounded: the oldest stored is forgotten
        monitors.store(key, SubjectMonitor("product", key, MonitorConfig()))
    monitors.load("a")
    assert decoded == [1, 1, 1]
