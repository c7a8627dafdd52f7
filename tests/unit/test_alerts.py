from datetime import UTC, datetime, timedelta

from streams.core.alerts import AlertBook, Shift, severity_of
from streams.records import Alert

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WEAK = Shift(0.1, 0.2, (0.12, 0.3), 40, 11.0, 10.6, "ARL0 >= 10000")
STRONG = Shift(0.1, 0.5, (0.35, 0.6), 80, 20.0, 10.6, "ARL0 >= 10000")


def shift(book: AlertBook, s: Shift, now: datetime, subject=("product", "p1")) -> Alert | None:
    return book.on_shift(kind="sentiment_shift", subject=subject, shift=s, detector="d",
                         params={"arl0": 10000}, evidence=[{"id": "r1", "text": "bad"}], now=now)


def recover(book: AlertBook, now: datetime, subject=("product", "p1")) -> Alert | None:
    return book.on_recovered(kind="sentiment_shift", subject=subject, shift=WEAK, detector="d",
                             params={}, now=now)


def test_one_change_gives_one_alert_plus_an_escalation_and_a_recovery():
    book = AlertBook(cooldown_s=600)
    first = shift(book, WEAK, T0)
    assert first is not None and first.severity == "warning" and first.status == "open"
    assert shift(book, WEAK, T0 + timedelta(seconds=5)) is None  # same severity: deduplicated
    escalated = shift(book, STRONG, T0 + timedelta(seconds=10))
    assert escalated is not None and escalated.status == "escalated"
    assert escalated.related_alert_id == first.alert_id and escalated.severity == "critical"
    assert shift(book, WEAK, T0 + timedelta(seconds=20)) is None  # lower severity: nothing
    recovered = recover(book, T0 + timedelta(seconds=30))
    assert recovered is not None and recovered.status == "recovered"
    assert recovered.related_alert_id == first.alert_id
    assert recover(book, T0 + timedelta(seconds=31)) is None


def test_cooldown_after_recovery_then_a_new_alert():
    book = AlertBook(cooldown_s=600)
    shift(book, WEAK, T0)
    recover(book, T0 + timedelta(seconds=60))
    assert shift(book, WEAK, T0 + timedelta(seconds=300)) is None
    again = shift(book, WEAK, T0 + timedelta(seconds=700))
    assert again is not None and again.status == "open"


def test_subjects_are_independent_and_ids_deterministic():
    a = shift(AlertBook(), WEAK, T0, subject=("product", "p1"))
    b = shift(AlertBook(), WEAK, T0, subject=("product", "p2"))
    a_again = shift(AlertBook(), WEAK, T0, subject=("product", "p1"))
    assert a.alert_id != b.alert_id and a.alert_id == a_again.alert_id


def test_alert_carries_what_the_contract_asks_for():
    alert = shift(AlertBook(), STRONG, T0)
    body = alert.model_dump(mode="json")
    assert body["detector"] == {"name": "d", "params": {"arl0": 10000}, "guarantee": "ARL0 >= 10000"}
    assert body["statistic"] >= body["threshold"]
    assert body["evidence"] == [{"id": "r1", "text": "bad"}]
    assert body["detected_at"] == "2026-11-22T10:00:00.000Z"
    assert "rose from 10% to 50% (95% CS 35%-60%)" in body["message"]


def test_severity_scale():
    assert severity_of(Shift(0.1, 0.15, (0.05, 0.3), 40, 11, 10, "")) == "info"
    assert severity_of(WEAK) == "warning"
    assert severity_of(STRONG) == "critical"
