"""Prometheus metrics of one worker: its own registry, served on the worker's metrics port.

Labels are bounded: topics, error kinds and outcome names, never product or user ids.
"""

from __future__ import annotations

import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["ALERT_KINDS", "ERROR_KINDS", "Metrics"]

# Every kind of streamsense_errors_total, created at zero so dashboards and alert rules see a
# series (a rate of 0) before the first error rather than no data.
ERROR_KINDS = ("batch_failed", "detector_failed", "bad_entity_mention", "stalled_partition", "lag_probe",
               "checkpoint_unreadable", "triton_timeout", "triton_unavailable", "triton_overloaded",
               "triton_error", "triton_route")
_TOPICS = ("reviews", "clicks", "news")
ALERT_KINDS = ("sentiment_shift", "volume_surge", "drift")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._last_beat: float | None = None
        self._started = time.monotonic()
        self._pipeline(self.registry)
        self._detectors(self.registry)
        self._click_models(self.registry)
        self._shadow(self.registry)
        self._create_zero_series()

    def _pipeline(self, r: CollectorRegistry) -> None:
        self.events_in = Counter("streamsense_events_in_total", "Input records consumed", ["topic"],
                                 registry=r)
        self.events_out = Counter("streamsense_events_out_total", "Records produced", ["topic"], registry=r)
        self.deadlettered = Counter("streamsense_deadletter_total", "Input records sent to the dead-letter "
                                    "topic", ["source_topic"], registry=r)
        self.batch_size = Histogram("streamsense_batch_size", "Records per agent batch", ["topic"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.triton_request_seconds = Histogram(
            "streamsense_triton_request_seconds", "Latency of one Triton request",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.triton_batch_size = Histogram("streamsense_triton_batch_size", "Texts per Triton request",
                                           buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.triton_in_flight = Gauge("streamsense_triton_in_flight", "Triton requests in flight",
                                      registry=r)
        self.end_to_end_seconds = Histogram(
            "streamsense_end_to_end_seconds", "Event timestamp (or Kafka timestamp) to output produced",
            ["topic"], buckets=_E2E_BUCKETS, registry=r)
        self.errors = Counter("streamsense_errors_total", "Errors by kind", ["kind"], registry=r)
        self.consumer_lag = Gauge("streamsense_consumer_lag", "Records behind the end of the topic",
                                  ["topic"], registry=r)

        self.sentiment = Counter("streamsense_sentiment_total", "Enriched records by predicted sentiment",
                                 ["topic", "label"], registry=r)
        self.event_time_replaced = Counter(
            "streamsense_event_time_replaced_total", "Inputs whose event time was outside the sanity "
            "window around their Kafka record time (or whose record time was untrusted)", ["topic", "flag"],
            registry=r)
        self.coordinated = Counter(
            "streamsense_coordinated_texts_total", "Reviews flagged as part of a burst of near-duplicate "
            "reviews from many users (review bombing)", ["topic"], registry=r)
        self.state_rejected = Counter(
            "streamsense_state_rejected_total", "State values read back from a table that failed "
            "authentication or a size limit, discarded (the key starts fresh)", ["table"], registry=r)
        self.state_expired = Counter(
            "streamsense_state_expired_total", "Keys deleted from a table after going idle for their "
            "time to live (STREAMSENSE_USER_TTL_S, STREAMSENSE_SUBJECT_TTL_S)", ["table"], registry=r)
        self.heartbeat = Gauge("streamsense_event_loop_heartbeat_timestamp_seconds", "Last time the "
                               "worker's event loop ran its heartbeat (unix seconds)", registry=r)

    def _detectors(self, r: CollectorRegistry) -> None:
        self.alerts = Counter("streamsense_alerts_total", "Alerts emitted", ["kind", "severity", "status"],
                              registry=r)
        self.subject_negative_share = Gauge(
            "streamsense_subject_negative_share", "Negative share of the last closed sentiment.stats window "
            "(the shortest size) of the busiest subjects: at most 20 per worker", ["type", "subject"],
            registry=r)
        self.monitored_subjects = Gauge("streamsense_monitored_subjects",
                                        "Subjects with detector state on this worker", ["type"], registry=r)
        self.detector_statistic_ratio = Histogram(
            "streamsense_detector_statistic_ratio", "Detector statistic / threshold at each alert",
            ["kind"], buckets=(0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10), registry=r)

    def _click_models(self, r: CollectorRegistry) -> None:
        self.click_through_log_loss = Gauge(
            "streamsense_click_through_log_loss", "Click-through model log loss on its last 5000 impressions "
            "(prequential: predicted before the label was known)", ["partition"], registry=r)
        self.click_through_auc = Gauge("streamsense_click_through_auc", "Click-through model ROC AUC on its "
                                       "last 5000 impressions (prequential)", ["partition"], registry=r)
        self.recommendation_hit_rate = Gauge(
            "streamsense_recommendation_hit_rate", "Share of the last 5000 clicks that were in the user's "
            "previous top-10 recommendation (hit@10)", ["partition"], registry=r)
        self.recommendation_mrr = Gauge("streamsense_recommendation_mrr", "Mean reciprocal rank of the last "
                                        "5000 clicks in the user's previous top-10 (MRR@10)", ["partition"],
                                        registry=r)
        self.recommendation_evaluations = Counter(
            "streamsense_recommendation_evaluations_total", "Clicks scored against the user's previous "
            "recommendation", registry=r)
        self.recommendation_hits = Counter("streamsense_recommendation_hits_total", "Clicks on an item of "
                                           "the user's previous top-10 recommendation", registry=r)
        self.user_segment_events = Counter("streamsense_user_segment_events_total", "Engagements by the "
                                           "online segment of the user", ["segment"], registry=r)
        self.item_signals = Gauge("streamsense_item_signals", "Items with text signals (review sentiment, "
                                  "article entities) that this worker's click models can read", registry=r)
        self.model_checkpoints = Counter("streamsense_model_checkpoints_total", "Click model checkpoints "
                                         "written", registry=r)
        self.model_checkpoint_bytes = Gauge("streamsense_model_checkpoint_bytes", "Size of the last click "
                                            "model checkpoint (compressed)", registry=r)
        self.sentiment_sources = Counter(
            "streamsense_sentiment_source_total", "Enriched records by what labelled their sentiment "
            "(base: the served model; adapted: the adapter learned from ratings)", ["topic", "source"],
            registry=r)
        self.rated_accuracy = Gauge(
            "streamsense_sentiment_rated_accuracy", "Polar accuracy on the last rated reviews "
            "(prequential: each scored before it was learned from), by labeller", ["labeller"], registry=r)
        self.adapter_serving = Gauge("streamsense_sentiment_adapter_serving", "1 while the adapted label "
                                     "is served (it beats the base model with confidence), else 0",
                                     registry=r)
        self.adapter_learned = Gauge("streamsense_sentiment_adapter_learned", "Rated reviews the "
                                     "sentiment adapter has learned from (since the served model "
                                     "version last changed)", registry=r)
        self.adapter_restarts = Counter("streamsense_sentiment_adapter_restarts_total", "Fresh adapters "
                                        "started because the served model version changed", registry=r)
        self.adapter_categories = Gauge("streamsense_sentiment_adapter_categories", "Categories with "
                                        "an adapter of their own: learned, and served (beating what "
                                        "would be served without it, with confidence)", ["state"],
                                        registry=r)
        self.feedback_rows = Counter("streamsense_sentiment_feedback_total", "Rated reviews sent to the "
                                     "sentiment adapter", registry=r)
        self.model_checkpoint_seconds = Histogram(
            "streamsense_model_checkpoint_seconds", "Time to serialise and write one click model checkpoint",
            buckets=_LATENCY_BUCKETS, registry=r)

    def _shadow(self, r: CollectorRegistry) -> None:
        # Labelled by version names: two at a time while a shadow runs, so the series stay few.
        versions = ["served", "shadow"]
        self.shadow_texts = Counter("streamsense_shadow_texts_total", "Texts answered by both the served "
                                    "version and the shadow candidate", versions, registry=r)
        self.shadow_agreed = Counter("streamsense_shadow_agreed_total", "Shadowed texts on which the two "
                                     "versions agree (output: sentiment label, or entity spans)",
                                     [*versions, "output"], registry=r)
        self.shadow_rated = Counter("streamsense_shadow_rated_total", "Shadowed reviews with a polar rating "
                                    "(1-2 or 4-5 stars by default)", versions, registry=r)
        self.shadow_rated_right = Counter(
            "streamsense_shadow_rated_right_total", "Shadowed polar rated reviews whose polar call "
            "matches the rating, by labeller (served or shadow version)", [*versions, "labeller"], registry=r)
        self.shadow_skipped = Counter("streamsense_shadow_skipped_total", "Sampled texts not shadowed "
                                      "because the previous comparison was still running", registry=r)
        self.shadow_errors = Counter("streamsense_shadow_errors_total", "Sampled texts the shadow version "
                                     "failed on or did not answer in time", registry=r)

    def _create_zero_series(self) -> None:
        for kind in ERROR_KINDS:
            self.errors.labels(kind=kind)
        for topic in _TOPICS:
            self.events_in.labels(topic=topic)
            self.deadlettered.labels(source_topic=topic)
        for topic in ("reviews", "news"):
            for label in ("negative", "neutral", "positive"):
                self.sentiment.labels(topic=topic, label=label)
            for source in ("base", "adapted"):
                self.sentiment_sources.labels(topic=topic, source=source)
        # Created at zero so the first alert is an increase (a series born at 1 is not).
        for kind in ALERT_KINDS:
            self.detector_statistic_ratio.labels(kind=kind)
            for severity in ("info", "warning", "critical"):
                for status in ("open", "escalated", "recovered"):
                    self.alerts.labels(kind=kind, severity=severity, status=status)

    def beat(self) -> None:
        """The worker's event loop is alive (called from a timer on that loop)."""
        self._last_beat = time.monotonic()
        self.heartbeat.set(time.time())

    def health(self, *, timeout_s: float) -> tuple[bool, str]:
        """(alive, reason): alive until the heartbeat is older than ``timeout_s``; before the
        first beat (the worker starting) it counts from when the server started."""
        age = time.monotonic() - (self._last_beat or self._started)
        if age > timeout_s:
            return False, (f"event loop heartbeat {age:.0f} s old (limit {timeout_s:g} s): "
                           "the worker is stuck\n")
        return True, f"ok: event loop heartbeat {age:.1f} s old\n"

    def serve(self, *, host: str, port: int, heartbeat_timeout_s: float = 30.0) -> None:
        """``/metrics`` (Prometheus text) and ``/healthz`` (liveness: 200, or 503 once the
        event loop stopped beating) on ``host:port``, from a thread of their own."""
        metrics_app = make_wsgi_app(self.registry)
        self._started = time.monotonic()

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/healthz":
                alive, text = self.health(timeout_s=heartbeat_timeout_s)
                start_response("200 OK" if alive else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [text.encode()]
            return metrics_app(environ, start_response)

        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # every scrape would be logged
        pass
