"""The demo's summary: which alert caught each planted change, how late, what else fired."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from models.online.evaluate import popularity_recommender, score_recommender
from streams.demo.data import MIX, DemoStream, PlantedChange
from streams.demo.types import Attribution, DemoOptions, DemoOutputs
from streams.local.settings import LocalStackSettings
from streams.local.stack import LocalStack
from streams.topics import INPUT_TOPICS

__all__ = ["attribute", "delay", "summary", "where_to_look"]

_TEXT_SHARE = MIX["reviews"] + MIX["news"]


def _about(change: PlantedChange, alert: dict) -> bool:
    """Whether the alert's subject is one the change is about."""
    subject = alert["subject"]
    return any(subject["type"] == t and re.fullmatch(p, subject["id"].casefold()) for t, p in change.subjects)


def attribute(stream: DemoStream, alerts: list[dict]) -> Attribution:
    """Which alerts the planted changes explain: an alert on a changed subject (or on an entity
    the change is about) after the change; a drift of an input stream's label shares after a
    change in that stream. Everything else is a false alert."""
    def explains(change: PlantedChange, alert: dict) -> bool:
        subject = alert["subject"]
        after = datetime.fromisoformat(alert["detected_at"]) >= change.at
        if not after:
            return False
        if _about(change, alert):
            return True
        stream_topic = {"product": "reviews", "source": "news"}.get(change.kind)
        return (subject["type"] == "stream" and stream_topic is not None
                and re.fullmatch(rf"(\S*\.)?{stream_topic}:label_\w+", subject["id"]) is not None)

    caught: dict[str, dict | None] = {c.kind: None for c in stream.changes}
    expected, false = [], []
    for alert in sorted(alerts, key=lambda a: a["detected_at"]):
        change = next((c for c in stream.changes if explains(c, alert)), None)
        if change is None:
            false.append(alert)
            continue
        expected.append(alert)
        primary = change.subjects[0]
        if caught[change.kind] is None and alert["subject"]["type"] == primary[0] and \
                (not change.alert_kinds or alert["kind"] in change.alert_kinds):
            caught[change.kind] = alert
    return Attribution(caught, expected, false)


def delay(stream: DemoStream, change: PlantedChange, alert: dict) -> int:
    """Events of the changed subject between the change and the alert."""
    at = datetime.fromisoformat(alert["detected_at"])
    if change.kind == "clicks":
        return sum(1 for e in stream.clicks[change.index:] if e.ts <= at.timestamp())
    on_reviews = change.kind in ("product", "bombing")
    records, key = (stream.reviews, "product_id") if on_reviews else (stream.news, "source")
    return sum(1 for r in records if r[key] == change.subject
               and change.at <= datetime.fromisoformat(r["ts"]) < at)


def _percentiles(values: list[int]) -> str:
    if not values:
        return "-"
    pick = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.95, 0.99)]
    return " / ".join(f"{v:,} ms" for v in pick)


def summary(stream: DemoStream, outputs: DemoOutputs, console: Console) -> None:
    table = Table("input", "replayed", "output", "records", "end-to-end p50 / p95 / p99", title="summary")
    latency = {
        "reviews": outputs.latencies_ms((r, "review_id") for r in outputs.reviews),
        "news": outputs.latencies_ms((r, "article_id") for r in outputs.news),
        "clicks": outputs.latencies_ms((r, "trigger_event_id") for r in outputs.recommendations.values()),
    }
    made = {"reviews": ("reviews.enriched", len(outputs.reviews)),
            "news": ("news.enriched", len(outputs.news)),
            "clicks": ("recommendations", len(outputs.recommendations))}
    for topic in INPUT_TOPICS:
        out_topic, n = made[topic]
        table.add_row(topic, str(outputs.sent.get(topic, 0)), out_topic, str(n), _percentiles(latency[topic]))
    table.add_row("", "", "alerts", str(len(outputs.alerts)), "")
    table.add_row("", "", "deadletter", str(len(outputs.deadletter)), "")
    console.print(table)
    _throughput(outputs, console)
    _changes(stream, outputs, console)
    _recommendations(stream, outputs, console)


