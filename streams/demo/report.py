"""The demo's report: one self-contained HTML file with SVG plots (no plotting library needed).

* negative share of the predicted sentiment over time, per product and per news source, and for
  the company the planted news change is about, with the planted change and the alerts marked;
* the click-through rate and how often shoppers' next click was in their top 10, over the
  click stream, with the planted click change and the click path's drift alerts marked;
* the alerts, counts and end-to-end latency.
"""

from __future__ import annotations

import html
import math
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.online.evaluate import score_recommender
from streams.demo.data import PRODUCTS, SOUR_COMPANY, SOURCES, DemoStream

if TYPE_CHECKING:
    from streams.demo.types import Attribution, DemoOutputs

__all__ = ["svg_chart", "write_report"]

_W, _H, _L, _R, _T, _B = 440, 190, 40, 10, 26, 28


def svg_chart(title: str, xs: list[float], ys: list[float], *, x_max: float, y_label: str,
              change: float | None = None, alerts: list[tuple[float, str]] = (), y_max: float = 1.0) -> str:
    """A line chart of ``ys`` over ``xs`` with an optional planted-change line and alert markers.

    >>> svg = svg_chart("p", [0, 1, 2], [0.1, 0.2, 0.9], x_max=2, y_label="share", change=1,
    ...                 alerts=[(2, "sentiment_shift")])
    >>> svg.count("<polyline"), svg.count("<circle"), "planted change" in svg
    (1, 1, True)
    """
    def px(x: float) -> float:
        return _L + (_W - _L - _R) * (x / x_max if x_max else 0)

    def py(y: float) -> float:
        return _H - _B - (_H - _T - _B) * min(max(y / y_max, 0.0), 1.0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" '
             f'font-size="11"><text x="{_L}" y="15" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" stroke="#999"/>',
             f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" stroke="#999"/>']
    for frac in (0.0, 0.5, 1.0):
        y = py(frac * y_max)
        parts.append(f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{frac * y_max:g}</text>'
                     f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{_W - _R}" y="{_H - 8}" text-anchor="end">{html.escape(y_label)}</text>'
                 f'<text x="{_L}" y="{_H - 8}">0</text>'
                 f'<text x="{(_L + _W - _R) / 2:.0f}" y="{_H - 8}" text-anchor="middle">{x_max:,.0f}</text>')
    if change is not None:
        x = px(change)
        parts.append(f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_H - _B}" stroke="#d08000" '
                     f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{_T + 10}" fill="#d08000">'
                     'planted change</text>')
    if xs:
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#2060c0" stroke-width="1.5"/>')
    for x, label in alerts:
        parts.append(f'<circle cx="{px(x):.1f}" cy="{_T + 4}" r="5" fill="#d02020">'
                     f'<title>{html.escape(label)}</title></circle>'
                     f'<line x1="{px(x):.1f}" y1="{_T + 4}" x2="{px(x):.1f}" y2="{_H - _B}" stroke="#d02020" '
                     'stroke-width="0.8"/>')
    parts.append("</svg>")
    return "".join(parts)


def _rolling(values: list[float], window: int) -> list[float]:
    out, recent, total = [], deque(), 0.0
    for v in values:
        recent.append(v)
        total += v
        if len(recent) > window:
            total -= recent.popleft()
        out.append(total / len(recent))
    return out


def _minute(stream: DemoStream, ts: str) -> float:
    return (datetime.fromisoformat(ts) - stream.start).total_seconds() / 60


def _negative_share_charts(stream: DemoStream, records: list[dict], key: str, subjects: list[str],
                           alerts: list[dict], kind: str, title: str) -> list[str]:
    charts = []
    change = stream.change(kind)
    for subject in subjects:
        rows = sorted((_minute(stream, r["ts"]), r["sentiment"]["label"] == "negative")
                      for r in records if r[key] == subject)
        xs = [x for x, _ in rows]
        marks = [(_minute(stream, a["detected_at"]), f"{a['kind']} {a.get('status', 'open')}: {a['message']}")
                 for a in alerts if a["subject"]["type"] == kind and a["subject"]["id"] == subject]
        charts.append(svg_chart(f"{title} {subject}", xs, _rolling([float(n) for _, n in rows], 30),
                                x_max=max(xs, default=1), y_label="minutes of event time",
                                change=change.index if change and change.subject == subject else None,
                                alerts=marks))
    return charts


def _entity_chart(stream: DemoStream, news: list[dict], alerts: list[dict]) -> str:
    name = SOUR_COMPANY.casefold()
    rows = sorted((_minute(stream, r["ts"]), r["sentiment"]["label"] == "negative") for r in news
                  if any(name in e["text"].casefold() for e in r.get("entities", ())))
    xs = [x for x, _ in rows]
    marks = [(_minute(stream, a["detected_at"]), f"{a['kind']}: {a['message']}") for a in alerts
             if a["subject"]["type"] == "entity" and name in a["subject"]["id"]]
    change = stream.change("source")
    return svg_chart(f"entity {SOUR_COMPANY}: negative share of the articles naming it", xs,
                     _rolling([float(n) for _, n in rows], 30), x_max=max(xs, default=1),
                     y_label="minutes of event time", change=change.index if change else None, alerts=marks)


