"""The ``coordinated_reviews`` alert: a burst of near-duplicate reviews from many users. Pure logic.

The detection is :class:`~models.sequential.coordination.CoordinationDetector`'s; this module
turns its burst into an alert through the subject's :class:`~streams.core.alerts.AlertBook`
(one alert per burst, then the subject's cooldown).
"""

from __future__ import annotations

from datetime import datetime

from models.sequential.coordination import CoordinationDetector
from streams.core.alerts import AlertBook, Shift
from streams.records import Alert

__all__ = ["burst_alert"]


def burst_alert(book: AlertBook, subject: tuple[str, str], detector: CoordinationDetector, *,
                now: datetime) -> Alert | None:
    """The alert for the burst ``detector`` just found (``detector.drift_detected``), or None
    while the subject's last one is in its cooldown."""
    subject_type, subject_id = subject
    burst = detector.burst
    users, texts, span_s = burst["users"], burst["texts"], burst["last"] - burst["first"]
    example = burst["examples"][0]["text"] if burst["examples"] else ""
    shift = Shift(baseline_rate=0.0, current_rate=float(users), interval=(float(users), float(users)),
                  events=texts, statistic=float(users), threshold=float(detector.min_users),
                  guarantee=(f"rule: >= {detector.min_users} distinct users posting texts within "
                             f"{detector.max_distance} of 64 SimHash bits of each other within "
                             f"{detector.window_s:g}s; a rule, not a false-alarm bound"),
                  measure="Users posting near-duplicate texts", unit="count", interval_label="",
                  unit_of_events="texts")
    about = "naming" if subject_type == "entity" else "of"  # an entity's span many products
    message = (f"{texts} near-duplicate reviews {about} {subject_type} {subject_id} from {users} users "
               f"within {span_s / 60:.0f} minutes, e.g. \"{example[:120]}\".")
    params = {"window_s": detector.window_s, "min_users": detector.min_users,
              "max_distance": detector.max_distance, "min_words": detector.min_words}
    alert = book.on_shift(kind="coordinated_reviews", subject=subject, shift=shift,
                          detector="CoordinationDetector", params=params,
                          evidence=list(burst["examples"]), now=now, message=message)
    book.close_quietly(kind="coordinated_reviews", subject=subject, now=now)  # a one-off: no "recovered"
    return alert
