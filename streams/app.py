"""Composition root: Settings -> faust.App with its topics, tables, adapters and agents.

It wires; it does not process. Each agent takes a batch (:func:`~streams.runtime.take_batches`)
and hands it to a processor through the runtime's batch runner: :class:`~streams.agents.text.TextProcessor`
(reviews, news), :class:`~streams.agents.clicks.ClickProcessor` (clicks) and
:class:`~streams.agents.detectors.Detectors` (entity mentions). Everything about Faust's own
life (patches, commits and transactions, stalls, the heartbeat) is :mod:`streams.runtime`.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import shutil
from pathlib import Path

import faust

from models.online.sentiment import SentimentAdapter
from streams.adapters.kafka_admin import consumer_lag
from streams.adapters.metrics import Metrics
from streams.adapters.state_key import load_or_create_key
from streams.adapters.triton_client import Inferencer, TritonInferencer
from streams.agents.adaptation import SentimentAdaptation
from streams.agents.clicks import ClickProcessor
from streams.agents.detectors import Detectors, KeyedMonitors
from streams.agents.shadow import ShadowComparison
from streams.agents.text import TextProcessor
from streams.core.adaptation import RatingScale
from streams.core.eventtime import EventTimeWindow
from streams.core.monitoring import MonitorConfig, StreamMonitor
from streams.core.rules import InputRules
from streams.core.state import StateSeal
from streams.errors import StreamSenseError
from streams.runtime import WriteBehind, ack_batch, install, rocksdb_store, run_pipelined, take_batches
from streams.settings import Settings
from streams.topics import TopicNames

__all__ = ["create_app", "input_rules", "monitor_config", "rating_scale", "state_seal"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, worker_index: int = 0, inferencer: Inferencer | None = None,
               metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics()
    inferencer = inferencer or TritonInferencer(
        url=settings.triton_url, timeout_s=settings.triton_request_timeout_s,
        max_chunk=settings.batch_max, latency_target_s=settings.triton_latency_target_s, metrics=metrics,
        tls=settings.triton_tls(), embeddings=settings.wants_embeddings)
    datadir = _datadir(settings, worker_index)
    app = _faust_app(settings, worker_index=worker_index, datadir=str(datadir))
    names = TopicNames(prefix=settings.topic_prefix)
    runtime = install(app, exactly_once=settings.processing_guarantee == "exactly_once", datadir=datadir,
                      metrics=metrics, deadletter=names.deadletter, stall_check_s=settings.stall_check_s,
                      transaction_timeout_s=settings.transaction_timeout_s,
                      inputs={names.reviews, names.news, names.clicks, names.entity_mentions,
                              names.sentiment_feedback})
    seal, rules, config = state_seal(settings), input_rules(settings), monitor_config(settings)
    table = _tables(app, settings)  # changelog-backed: a restarted or rebalanced worker resumes them
    sweep_s = settings.expiry_sweep_s

    def monitors(subject_type: str, *, with_surge: bool = False) -> KeyedMonitors:
        return KeyedMonitors(table(f"{subject_type}-monitors"), subject_type, config, with_surge=with_surge,
                             metrics=metrics, seal=seal, ttl_s=settings.subject_ttl_s, sweep_s=sweep_s)

    item_signals = WriteBehind(table("item-signals", global_=True))  # flushed by _keep_state
    detectors = Detectors(
        alerts=runtime.output(names.alerts), mentions=runtime.output(names.entity_mentions), metrics=metrics,
        subjects={"reviews": monitors("product"), "news": monitors("source")},
        streams={"reviews": StreamMonitor("reviews", config), "news": StreamMonitor("news", config)},
        entities=monitors("entity", with_surge=True), item_signals=item_signals,
        stats=runtime.output(names.sentiment_stats) if settings.sentiment_stats else None,
        windows=(settings.stats_window_sizes, settings.stats_grace_s),
        entity_stats=settings.processing_guarantee == "at_least_once")  # streams/README.md: why
    clicks = ClickProcessor(
        users=table("click-users"), models=table("click-models"), signals=item_signals,
        recommendations=runtime.output(names.recommendations), alerts=runtime.output(names.alerts),
        deadletter=runtime.deadletter, metrics=metrics, config=config, seal=seal, rules=rules,
        checkpoint_s=settings.click_checkpoint_s, checkpoint_events=settings.click_checkpoint_events,
        segments=runtime.output(names.user_segments), user_ttl_s=settings.user_ttl_s, sweep_s=sweep_s)

    adaptation = _adaptation(settings, table, runtime, names, metrics, seal)
    shadow = ShadowComparison(inferencer, metrics, scale=rating_scale(settings),
                              timeout_s=settings.triton_request_timeout_s)

    def text(base: str, enriched: str) -> TextProcessor:
        return TextProcessor(base, inferencer=inferencer, output=runtime.output(enriched),
                             deadletter=runtime.deadletter, metrics=metrics, detectors=detectors, rules=rules,
                             adaptation=adaptation if base == "reviews" else None, shadow=shadow)

    agents = [("entities", names.entity_mentions, detectors.on_mentions),
              ("clicks", names.clicks, clicks.process),
              ("reviews", names.reviews, text("reviews", names.reviews_enriched)),
              ("news", names.news, text("news", names.news_enriched))]
    if adaptation is not None:
        agents.append(("sentiment-feedback", names.sentiment_feedback, adaptation.learn))
        _keep_adapter(app, adaptation, settings=settings, feedback_topic=names.sentiment_feedback)
    for name, source, process in agents:
        _agent(app, runtime, name, runtime.topic(source), process, settings=settings)
    _keep_state(app, runtime, detectors, clicks, names, settings)
    _report_consumer_lag(app, settings=settings, names=names, metrics=metrics)
    return app


def _tables(app: faust.App, settings: Settings):
    def table(name: str, *, global_: bool = False):
        # Keys and values are strings (JSON, or base64 of sealed bytes): Faust's table recovery
        # decodes with the serializer of the key/value *type*, not a schema.
        make = app.GlobalTable if global_ else app.Table
        full = f"{settings.topic_prefix}{name}"
        # Global tables (item signals, the sentiment adapter: small, read from every partition)
        # stay in memory whatever the store of the partitioned ones. The URL names the table
        # (its RocksDB files): Faust takes a table's own store URL only when it is truthy, and
        # yarl's URL("rocksdb://") is not.
        scheme = "memory" if global_ or settings.table_store == "memory" else rocksdb_store.SCHEME
        if scheme != "memory":
            _fresh_local_store(Path(app.conf.tabledir), full)
        extra = {"synchronize_all_active_partitions": True} if global_ else {}
        if scheme != "memory":
            extra["options"] = dict(rocksdb_store.OPTIONS)
        return make(full, key_type=str, value_type=str, partitions=settings.topic_partitions,
                    store=f"{scheme}:{full}", **extra)
    return table


def _fresh_local_store(tabledir: Path, table: str) -> None:
    """Delete the RocksDB files of ``table`` (one per partition) before they open, so recovery
    rebuilds them from the changelog as it does in memory. What RocksDB kept from the last run
    may be ahead of Kafka: writes of a transaction the broker aborted (exactly-once), or of
    records whose changelog write a crash cut off; resuming from it would count those records
    twice when they are processed again. (Faust's resume-from-disk would restart faster.)"""
    for path in tabledir.glob(f"{glob.escape(table)}-*.db"):
        log.info("table store: deleting %s, to be rebuilt from the changelog", path)
        shutil.rmtree(path)


def _adaptation(settings: Settings, table, runtime, names: TopicNames, metrics: Metrics,
                seal: StateSeal) -> SentimentAdaptation | None:
    if not settings.sentiment_adapter:
        return None
    return SentimentAdaptation(
        table=table("sentiment-adapter", global_=True), feedback=runtime.output(names.sentiment_feedback),
        deadletter=runtime.deadletter, metrics=metrics, seal=seal, scale=rating_scale(settings),
        template=SentimentAdapter(alpha=settings.sentiment_adapter_alpha),
        checkpoint_s=settings.sentiment_adapter_checkpoint_s,
        per_category=settings.sentiment_adapter_per_category,
        max_categories=settings.sentiment_adapter_max_categories)


def _keep_click_models(app: faust.App, clicks: ClickProcessor, *, settings: Settings,
                       clicks_topic: str) -> None:
    if settings.processing_guarantee != "exactly_once":
        # Under exactly-once a table write belongs in a batch's transaction (see _keep_adapter):
        # there a quiet partition's model is checkpointed by its next batch instead.
        @app.timer(settings.click_checkpoint_s)
        async def checkpoint_click_models() -> None:
            clicks.checkpoint_idle()

    @app.on_partitions_revoked.connect
    async def forget_click_models(sender, revoked, **kwargs) -> None:
        clicks.forget({tp.partition for tp in revoked if tp.topic == clicks_topic})


def _keep_state(app: faust.App, runtime, detectors: Detectors, clicks: ClickProcessor, names: TopicNames,
                settings: Settings) -> None:
    """Click models are checkpointed; detector state, item signals and click users are written
    behind, at the start of every commit (``KeyedMonitors.flush``, ``WriteBehind.flush``,
    ``ClickProcessor.flush``)."""
    _keep_click_models(app, clicks, settings=settings, clicks_topic=names.clicks)
    monitors = {names.reviews: detectors.subjects["reviews"], names.news: detectors.subjects["news"],
                names.entity_mentions: detectors.entities}  # each input topic: the monitors keyed like it
    for keyed in monitors.values():
        runtime.before_commit(keyed.flush)
    runtime.before_commit(detectors.item_signals.flush)
    runtime.before_commit(clicks.flush)

    @app.timer(5.0)
    async def report_table_sizes() -> None:  # not per batch: counting a RocksDB table's keys reads them all
        for keyed in monitors.values():
            keyed.report()
        detectors.metrics.item_signals.set(len(detectors.item_signals))

    @app.on_partitions_revoked.connect
    async def forget_unwritten_monitors(sender, revoked, **kwargs) -> None:
        # The revocation's commit wrote them; none of a revoked partition may be written later.
        for topic, keyed in monitors.items():
            keyed.forget({tp.partition for tp in revoked if tp.topic == topic})
        gone = {(tp.topic, tp.partition) for tp in revoked}
        detectors.item_signals.forget(lambda event: (event.message.topic, event.message.partition) in gone)


def _keep_adapter(app: faust.App, adaptation: SentimentAdaptation, *, settings: Settings,
                  feedback_topic: str) -> None:
    if settings.processing_guarantee != "exactly_once":
        # Under exactly-once a table write belongs in a batch's transaction: a write from a timer
        # can land between transactions. There the learner stores only after its batches.
        @app.timer(settings.sentiment_adapter_checkpoint_s)
        async def store_sentiment_adapter() -> None:
            try:
                adaptation.store()
            except Exception:
                # A failed store only delays what others serve: the next one writes it.
                log.exception("storing the sentiment adapter failed; retrying at the next interval")

    @app.on_partitions_revoked.connect
    async def forget_sentiment_learner(sender, revoked, **kwargs) -> None:
        if any(tp.topic == feedback_topic for tp in revoked):
            adaptation.forget()


def _report_consumer_lag(app: faust.App, *, settings: Settings, names: TopicNames, metrics: Metrics) -> None:
    @app.timer(15.0)
    async def report_consumer_lag() -> None:
        try:
            for row in await consumer_lag(settings):
                if row.group == app.conf.id and row.topic in names.all():
                    metrics.consumer_lag.labels(topic=names.base(row.topic)).set(row.lag)
        except Exception:
            metrics.errors.labels(kind="lag_probe").inc()
            log.debug("reading consumer lag failed", exc_info=True)


def _agent(app: faust.App, runtime, name: str, topic: faust.TopicT, process, *, settings: Settings) -> None:
    """An agent that hands each batch of ``topic`` (:func:`~streams.runtime.take_batches`) to
    ``process``; a :class:`TextProcessor` in a pipeline (:func:`~streams.runtime.run_pipelined`):
    the next batch's Triton request goes out while this one's outputs are sent."""
    depth, size, within = settings.text_pipeline_depth, settings.batch_max, settings.batch_within_s

    async def agent(stream):
        if isinstance(process, TextProcessor) and depth > 1:
            await run_pipelined(take_batches(stream, size, within=within, ack=False), start=process.start,
                                finish=lambda started: runtime.batches.run(
                                    name, _finishing(process, started), started.events),
                                ack=lambda events: ack_batch(stream, events), depth=depth)
            return
        run = process.process if isinstance(process, TextProcessor) else process
        async for events in take_batches(stream, size, within=within):
            await runtime.batches.run(name, run, events)
    agent.__name__ = f"{name}_agent"
    app.agent(topic, name=name)(agent)


def _finishing(processor: TextProcessor, started):
    """What the batch runner runs for a started batch: its finish, or, when the runner takes
    the batch apart (records in flight at a crash: one at a time), each record afresh."""
    async def process(events) -> None:
        if events is started.events:
            await processor.finish(started)
        else:
            started.cancel()
            await processor.process(events)
    return process


def _faust_app(settings: Settings, *, worker_index: int, datadir: str) -> faust.App:
    app = _faust_app_of(settings, worker_index=worker_index, datadir=datadir)
    if settings.table_store == "rocksdb":
        if importlib.util.find_spec("rocksdict") is None:
            raise StreamSenseError("STREAMSENSE_TABLE_STORE=rocksdb needs the rocksdict package (a "
                                   "dependency of streamsense: pip install rocksdict)")
        rocksdb_store.register()
    return app


def _faust_app_of(settings: Settings, *, worker_index: int, datadir: str) -> faust.App:
    return faust.App(
        settings.consumer_group,
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers],
        broker_credentials=_credentials(settings),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        web_enabled=settings.web_enabled, web_host=settings.web_host, web_bind=settings.web_host,
        web_port=settings.web_port + worker_index,
        datadir=datadir,
        store="memory://",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_commit_interval=settings.commit_every_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        # Faust's default (0) sends a produce request per record; 5 ms lets records of a batch
        # share requests (measured in `make bench`: the send path was a quarter of the loop).
        producer_linger=0.005,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(256, 4 * settings.batch_max),
    )