def _throughput(outputs: DemoOutputs, console: Console) -> None:
    texts = len(outputs.reviews) + len(outputs.news)
    if outputs.first_ts and outputs.last_out_ts:
        seconds = max((outputs.last_out_ts - outputs.first_ts) / 1000, 1e-3)
        console.print(f"{texts} reviews and articles processed in {seconds:.1f}s "
                      f"({texts / seconds:.0f}/s end to end, replay included; "
                      f"{sum(outputs.sent.values()) / seconds:.0f} input events/s in all)")
        queued = {t: outputs.peak_lag.get(t, 0) for t in ("reviews", "news")}
        if max(queued.values()) >= 100:
            keeps_up = texts / seconds / (_TEXT_SHARE * 1.25)
            console.print(f"the replay ran ahead of the worker (peak consumer lag: reviews "
                          f"{queued['reviews']}, news {queued['news']}), so these latencies are mostly "
                          f"time in the queue; one worker here keeps up with about --rate {keeps_up:.0f}")
    mix = Counter(r["sentiment"]["label"] for r in outputs.reviews)
    console.print(f"review sentiment: {dict(sorted(mix.items()))}")
    for review in outputs.reviews[:2]:
        console.print(f"  ({review['sentiment']['label']} {review['sentiment']['score']:.2f}) "
                      f"{escape(review['text'][:100])}")


def _changes(stream: DemoStream, outputs: DemoOutputs, console: Console) -> None:
    found = attribute(stream, outputs.alerts)
    alerts = Table("planted change", "first alert", "after", "related alerts", title="planted changes")
    for change in stream.changes:
        alert = found.caught[change.kind]
        related = sum(1 for a in found.expected if _about(change, a))
        if alert is None:
            alerts.add_row(change.description, "[red]missed[/red]", "", str(related))
            continue
        unit = {"source": "articles", "clicks": "clicks"}.get(change.kind, "reviews")
        alerts.add_row(change.description, f"[green]caught[/green]: {alert['kind']} "
                       f"{alert['subject']['type']} {escape(alert['subject']['id'])}",
                       f"{delay(stream, change, alert)} {unit}", str(related))
    console.print(alerts)
    for change in stream.changes:  # what the alerts said about why
        alert = found.caught[change.kind]
        why = (alert or {}).get("explanation") or {}
        if why.get("summary"):
            console.print(f"why {change.subject} turned negative, says its alert: {escape(why['summary'])}")
        if change.theme and alert is not None:
            words = [w for t in why.get("themes", [])[:1] for w in t["words"]]
            named = any(w.startswith(change.theme) for w in words)
            console.print(f"planted theme '{change.theme}': {'named first' if named else 'not named first'} "
                          "by the alert that caught the change")
    kinds = {"product", "source", "clicks"} - {c.kind for c in stream.changes}
    if kinds:
        console.print(f"not planted at this size (too few events for the detectors' warm-up): "
                      f"{', '.join(sorted(kinds))} change; use --events 30000")
    console.print(f"planted changes caught: {sum(a is not None for a in found.caught.values())} of "
                  f"{len(stream.changes)}")
    console.print(f"false alerts on the stable keys: {len(found.false)}")
    for a in found.false[:5]:
        subject = f"{a['subject']['type']} {escape(a['subject']['id'])}"
        console.print(f"  {a['kind']} {subject}: {escape(a['message'])}")


def _recommendations(stream: DemoStream, outputs: DemoOutputs, console: Console) -> None:
    engagements = {e.event_id for e in stream.engagements}
    lists = {k: [i["item_id"] for i in v["items"]] for k, v in outputs.recommendations.items()}
    hit_rate, _, scored = score_recommender(stream.clicks, lambda e: lists.get(e.event_id))
    baseline, _, _ = score_recommender(stream.clicks, popularity_recommender())
    console.print(f"recommendations: {len(engagements & lists.keys())} for {len(engagements)} clicks, "
                  "add-to-carts and purchases")
    if scored:
        console.print(f"shoppers' next click was in their top 10 {hit_rate:.0%} of the time "
                      f"({scored} clicks; recommending the most popular items: {baseline:.0%})")


def where_to_look(settings: LocalStackSettings, options: DemoOptions, console: Console) -> None:
    prefix = settings.topic_prefix
    console.print(f"metrics: worker http://{settings.metrics_host}:{settings.metrics_port}/metrics, "
                  f"Triton http://127.0.0.1:{settings.triton_metrics_port}/metrics")
    if LocalStack(settings).prometheus().pid() is not None:
        console.print(f"Prometheus: http://127.0.0.1:{settings.prometheus_port} (e.g. "
                      "sum(rate(streamsense_events_in_total[1m])) by (topic)); Grafana dashboards in "
                      "deploy/grafana/dashboards")
    if options.keep_running:
        console.print(f"explore: STREAMSENSE_TOPIC_PREFIX={prefix} streamsense tail alerts; "
                      "streamsense status")
