"""Grafana dashboards as code: ``python deploy/grafana/dashboards.py`` writes
``deploy/grafana/dashboards/*.json`` (Grafana >= 10, Prometheus datasource chosen on import).

Every panel's PromQL is run against a real Prometheus scraping a real worker and Triton in
``tests/integration/test_dashboards.py``; ``tests/unit/test_deploy.py`` checks the JSON files
are what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


SHADOW_PANEL = "Shadow version against the served one (sampled texts)"
# Panels that show data only in some deployments' states: (title, when).
CONDITIONAL = {SHADOW_PANEL: "a shadow version runs (streamsense model shadow)"}


def panel(title: str, targets: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
          description: str = "") -> dict:
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
                        for i, (expr, legend) in enumerate(targets)]}


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))", f"p{int(q * 100)}{suffix}")
            for q in (0.5, 0.95, 0.99)]


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    for n, p in enumerate(panels):
        p["id"] = n + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)}
    return {
        "uid": uid, "title": title, "description": description, "tags": ["streamsense"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "timezone": "utc",
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


def dashboards() -> dict[str, dict]:
    pipeline = dashboard("streamsense-pipeline", "StreamSense / Pipeline",
                         "Throughput, lag, end-to-end latency and dead letters of every worker.", [
        panel("Records in, per topic", [(f"sum by (topic) (rate(streamsense_events_in_total[{RATE}]))",
                                         "{{topic}}")], unit="reqps"),
        panel("Records out, per topic", [(f"sum by (topic) (rate(streamsense_events_out_total[{RATE}]))",
                                          "{{topic}}")], unit="reqps"),
        panel("Consumer lag", [("max by (topic) (streamsense_consumer_lag)", "{{topic}}")],
              description="Records behind the end of each input topic for the workers' consumer group "
                          "(every worker reports the whole group's lag, hence max, not sum)."),
        panel("End-to-end latency", quantiles("streamsense_end_to_end_seconds", "topic"), unit="s",
              description="Event time (or Kafka timestamp) to output produced."),
        panel("Dead-lettered records", [(f"sum by (source_topic) (rate(streamsense_deadletter_total[{RATE}]))",
                                         "{{source_topic}}")], unit="reqps"),
        panel("Errors by kind", [(f"sum by (kind) (rate(streamsense_errors_total[{RATE}]))", "{{kind}}")],
              unit="reqps"),
        panel("Agent batch size (median)", [(
            f"histogram_quantile(0.5, sum by (le, topic) (rate(streamsense_batch_size_bucket[{RATE}])))",
            "{{topic}}")]),
        panel("Workers up", [('sum(up{job="streamsense-workers"})', "workers")], kind="stat"),
    ])
    inference = dashboard("streamsense-inference", "StreamSense / Inference",
                          "Triton as the workers see it and as Triton reports it (its :8002 metrics).", [
        panel("Triton request latency (workers)", quantiles("streamsense_triton_request_seconds"), unit="s"),
        panel("Texts per request (workers)", [(
            f"sum(rate(streamsense_triton_batch_size_sum[{RATE}])) "
            f"/ clamp_min(sum(rate(streamsense_triton_batch_size_count[{RATE}])), 1e-9)", "mean")]),
        panel("Requests in flight (workers)", [("sum(streamsense_triton_in_flight)", "in flight")]),
        panel("Requests (Triton)", [
            (f"sum by (model) (rate(nv_inference_request_success[{RATE}]))", "ok {{model}}"),
            (f"sum by (model) (rate(nv_inference_request_failure[{RATE}]))", "failed {{model}}")], unit="reqps"),
        panel("Queue time per request (Triton)", [(
            f"sum by (model) (rate(nv_inference_queue_duration_us[{RATE}])) / 1e6 "
            f"/ clamp_min(sum by (model) (rate(nv_inference_request_success[{RATE}])), 1e-9)", "{{model}}")],
            unit="s"),
        panel("Compute time per request (Triton)", [(
            f"sum by (model) (rate(nv_inference_compute_infer_duration_us[{RATE}])) / 1e6 "
            f"/ clamp_min(sum by (model) (rate(nv_inference_request_success[{RATE}])), 1e-9)", "{{model}}")],
            unit="s"),
        panel("Server-side batch size (Triton)", [(
            f"sum by (model) (rate(nv_inference_count[{RATE}])) "
            f"/ clamp_min(sum by (model) (rate(nv_inference_exec_count[{RATE}])), 1e-9)", "{{model}}")]),
        panel("Triton up", [('sum(up{job="triton"})', "servers")], kind="stat"),
    ])
    models = dashboard("streamsense-models", "StreamSense / Models",
                       "What the models predict and how the online models score, prequentially.", [
        panel("Sentiment mix", [(f"sum by (topic, label) (rate(streamsense_sentiment_total[{RATE}]))",
                                 "{{topic}} {{label}}")], unit="reqps"),
        panel("Sentiment accuracy on rated reviews (last 200, prequential)", [
            ("max by (labeller) (streamsense_sentiment_rated_accuracy)", "{{labeller}}"),
            ("max(streamsense_sentiment_adapter_serving)", "adapter served (1) or base (0)")],
            unit="percentunit",
            description="Polar accuracy of the model's label, the adapter's and the served one on the last 200 "
                        "rated reviews, each scored before it was learned from. The adapter is served only "
                        "while a sequential test says it beats the model (false take-overs at most "
                        "STREAMSENSE_SENTIMENT_ADAPTER_ALPHA)."),
        panel(SHADOW_PANEL, [
            (f"sum by (served, shadow) (rate(streamsense_shadow_agreed_total{{output=\"sentiment\"}}[{RATE}])) "
             f"/ clamp_min(sum by (served, shadow) (rate(streamsense_shadow_texts_total[{RATE}])), 1e-9)",
             "same sentiment: {{shadow}} vs {{served}}"),
            (f"sum by (served, shadow, labeller) (rate(streamsense_shadow_rated_right_total[{RATE}])) "
             f"/ ignoring(labeller) group_left clamp_min(sum by (served, shadow) "
             f"(rate(streamsense_shadow_rated_total[{RATE}])), 1e-9)", "polar accuracy, {{labeller}}")],
            unit="percentunit",
            description="While `streamsense model shadow VERSION` runs: how often the candidate agrees with "
                        "the served version on the sampled texts, and both versions' polar accuracy on the "
                        "sampled rated reviews (streamsense_shadow_skipped_total and _errors_total count the sampled texts not "
                        "compared). Empty when no shadow runs."),
        panel("Click-through log loss (last 5000 impressions)",
              [("avg by (partition) (streamsense_click_through_log_loss)", "partition {{partition}}")]),
        panel("Click-through AUC (last 5000 impressions)",
              [("avg by (partition) (streamsense_click_through_auc)", "partition {{partition}}")],
              unit="percentunit"),
        panel("Recommendation hit@10", [
            ("avg by (partition) (streamsense_recommendation_hit_rate)", "last 5000, partition {{partition}}"),
            (f"sum(rate(streamsense_recommendation_hits_total[{RATE}])) "
             f"/ clamp_min(sum(rate(streamsense_recommendation_evaluations_total[{RATE}])), 1e-9)", "live")],
            unit="percentunit"),
        panel("Recommendation MRR@10", [("avg by (partition) (streamsense_recommendation_mrr)",
                                         "partition {{partition}}")]),
        panel("Items with text signals (cross-stream features)",
              [("max(streamsense_item_signals)", "items")],
              description="Products and articles whose review sentiment or entities the click models read."),
        panel("Engagements by user segment",
              [(f"sum by (segment) (rate(streamsense_user_segment_events_total[{RATE}]))", "segment {{segment}}")],
              unit="reqps"),
        panel("Click model checkpoints", [
            ("max(streamsense_model_checkpoint_bytes)", "last size"),
            (f"sum(rate(streamsense_model_checkpoints_total[{RATE}])) * 60", "per minute")]),
        panel("Checkpoint time (p99)", [(
            f"histogram_quantile(0.99, sum by (le) (rate(streamsense_model_checkpoint_seconds_bucket[{RATE}])))",
            "p99")], unit="s"),
    ])
    alerts = dashboard("streamsense-alerts", "StreamSense / Alerts",
                       "Alerts emitted to the alerts topic and the detectors behind them.", [
        panel("Alerts by kind and severity (last hour)",
              [("sum by (kind, severity) (increase(streamsense_alerts_total[1h]))", "{{kind}} {{severity}}")]),
        panel("Alerts by status (last hour)",
              [("sum by (status) (increase(streamsense_alerts_total[1h]))", "{{status}}")]),
        panel("Detector statistic / threshold at alerts (median, last hour)", [(
            "histogram_quantile(0.5, sum by (le, kind) (rate(streamsense_detector_statistic_ratio_bucket[1h])))",
            "{{kind}}")], description="How far past its threshold a detector was when it alerted."),
        panel("Subjects under watch", [("sum by (type) (streamsense_monitored_subjects)", "{{type}}")]),
        panel("Negative share, busiest subjects (last closed window)", [(
            "max by (type, subject) (streamsense_subject_negative_share)", "{{type}} {{subject}}")],
            unit="percentunit", description="From sentiment.stats: each of the (at most 20 per worker) busiest "
                                            "products' and sources' last closed shortest window."),
    ])
    return {"pipeline": pipeline, "inference": inference, "models": models, "alerts": alerts}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(body, indent=2) + "\n" for name, body in dashboards().items()}


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) for every target of every panel."""
    return [(d["title"], p["title"], t["expr"]) for d in dashboards().values() for p in d["panels"]
            for t in p["targets"]]


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(render())} dashboards to {OUT}", file=sys.stderr)