def _credentials(settings: Settings):
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_context = settings.kafka_client_kwargs().get("ssl_context")
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


def state_seal(settings: Settings) -> StateSeal:
    """The seal for table state, with the deployment's key (created locally on first use)."""
    key, origin = load_or_create_key(
        key=settings.state_key.get_secret_value() if settings.state_key else None,
        key_file=settings.state_key_file, default_file=settings.home / "state.key")
    log.info("table state is authenticated with the key from %s", origin)
    return StateSeal(key, max_bytes=settings.max_state_bytes)


def _datadir(settings: Settings, worker_index: int) -> Path:
    """Where a worker keeps its local state (Faust's data directory, the crash journal)."""
    datadir = settings.home / "workers" / f"worker-{worker_index}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return datadir


def input_rules(settings: Settings) -> InputRules:
    return InputRules(window=EventTimeWindow(behind_s=settings.event_time_behind_s,
                                             ahead_s=settings.event_time_ahead_s),
                      max_input_bytes=settings.max_input_bytes,
                      enriched_embeddings=settings.enriched_embeddings)


def rating_scale(settings: Settings) -> RatingScale:
    return RatingScale(negative_max=settings.rating_negative_max, positive_min=settings.rating_positive_min)


def monitor_config(settings: Settings) -> MonitorConfig:
    """The detectors' configuration: from Settings only (MonitorConfig's own defaults are for
    tests and notebooks)."""
    return MonitorConfig(arl0=settings.detector_arl0, warmup=settings.detector_warmup,
                         cooldown_s=settings.alert_cooldown_s, surge_bucket_s=settings.surge_bucket_s,
                         themes=settings.themes, coordinated_min_users=settings.coordinated_min_users,
                         coordinated_window_s=settings.coordinated_window_s,
                         discount_coordinated=settings.discount_coordinated)
