"""Windowed sentiment aggregates of one subject: tumbling event-time windows with a grace period.

A :class:`SentimentWindows` counts a subject's texts per window of each size (1 minute and 1
hour by default): how many, the label mix, the mean polarity (``p(positive) - p(negative)``)
and the themes they belong to. Time is the texts' event time; the subject's watermark is the
latest event time it has seen. A window closes once the watermark passes its end by
``grace_s``, and is then returned, once, for the ``sentiment.stats`` topic. A text older than
the watermark but in a window still open is counted and also counted as ``late``; a text for a
window already closed is not counted (``dropped_late`` says how many). A subject that goes
quiet closes its last windows with its next text. Plain data: it is stored with the subject's
monitor. Pure logic.

>>> w = SentimentWindows(sizes=(60,), grace_s=30)
>>> w.observe(0.0, "positive", 0.8, None), w.observe(50.0, "negative", -0.6, 3)
([], [])
>>> w.observe(40.0, "negative", -0.9, 3)  # late, its window still open
[]
>>> [closed] = w.observe(95.0, "neutral", 0.0, None)  # 95 >= 60 + 30: the first minute closes
>>> closed["count"], closed["labels"], closed["late"], round(closed["mean_score"], 3), closed["themes"]
(3, {'negative': 2, 'neutral': 0, 'positive': 1}, 1, -0.233, {'3': 2})
>>> w.observe(10.0, "positive", 0.5, None), w.dropped_late  # too late: its window closed
([], 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.records import SentimentStats, StatsTheme, StatsWindow, Subject

__all__ = ["LABELS", "SentimentWindows", "stats_records", "window_label"]

LABELS = ("negative", "neutral", "positive")


class SentimentWindows:
    def __init__(self, *, sizes: tuple[int, ...] = (60, 3600), grace_s: float = 60.0) -> None:
        self.sizes = sizes
        self.grace_s = grace_s
        self.watermark: float | None = None
        self.dropped_late = 0
        self._open: dict[str, dict[str, Any]] = {}  # "<size>:<start>" -> the window's counts

    @property
    def open_windows(self) -> int:
        """How many windows are open (bounded: about ``grace_s / size + 2`` per size)."""
        return len(self._open)

    def observe(self, ts: float, label: str, polarity: float, theme: int | None) -> list[dict[str, Any]]:
        """Count one text; returns the windows its time closed, oldest first."""
        late = self.watermark is not None and ts < self.watermark
        for size in self.sizes:
            start = math.floor(ts / size) * size
            if self.watermark is not None and start + size + self.grace_s <= self.watermark:
                self.dropped_late += 1
                continue
            w = self._open.setdefault(f"{size}:{start}", {
                "size": size, "start": start, "count": 0, "labels": dict.fromkeys(LABELS, 0),
                "polarity_sum": 0.0, "late": 0, "themes": {}})
            w["count"] += 1
            if label in w["labels"]:
                w["labels"][label] += 1
            w["polarity_sum"] += polarity
            w["late"] += late
            if theme is not None:
                w["themes"][str(theme)] = w["themes"].get(str(theme), 0) + 1
        self.watermark = ts if self.watermark is None else max(self.watermark, ts)
        due = [w for w in self._open.values() if w["start"] + w["size"] + self.grace_s <= self.watermark]
        closed = sorted(due, key=lambda w: (w["start"], w["size"]))
        for w in closed:
            del self._open[f"{w['size']}:{w['start']}"]
        return [{**w, "mean_score": w["polarity_sum"] / w["count"]} for w in closed]


def stats_records(subject: tuple[str, str], closed: list[dict[str, Any]], *,
                  theme_words: Callable[[int], list[str]] | None = None, top: int = 3
                  ) -> list[SentimentStats]:
    """The ``sentiment.stats`` records of a subject's closed windows (``theme_words``: the words
    of a live theme by id; recycled themes are left out)."""
    out = []
    for w in closed:
        start = datetime.fromtimestamp(w["start"], UTC)
        themes = []
        for theme, count in sorted(w["themes"].items(), key=lambda kv: -kv[1]):
            words = theme_words(int(theme)) if theme_words is not None else []
            if words:
                themes.append(StatsTheme(words=words, count=count))
            if len(themes) == top:
                break
        size = window_label(w["size"])
        out.append(SentimentStats(
            subject=Subject(type=subject[0], id=subject[1]),
            window=StatsWindow(start=start, end=start + timedelta(seconds=w["size"]), size=size),
            count=w["count"], labels=w["labels"], mean_score=max(-1.0, min(1.0, w["mean_score"])),
            late=w["late"], themes=themes))
    return out


def window_label(size: int) -> str:
    """How a window size is written in its records: ``1m``, ``1h``, else seconds (``90s``)."""
    return {60: "1m", 3600: "1h"}.get(size, f"{size}s")
