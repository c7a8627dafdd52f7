"""Detectors per subject and for the stream as a whole, turned into alerts. Pure logic.

A :class:`SubjectMonitor` holds everything one subject (a product, a news source, an entity)
needs: its :class:`~models.sequential.SentimentShiftDetector`, for entities a
:class:`~models.sequential.MentionSurgeDetector`, the open alert (an
:class:`~streams.core.alerts.AlertBook`) and a few recent negative texts as evidence. Its whole
state is a couple of kilobytes of sealed, compressed JSON (``dumps``/``loads``), which is what the worker
stores per key in a changelog-backed Faust table, so a restart or rebalance resumes every
detector.

A :class:`StreamMonitor` watches one input topic as a whole for input drift (text length,
non-ASCII share: a language-mix signal) and prediction drift (share of each sentiment label)
with ADWIN, one alert per drift and channel (then a cooldown).

Time is event time (the record's ``ts``), so replays and reprocessing give the same alerts and
the same alert ids.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 11, 22, tzinfo=UTC)
>>> monitor = SubjectMonitor("product", "p42", MonitorConfig(warmup=20, arl0=1000))
>>> alerts = []
>>> for i in range(200):
...     negative = (i % 10 == 0) if i < 100 else (i % 10 < 6)
...     alerts += monitor.observe(Observation(f"r{i}", "awful" if negative else "fine",
...                                           "negative" if negative else "positive",
...                                           0.9 if negative else 0.1, t0 + timedelta(minutes=i)))
>>> [(a.kind, a.status, a.subject.id) for a in alerts]
[('sentiment_shift', 'open', 'p42')]
>>> 100 < int(alerts[0].evidence[0]["id"][1:]) < 130, len(alerts[0].evidence)
(True, 3)
>>> from streams.core.state import StateSeal
>>> seal = StateSeal(b"0123456789abcdef")
>>> SubjectMonitor.loads(monitor.dumps(seal, context="p42"), seal, context="p42").shift.state
'shifted'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from models.online import TextBackground, ThemeTracker
from models.sequential import MentionSurgeDetector, SentimentShiftDetector, StreamDriftMonitor
from models.sequential.coordination import CoordinationDetector
from models.sequential.cusum import BernoulliCUSUM, PoissonCUSUM
from streams.core import plainstate
from streams.core.alerts import STATE_CLASSES as ALERT_STATE_CLASSES
from streams.core.alerts import AlertBook, Shift
from streams.core.bursts import burst_alert
from streams.core.explain import emerging_alerts, explain_shift
from streams.core.state import StateSeal, compress, decompress
from streams.core.windows import SentimentWindows
from streams.errors import ForgedState
from streams.records import Alert

__all__ = ["EVIDENCE_CHARS", "MonitorConfig", "Observation", "StreamMonitor", "SubjectMonitor"]

log = logging.getLogger(__name__)

# 2: plain JSON (streams.core.plainstate); 1 was a pickle, discarded when read.
_STATE_VERSION = 2
EVIDENCE_CHARS = 280
_EVIDENCE_KEYS = ("id", "text", "sentiment", "score")  # an alert's evidence: not the theme bookkeeping


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    arl0: float = 10_000
    warmup: int = 50
    cooldown_s: float = 3600.0
    surge_bucket_s: float = 60.0
    surge_warmup: int = 30
    surge_recovery_buckets: int = 10
    evidence: int = 3
    drift_delta: float = 1e-5
    themes: bool = True  # track each subject's themes (when texts come with embeddings)
    # Review bombing (streams.core.bursts): this many users posting near-duplicate reviews within the
    # window is a burst (0: not looked for); discount_coordinated keeps them out of the sentiment.
    coordinated_min_users: int = 10
    coordinated_window_s: float = 3600.0
    discount_coordinated: bool = True


@dataclass(frozen=True, slots=True)
class Observation:
    """One analysed text as a detector sees it."""

    event_id: str
    text: str
    label: str
    negative_prob: float
    ts: datetime
    # Which labeller produced ``label``: it counts the sentiment adapter's switches (0: the model,
    # and then each time the adapter takes over or hands back). Labels across a switch are not
    # comparable, so a monitor that sees a newer labeller starts its baseline afresh.
    epoch: int = 0
    # The text's sentence embedding, when the model served one: the subject's themes learn from it.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    coordinated: bool = False  # part of a burst of near-duplicates from many users (SubjectMonitor.screen)

    @property
    def negative(self) -> bool:
        return self.label == "negative"


@dataclass
class SubjectMonitor:
    subject_type: str
    subject_id: str
    config: MonitorConfig
    shift: SentimentShiftDetector = field(init=False)
    surge: MentionSurgeDetector | None = field(init=False, default=None)
    book: AlertBook = field(init=False)
    # The last few negative texts (id, text, sentiment, score): alerts quote the strongest.
    negatives: list[dict[str, Any]] = field(init=False, default_factory=list)
    with_surge: bool = False
    labeller_epoch: int = 0  # the newest labeller seen (Observation.epoch); state before it has 0
    # What the subject's texts are about (models.online.themes); None until a text with an
    # embedding arrives (state stored before themes existed reads back as None too).
    themes: ThemeTracker | None = field(init=False, default=None)
    coordination: CoordinationDetector | None = field(init=False, default=None)  # reviews: screen()
    windows: SentimentWindows | None = field(init=False, default=None)  # sentiment.stats (streams.core.stats)

    def __post_init__(self) -> None:
        c = self.config
        self.shift = SentimentShiftDetector(arl0=c.arl0, warmup=c.warmup)
        if self.with_surge:
            self.surge = MentionSurgeDetector(bucket_s=c.surge_bucket_s, arl0=c.arl0, warmup=c.surge_warmup)
        self.book = AlertBook(cooldown_s=c.cooldown_s)

    @property
    def subject(self) -> tuple[str, str]:
        return self.subject_type, self.subject_id

    def observe(self, obs: Observation, *, background: TextBackground | None = None) -> list[Alert]:
        """Feed one analysed text; returns the alerts it causes (usually none). ``background``:
        every subject's words, which a theme's words are weighed against."""
        alerts: list[Alert] = []
        if obs.epoch > self.labeller_epoch:
            self._new_labeller(obs.epoch)
        if obs.coordinated and self.config.discount_coordinated:
            return alerts  # a campaign's texts say nothing about what customers think
        theme: dict[str, Any] = {}
        if obs.embedding is not None and self.config.themes:
            if self.themes is None:
                self.themes = ThemeTracker(arl0=self.config.arl0)
            theme_id, fit = self.themes.learn_one(obs.embedding, obs.text, label=obs.label,
                                                  background=background)
            theme = {"theme": theme_id, "fit": fit}
        if obs.negative:
            self.negatives = [*self.negatives[-(4 * self.config.evidence - 1):], {
                "id": obs.event_id, "text": obs.text[:EVIDENCE_CHARS], "sentiment": obs.label,
                "score": round(obs.negative_prob, 4), **theme}]
        alerts += emerging_alerts(self.book, self.subject, self.themes, self.negatives, obs.ts, background)
        if self.surge is not None:
            self.surge.update(obs.ts.timestamp())
            alerts += self._surge_alerts(obs.ts)
        self.shift.update(obs.negative)
        # While shifted, re-check severity every 25 outcomes: a worsening change escalates.
        recheck = self.shift.state == "shifted" and self.shift.shifted_events % 25 == 0
        if self.shift.drift_detected or recheck:
            shift = self._shift()
            explanation = explain_shift(self.themes, self.negatives, events=max(shift.events, 30),
                                        background=background)
            alert = self.book.on_shift(kind="sentiment_shift", subject=self.subject, shift=shift,
                                       detector="SentimentShiftDetector", params=self._shift_params(),
                                       evidence=self._evidence(), now=obs.ts, explanation=explanation)
            alerts += [alert] if alert else []
        elif self.shift.recovered:
            alert = self.book.on_recovered(kind="sentiment_shift", subject=self.subject, shift=self._shift(),
                                           detector="SentimentShiftDetector", params=self._shift_params(),
                                           now=obs.ts)
            alerts += [alert] if alert else []
        return alerts

    def screen(self, event_id: str, text: str, *, user: str | None, ts: datetime) -> tuple[bool, list[Alert]]:
        """Whether a review belongs to a burst of near-duplicate reviews from many users (review
        bombing), and the ``coordinated_reviews`` alert a new burst raises. Runs before the
        review's enriched record is sent, so that the record can say so."""
        c = self.config
        if c.coordinated_min_users <= 0:
            return False, []
        if self.coordination is None:
            self.coordination = CoordinationDetector(window_s=c.coordinated_window_s,
                                                     min_users=c.coordinated_min_users)
        detector = self.coordination
        flagged = detector.update(event_id, text, user=user, ts=ts.timestamp())
        if not detector.drift_detected:
            return flagged, []
        alert = burst_alert(self.book, self.subject, detector, now=ts)
        return flagged, [alert] if alert else []

    def _new_labeller(self, epoch: int) -> None:
        """The adapter took over or handed back: a shift in labels is not a shift in texts."""
        self.shift = SentimentShiftDetector(arl0=self.config.arl0, warmup=self.config.warmup)
        self.negatives = []
        self.themes = None  # its memory of negative texts is by label too
        self.labeller_epoch = epoch

    def _surge_alerts(self, now: datetime) -> list[Alert]:
        surge = self.surge
        assert surge is not None
        if surge.drift_detected:
            alert = self.book.on_shift(kind="volume_surge", subject=self.subject, shift=self._surge_shift(),
                                       detector="MentionSurgeDetector", params=self._surge_params(),
                                       evidence=self._evidence(), now=now)
            return [alert] if alert else []
        if surge.quiet_buckets >= self.config.surge_recovery_buckets:
            alert = self.book.on_recovered(kind="volume_surge", subject=self.subject,
                                           shift=self._surge_shift(), detector="MentionSurgeDetector",
                                           params=self._surge_params(), now=now)
            return [alert] if alert else []
        return []

    def _shift(self) -> Shift:
        s = self.shift.summary()
        return Shift(baseline_rate=s.baseline_rate, current_rate=s.current_rate, interval=s.current_interval,
                     events=s.current_events, statistic=s.statistic, threshold=s.threshold,
                     guarantee=s.guarantee)

    def _surge_shift(self) -> Shift:
        surge = self.surge
        assert surge is not None
        rate, lo, hi = surge.current_interval()
        return Shift(baseline_rate=surge.baseline_rate or 0.0, current_rate=rate, interval=(lo, hi),
                     events=len(surge.recent_counts), statistic=surge.alarm_statistic,
                     threshold=surge.threshold, guarantee=surge.guarantee,
                     measure=f"Mentions per {surge.bucket_s:g}s", unit="count", interval_label="95% CI",
                     unit_of_events="buckets")

    def _shift_params(self) -> dict[str, Any]:
        d = self.shift
        return {"arl0": d.arl0, "warmup": d.warmup, "baseline_level": d.baseline_level,
                "prior_rate": d.prior_rate, "ratios": list(d.ratios), "alpha": d.alpha}

    def _surge_params(self) -> dict[str, Any]:
        d = self.surge
        assert d is not None
        return {"arl0": d.arl0, "bucket_s": d.bucket_s, "warmup": d.warmup, "ratios": list(d.ratios)}

    def _evidence(self) -> list[dict[str, Any]]:
        # The strongest of the recent negatives, most recent first among equals.
        ranked = sorted(reversed(self.negatives), key=lambda e: -e["score"])
        return [{k: e[k] for k in _EVIDENCE_KEYS} for e in ranked[: self.config.evidence]]

    def dumps(self, seal: StateSeal, *, context: str) -> bytes:
        """The monitor as sealed JSON for a table (``context``: the table and key it goes under)."""
        data = plainstate.dumps({"version": _STATE_VERSION, "monitor": self}, _STATE_CLASSES)
        return seal.seal(compress(data), context=context)

    @classmethod
    def loads(cls, data: bytes | None, seal: StateSeal, *, context: str) -> SubjectMonitor | None:
        """The monitor stored in ``data``; None (start afresh) if absent, unreadable or from
        another version. Raises :class:`~streams.errors.ForgedState` when ``data`` fails
        authentication. Reading builds only the monitor's own classes and sets their attributes
        (:mod:`streams.core.plainstate`); nothing in it is ever run."""
        if not data:
            return None
        payload = seal.open(data, context=context)  # ForgedState: not ours, or not for this key
        try:
            body = plainstate.loads(decompress(payload, max_bytes=seal.max_bytes), _STATE_CLASSES)
        except (ForgedState, plainstate.PlainStateError) as exc:
            # Pickled state of versions before 2 lands here too: discarded once, never unpickled.
            log.warning("discarding unreadable detector state for %s (%d bytes): %s", context, len(data), exc)
            return None
        version = body.get("version") if isinstance(body, dict) else None
        monitor = body.get("monitor") if isinstance(body, dict) else None
        if version != _STATE_VERSION or not isinstance(monitor, cls):
            log.warning("discarding detector state of version %r for %s (this worker uses %d)", version,
                        context, _STATE_VERSION)
            return None
        return monitor


