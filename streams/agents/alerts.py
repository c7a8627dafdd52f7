"""Sending alerts: one place for their key and their metrics, whichever detector raised them."""

from __future__ import annotations

from collections.abc import Sequence

from streams.adapters.metrics import Metrics
from streams.core.ports import OutputTopic
from streams.records import Alert, encode

__all__ = ["send_alerts"]


async def send_alerts(topic: OutputTopic, alerts: Sequence[Alert], metrics: Metrics) -> None:
    """Send ``alerts`` keyed ``<subject type>:<subject id>`` (one subject's alerts stay in order)."""
    if not alerts:  # the common case, once per record: no metric lookups
        return
    for alert in alerts:
        key = f"{alert.subject.type}:{alert.subject.id}".encode()
        await topic.send(key=key, value=encode(alert))
        metrics.alerts.labels(kind=alert.kind, severity=alert.severity, status=alert.status).inc()
        if alert.status != "recovered" and alert.threshold > 0:
            ratio = alert.statistic / alert.threshold
            metrics.detector_statistic_ratio.labels(kind=alert.kind).observe(ratio)
    metrics.events_out.labels(topic="alerts").inc(len(alerts))
