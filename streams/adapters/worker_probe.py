"""What the running workers say about themselves: their metrics endpoints, read twice a second
apart for rates (``streamsense status``).

>>> text = 'streamsense_events_in_total{topic="reviews"} 10.0\\nstreamsense_errors_total{kind="x"} 2.0\\n'
>>> totals(text)
{'in': 10.0, 'out': 0.0, 'deadletter': 0.0, 'errors': 2.0}
>>> text = ('streamsense_shadow_texts_total{served="a",shadow="b"} 40.0\\n'
...         'streamsense_shadow_agreed_total{output="sentiment",served="a",shadow="b"} 30.0\\n'
...         'streamsense_shadow_rated_right_total{labeller="shadow",served="a",shadow="b"} 9.0\\n')
>>> shadow_totals(text)[("a", "b")]["texts"], shadow_totals(text)[("a", "b")]["shadow_right"]
(40.0, 9.0)
>>> shadow_totals(text, text)[("a", "b")]["sentiment"]  # two workers' counts add up
60.0
"""

from __future__ import annotations

import http.client
import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings

__all__ = ["WorkerSnapshot", "probe_workers", "shadow_comparison", "shadow_totals", "totals"]

_SERIES = {"streamsense_events_in_total": "in", "streamsense_events_out_total": "out",
           "streamsense_deadletter_total": "deadletter", "streamsense_errors_total": "errors"}


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    index: int
    address: str
    in_per_s: float
    out_per_s: float
    deadlettered: float
    errors: float


def totals(text: str) -> dict[str, float]:
    """Sums of the worker's input, output, dead-letter and error counters."""
    out = dict.fromkeys(_SERIES.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _SERIES.get(sample.name)
            if key is not None:
                out[key] += sample.value
    return out


_SHADOW_KEYS = ("texts", "sentiment", "entities", "rated", "served_right", "shadow_right")
Counts = dict[tuple[str, str], dict[str, float]]  # (served, shadow) version names -> counters


def shadow_totals(*texts: str) -> Counts:
    """The shadow comparison's counters in the metrics ``texts`` (one per worker), summed per
    (served, shadow) pair of version names."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for family in (f for text in texts for f in text_string_to_metric_families(text)):
        for sample in family.samples:
            labels = sample.labels
            key = {"streamsense_shadow_texts_total": "texts", "streamsense_shadow_rated_total": "rated",
                   "streamsense_shadow_agreed_total": labels.get("output"),
                   "streamsense_shadow_rated_right_total": f"{labels.get('labeller')}_right"}.get(sample.name)
            if key in _SHADOW_KEYS:
                pair = out.setdefault((labels["served"], labels["shadow"]), dict.fromkeys(_SHADOW_KEYS, 0.0))
                pair[key] += sample.value
    return out


def shadow_comparison(settings: Settings, *, max_workers: int = 16) -> Counts:
    """:func:`shadow_totals` over every worker answering on this host's metrics ports."""
    texts = (_fetch(f"{settings.metrics_host}:{settings.metrics_port + i}") for i in range(max_workers))
    return shadow_totals(*(text for text in texts if text is not None))


def _fetch(address: str) -> str | None:
    """A worker's metrics at ``address``; None when nothing answers there, or something that
    is not a worker does (the ports after the first worker's may belong to other services:
    Kafka, Triton's gRPC, another exporter)."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as response:
            text = response.read().decode()
        families = list(text_string_to_metric_families(text))
    except (OSError, http.client.HTTPException, ValueError):  # ValueError: not UTF-8, not Prometheus
        return None
    return text if any(f.name.startswith("streamsense_") for f in families) else None


def _read(address: str) -> dict[str, float] | None:
    text = _fetch(address)
    return None if text is None else totals(text)


def probe_workers(settings: Settings, *, max_workers: int = 16,
                  interval_s: float = 1.0) -> list[WorkerSnapshot]:
    """Workers answering on this host's metrics ports (the first ``max_workers`` indexes)."""
    addresses = {i: f"{settings.metrics_host}:{settings.metrics_port + i}" for i in range(max_workers)}
    first = {i: t for i, a in addresses.items() if (t := _read(a)) is not None}
    if not first:
        return []
    started = time.monotonic()
    time.sleep(interval_s)
    snapshots = []
    for i, before in first.items():
        after = _read(addresses[i]) or before
        elapsed = max(time.monotonic() - started, 1e-6)
        snapshots.append(WorkerSnapshot(i, addresses[i], (after["in"] - before["in"]) / elapsed,
                                        (after["out"] - before["out"]) / elapsed, after["deadletter"],
                                        after["errors"]))
    return snapshots