# What a stored SubjectMonitor may be made of (by name); plainstate refuses any other class.
_STATE_CLASSES = {"SubjectMonitor": SubjectMonitor, "MonitorConfig": MonitorConfig,
                  "SentimentShiftDetector": SentimentShiftDetector, "BernoulliCUSUM": BernoulliCUSUM,
                  "MentionSurgeDetector": MentionSurgeDetector, "PoissonCUSUM": PoissonCUSUM,
                  "ThemeTracker": ThemeTracker, "CoordinationDetector": CoordinationDetector,
                  "SentimentWindows": SentimentWindows, **ALERT_STATE_CLASSES}


class StreamMonitor:
    """Drift of named channels of one stream with ADWIN: input and prediction drift of an input
    topic (``subject_type="stream"``), or the per-example error of an online model
    (``subject_type="model"``, with ``increases_only``: a model's error falling as it learns is
    not news). Kept per worker, in memory; the click path checkpoints its two as plain data
    (:meth:`to_state`)."""

    def __init__(self, topic: str, config: MonitorConfig, *, subject_type: str = "stream",
                 increases_only: bool = False) -> None:
        self.topic = topic
        self.subject_type = subject_type
        self.increases_only = increases_only
        self.drift = StreamDriftMonitor(delta=config.drift_delta)
        self.book = AlertBook(cooldown_s=config.cooldown_s)
        self.labeller_epoch = 0

    def to_state(self) -> dict[str, Any]:
        """Plain data (JSON-able): the ADWIN windows (:meth:`StreamDriftMonitor.to_state`) and
        the alert book (:mod:`streams.core.plainstate`, as a string)."""
        return {"topic": self.topic, "subject_type": self.subject_type, "increases_only": self.increases_only,
                "labeller_epoch": self.labeller_epoch, "drift": self.drift.to_state(),
                "book": plainstate.dumps(self.book, ALERT_STATE_CLASSES).decode("utf-8")}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: MonitorConfig) -> StreamMonitor:
        """The monitor :meth:`to_state` described; ValueError when it is not such a description."""
        if not isinstance(state.get("topic"), str) or state.get("subject_type") not in ("stream", "model"):
            raise ValueError("stream monitor state: bad topic or subject type")
        monitor = cls(state["topic"], config, subject_type=state["subject_type"],
                      increases_only=bool(state["increases_only"]))
        monitor.drift = StreamDriftMonitor.from_state(state["drift"])
        book = plainstate.loads(str(state["book"]).encode("utf-8"), ALERT_STATE_CLASSES)
        if not isinstance(book, AlertBook):
            raise ValueError("stream monitor state: the alert book is not an AlertBook")
        monitor.book, monitor.labeller_epoch = book, int(state["labeller_epoch"])
        return monitor

    def observe(self, features: dict[str, float], label: str, now: datetime, *,
                epoch: int = 0) -> list[Alert]:
        if epoch > self.labeller_epoch:  # a new labeller (see Observation.epoch): label channels restart
            for name in ("negative", "neutral", "positive"):
                self.drift.forget(f"label_{name}")
            self.labeller_epoch = epoch
        return self.observe_channels({**features, **{f"label_{name}": float(label == name)
                                                     for name in ("negative", "neutral", "positive")}}, now)

    def observe_channels(self, channels: dict[str, float], now: datetime) -> list[Alert]:
        alerts = []
        for channel, value in channels.items():
            event = self.drift.update(channel, value)
            if event is None or (self.increases_only and event.after <= event.before):
                continue
            subject = (self.subject_type, f"{self.topic}:{channel}")
            shift = Shift(baseline_rate=event.before, current_rate=event.after,
                          interval=(event.after, event.after), events=event.window,
                          statistic=event.statistic, threshold=event.threshold, guarantee=event.guarantee,
                          measure=f"Mean {channel}", unit="share" if channel.startswith("label_") else "mean",
                          interval_label="")
            alert = self.book.on_shift(kind="drift", subject=subject, shift=shift, detector=event.detector,
                                       params={"delta": self.drift.delta, "channel": channel,
                                               "report": "statistic = |mean of the last "
                                               f"{self.drift.recent} - mean of the points ADWIN dropped|; "
                                               "threshold = ADWIN's bound for that split (ADWIN "
                                               "itself cut on the split it found first)"},
                                       evidence=[], now=now)
            # A drift is a one-off change of level: no "recovered", just the cooldown.
            self.book.close_quietly(kind="drift", subject=subject, now=now)
            if alert is not None:
                alerts.append(alert)
        return alerts
