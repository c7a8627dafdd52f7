"""Types the demo's run, summary and report share (kept apart: no import cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Attribution", "DemoOptions", "DemoOutputs"]


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    events: int = 15_000
    rate: float = 300.0
    keep_running: bool = False
    start_kafka: bool = True  # False: settings point at a Kafka cluster that is not ours
    start_triton: bool = True
    seed: int = 7
    timeout_s: float = 600.0  # for the worker to catch up after the replay
    # The demo's worker learns each key's baseline from 200 events, not the default 50: the
    # baseline is the upper 95% bound of the warm-up's negative share, and from 50 tweets that
    # bound sits so high (0.36 for a product at 17% negative) that the sour product's rise to
    # the 43% negative our model sees in its tweets goes unnoticed.
    detector_warmup: int = 200


@dataclass
class DemoOutputs:
    """Everything read back from the run's topics (inputs for their timestamps, all outputs)."""

    sent: dict[str, int] = field(default_factory=dict)
    input_ts: dict[str, int] = field(default_factory=dict)  # event id -> Kafka timestamp (ms)
    reviews: list[dict] = field(default_factory=list)  # enriched, each with "_ts" (Kafka, ms)
    news: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    recommendations: dict[str, dict] = field(default_factory=dict)  # trigger event id -> record
    deadletter: list[dict] = field(default_factory=list)
    first_ts: int | None = None  # first input, last output (Kafka, ms)
    last_out_ts: int | None = None
    problem: str | None = None  # why not every input was accounted for
    peak_lag: dict[str, int] = field(default_factory=dict)  # input topic -> the workers' largest lag

    def latencies_ms(self, records) -> list[int]:
        out = []
        for record, key in records:
            sent = self.input_ts.get(record.get(key, ""))
            if sent is not None:
                out.append(record["_ts"] - sent)
        return sorted(out)


@dataclass(frozen=True, slots=True)
class Attribution:
    caught: dict[str, dict | None]  # planted change kind -> its first alert
    expected: list[dict]  # alerts that follow from a planted change
    false: list[dict]  # alerts on keys that did not change