def _click_marks(stream: DemoStream, alerts: list[dict]) -> list[tuple[int, str]]:
    """The click path's alerts (click-through rate and model error), at their click index."""
    ts_index = sorted((e.ts, n) for n, e in enumerate(stream.clicks))
    marks = []
    for a in alerts:
        subject = a["subject"]
        if subject["type"] == "model" or subject["id"].endswith(":click_through"):
            at = datetime.fromisoformat(a["detected_at"]).timestamp()
            n = next((n for ts, n in ts_index if ts >= at), len(stream.clicks))
            marks.append((n, f"{a['kind']} {subject['id']}: {a['message']}"))
    return marks


def _clicks_charts(stream: DemoStream, outputs: DemoOutputs, alerts: list[dict]) -> list[str]:
    change = stream.change("clicks")
    at = change.index if change else None
    marks = _click_marks(stream, alerts)
    window, step = 1000, 100
    xs, rates = [], []
    for end in range(window, len(stream.clicks) + 1, step):
        actions = [e.action for e in stream.clicks[end - window:end]]
        xs.append(end)
        rates.append(actions.count("click") / max(1, actions.count("impression")))
    top = math.ceil(max(rates, default=0.1) * 12) / 10  # a tenth above the highest rate
    rate_chart = svg_chart(f"click-through rate (clicks per impression, last {window} events)", xs, rates,
                           x_max=len(stream.clicks), y_label="click events", change=at, alerts=marks,
                           y_max=max(top, 0.1))

    lists = {k: [i["item_id"] for i in v["items"]] for k, v in outputs.recommendations.items()}
    index = {e.event_id: n for n, e in enumerate(stream.clicks)}
    hits: list[tuple[int, float]] = []
    score_recommender(stream.clicks, lambda e: lists.get(e.event_id),
                      on_scored=lambda e, hit: hits.append((index[e.event_id], float(hit))))
    hit_chart = svg_chart("shoppers' next click in their top 10 (rolling 200)", [x for x, _ in hits],
                          _rolling([h for _, h in hits], 200), x_max=len(stream.clicks),
                          y_label="click events", change=at, alerts=marks)
    return [rate_chart, hit_chart]


def write_report(path: Path, stream: DemoStream, outputs: DemoOutputs, found: Attribution) -> Path:
    alerts = outputs.alerts
    sections = [
        ("Reviews: negative share per product (rolling 30 reviews)",
         _negative_share_charts(stream, outputs.reviews, "product_id", list(PRODUCTS), alerts, "product",
                                "product")),
        ("News: negative share per source (rolling 30 articles)",
         _negative_share_charts(stream, outputs.news, "source", list(SOURCES), alerts, "source", "source")),
        ("Entities", [_entity_chart(stream, outputs.news, alerts)]),
        ("Clicks", _clicks_charts(stream, outputs, alerts)),
    ]
    false_ids = {id(a) for a in found.false}
    rows = "".join(
        f"<tr><td>{html.escape(a['detected_at'])}</td><td>{html.escape(a['kind'])}</td>"
        f"<td>{html.escape(a['subject']['type'])} {html.escape(a['subject']['id'])}</td>"
        f"<td>{html.escape(a.get('status', 'open'))}</td>"
        f"<td>{'false alert' if id(a) in false_ids else 'planted change'}</td>"
        f"<td>{html.escape(a['message'])}</td></tr>" for a in sorted(alerts, key=lambda a: a["detected_at"]))
    counts = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in _counts(outputs).items())
    body = "".join(f"<h2>{html.escape(title)}</h2><div>{''.join(charts)}</div>" for title, charts in sections)
    changes = "".join(f"<li>{html.escape(c.description)}: from event {c.index} of {c.total}</li>"
                      for c in stream.changes)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>StreamSense demo {stream.run}</title>"
            "<style>body{font-family:sans-serif;margin:2em} svg{margin:4px;border:1px solid #ddd}"
            "td,th{padding:2px 8px;text-align:left;vertical-align:top} tr:nth-child(even){background:#f6f6f6}"
            "</style></head><body>"
            f"<h1>StreamSense demo, {stream.start:%Y-%m-%d %H:%M:%S} UTC</h1>"
            f"<p>Planted changes:</p><ul>{changes}</ul><p>Counts:</p><ul>{counts}</ul>{body}"
            f"<h2>Alerts ({len(alerts)})</h2><table><tr><th>detected at (event time)</th><th>kind</th>"
            f"<th>subject</th><th>status</th><th>cause</th><th>message</th></tr>{rows}</table>"
            "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _counts(outputs: DemoOutputs) -> dict[str, Any]:
    return {**{f"{topic} replayed": n for topic, n in outputs.sent.items()},
            "reviews enriched": len(outputs.reviews), "articles enriched": len(outputs.news),
            "recommendation lists": len(outputs.recommendations), "alerts": len(outputs.alerts),
            "dead-lettered": len(outputs.deadletter)}

