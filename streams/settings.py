"""One frozen settings object for the workers (and every client of Kafka and Triton); the local
stack's own settings extend it (:class:`streams.local.settings.LocalStackSettings`).

Every field can be set from the environment with the ``STREAMSENSE_`` prefix, e.g.
``STREAMSENSE_KAFKA_BOOTSTRAP=broker-1:9093,broker-2:9093``.

>>> s = Settings(kafka_bootstrap="k1:9092,k2:9092", topic_prefix="prod.")
>>> s.kafka_bootstrap_servers
['k1:9092', 'k2:9092']
>>> s.topic_prefix
'prod.'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "explain_settings_error"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMSENSE_", frozen=True, extra="ignore")

    # The worker's data directory (crash journal, the local state key), and where the local
    # stack keeps its data, logs and PID files (git-ignored).
    home: Path = Path(".streamsense")

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # A worker that dies without leaving the group (SIGKILL, a lost machine) holds its partitions
    # this long before the group gives them to the others (Kafka's session.timeout.ms; the
    # broker allows 6 s to 30 min by default). Heartbeats go every third of it, at most 3 s.
    kafka_session_timeout_s: float = Field(default=60.0, ge=6, le=1800)

    # gRPC endpoint used by workers; HTTP and metrics ports of the same server.
    triton_url: str = "127.0.0.1:8001"
    triton_http_url: str = "127.0.0.1:8000"
    triton_metrics_port: int = Field(default=8002, ge=1, le=65535)
    triton_request_timeout_s: float = Field(default=30.0, gt=0)
    # gRPC over TLS to Triton (its --grpc-use-ssl, or a TLS proxy in front of it): the CA that
    # signed the server's certificate (None: the system's), and a client key and certificate
    # chain where the server asks for mutual TLS.
    triton_ssl: bool = False
    triton_ssl_cafile: Path | None = None
    triton_ssl_certfile: Path | None = None
    triton_ssl_keyfile: Path | None = None
    # Requests slower than this make the client send smaller batches (see streams/core/flow.py).
    triton_latency_target_s: float = Field(default=1.0, gt=0)

    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    batch_max: int = Field(default=64, ge=1)
    batch_within_s: float = Field(default=0.05, gt=0)
    # Text batches in flight per agent: the next one's Triton request goes out while the last
    # one's outputs are sent (streams/runtime/pipeline.py); 1: one batch at a time. Meant for a
    # GPU Triton; with CPU Triton on shared cores 2 is within the noise of 1 (BENCHMARKS.md,
    # text path), so 1 stays the default until a GPU run measures it.
    text_pipeline_depth: int = Field(default=1, ge=1, le=8)
    # Detectors (streams.core.monitoring): false-alarm budget, warm-up and alert cooldown.
    detector_arl0: float = Field(default=10_000, gt=1)
    detector_warmup: int = Field(default=50, ge=1)
    alert_cooldown_s: float = Field(default=3600.0, ge=0)
    surge_bucket_s: float = Field(default=60.0, gt=0)
    # Click models (streams.core.clicks): checkpoint each partition's model this often (seconds)
    # or after this many of its events, whichever comes first; learning since is lost on a crash.
    click_checkpoint_s: float = Field(default=30.0, gt=0)
    click_checkpoint_events: int = Field(default=20_000, ge=1)
    # A user with no click for this long (event time, against the newest click of its partition)
    # is deleted from the click-users table, tombstone and all; 0 keeps every user for good.
    user_ttl_s: float = Field(default=30 * 86_400.0, ge=0)
    # A product, news source or entity with no text for this long (event time, against the
    # newest text of its partition) leaves its detector table: its baselines start afresh if it
    # comes back. 0 keeps every subject for good.
    subject_ttl_s: float = Field(default=30 * 86_400.0, ge=0)
    # The search for idle keys spreads a pass over a table's keys across at least this long
    # (wall clock; streams.core.expiry.Sweep), so idle keys leave up to this late; 0: every batch.
    expiry_sweep_s: float = Field(default=60.0, ge=0)
    # Sentiment adapter (streams.agents.adaptation): learn rating -> sentiment from rated
    # reviews and serve the adapted label while it beats the model with confidence 1 - alpha.
    sentiment_adapter: bool = True
    rating_negative_max: float = 2.0  # ratings up to this are negative (1-2 of 5 stars)
    rating_positive_min: float = 4.0  # ratings from this up are positive (4-5 of 5 stars)
    sentiment_adapter_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    sentiment_adapter_checkpoint_s: float = Field(default=5.0, gt=0)
    # A review's `category` also trains that category's adapter, on top of the deployment's; the
    # table keeps at most this many (the least recently rated one goes).
    sentiment_adapter_per_category: bool = True
    sentiment_adapter_max_categories: int = Field(default=100, ge=1, le=10_000)
    # Themes (models.online.themes): each subject's texts clustered by their embeddings, so a
    # sentiment alert says what the negative texts are about and which themes grew.
    themes: bool = True
    # Review bombing (streams.core.bursts): this many distinct users posting near-duplicate reviews
    # of one product within the window raise coordinated_reviews and flag those reviews
    # ("coordinated" in text_flags; 0 turns it off); flagged reviews do not count towards the
    # product's sentiment unless discount_coordinated is false.
    coordinated_min_users: int = Field(default=10, ge=0)
    coordinated_window_s: float = Field(default=3600.0, gt=0)
    discount_coordinated: bool = True
    # sentiment.stats (streams.core.windows): per product and source, per tumbling window of event
    # time (seconds), the count, label mix, mean polarity and largest themes; a window closes (and
    # its record goes out) once the subject's latest event time is past its end by the grace.
    sentiment_stats: bool = True
    stats_window_sizes: tuple[int, ...] = (60, 3600)
    stats_grace_s: float = Field(default=60.0, ge=0)
    # Put each text's sentence embedding (base64 float16) into its *.enriched record (+1 kB each).
    enriched_embeddings: bool = False
    # Seconds between checks for partitions whose records were read but never processed.
    stall_check_s: float = Field(default=10.0, gt=0)
    # A worker told to stop (SIGTERM, Ctrl-C) exits after this many seconds even when Faust's
    # stop hangs (its Kafka client blocked in a group join while a dead member times out).
    stop_timeout_s: float = Field(default=20.0, gt=0)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # Seconds between commits of what was processed (Faust's timer; a rebalance and a stop commit
    # too); unset: 2.8 (Faust's) under at-least-once, 1 under exactly-once. A worker that dies
    # redoes up to this much input (at-least-once: duplicates); under exactly-once its outputs
    # become visible to read_committed consumers only at a commit, so it adds up to this much
    # latency (`make bench`, commits: 1 s cut the median from 1.6 s to 0.55 s at no throughput
    # cost), and each commit holds the batches back while it runs.
    commit_interval_s: float | None = Field(default=None, gt=0, le=60)
    # Where the partitioned tables (click users, detector monitors, click models) live while the
    # worker runs: in memory, or in RocksDB on disk under <home>/workers (needs `rocksdict`,
    # the `rocksdb` extra). Either way the changelog topics are the source of truth and a worker
    # rebuilds its local state from them at every start.
    table_store: Literal["memory", "rocksdb"] = "memory"
    # Exactly-once: Kafka aborts a transaction left open this long and fences its producer; a
    # Triton outage longer than this makes the worker restart and redo the records since its last
    # commit. At most the broker's transaction.max.timeout.ms (15 minutes by default).
    transaction_timeout_s: float = Field(default=60.0, ge=1, le=900)

    # Hostile-input limits (streams.core.rules). An input larger than this goes to the
    # dead-letter topic unparsed; it keeps every output under the producer's 1 MB limit.
    max_input_bytes: int = Field(default=512 * 1024, ge=1024, le=900_000)
    # An event time outside [Kafka record time - behind, + ahead] is replaced by the record
    # time and flagged (streams.core.eventtime): no detector ever sees year 1 or 9999.
    event_time_behind_s: float = Field(default=7 * 86400.0, gt=0)
    event_time_ahead_s: float = Field(default=3600.0, gt=0)
    # Detector monitors and click-model checkpoints are authenticated with HMAC-SHA256 under
    # this key, which never travels through Kafka: state read back from a changelog that does
    # not verify is discarded, never parsed. Set the key itself (hex or any string), or a
    # file holding it; without either, the worker creates `<home>/state.key` (0600). Every
    # worker of one deployment needs the same key.
    state_key: SecretStr | None = None
    state_key_file: Path | None = None
    # Largest state value (after decompression) a worker loads from a table.
    max_state_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # The first worker's ports; worker N adds N to each. Faust's web server (unauthenticated
    # pages that show table contents) is off unless enabled, and then binds web_host.
    web_enabled: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=1, le=65535)
    # /healthz on the metrics port fails (503) once the worker's event loop has not run its
    # heartbeat for this long: a liveness probe that sees a hung worker.
    heartbeat_timeout_s: float = Field(default=30.0, gt=1)

    @model_validator(mode="after")
    def _check_ratings(self) -> Settings:
        if self.rating_negative_max >= self.rating_positive_min:
            raise ValueError(f"rating_negative_max ({self.rating_negative_max}) must be below "
                             f"rating_positive_min ({self.rating_positive_min})")
        return self

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL")
        if sasl and not (self.kafka_sasl_mechanism and self.kafka_sasl_username
                         and self.kafka_sasl_password):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "STREAMSENSE_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings a process would read with ``env`` (``STREAMSENSE_*`` variables) added
        to its environment; this process's environment is left as it was."""
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return cls()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @property
    def consumer_group(self) -> str:
        """The workers' Kafka consumer group and Faust app id: one per topic prefix, so
        deployments (or tests) sharing a cluster under different prefixes never share a group.

        >>> Settings(topic_prefix="prod.").consumer_group, Settings().consumer_group
        ('streamsense.prod', 'streamsense')
        """
        return f"streamsense.{self.topic_prefix.rstrip('.')}" if self.topic_prefix else "streamsense"

    @property
    def commit_every_s(self) -> float:
        """The commit interval in effect (``commit_interval_s``, or the guarantee's default)."""
        if self.commit_interval_s is not None:
            return self.commit_interval_s
        return 1.0 if self.processing_guarantee == "exactly_once" else 2.8

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def kafka_client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
                certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
                keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                password=(self.kafka_ssl_key_password.get_secret_value()
                          if self.kafka_ssl_key_password else None),
            )
        if self.kafka_security_protocol.startswith("SASL"):
            assert self.kafka_sasl_password is not None  # checked by _check_security
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return kwargs

    @property
    def wants_embeddings(self) -> bool:
        """Whether to ask Triton for each text's embedding (the adapter, themes or the output use it)."""
        return self.sentiment_adapter or self.themes or self.enriched_embeddings

    def triton_tls(self) -> dict[str, object] | None:
        """Keyword arguments for tritonclient's gRPC client; None for plaintext.

        >>> Settings(triton_ssl=True, triton_ssl_cafile="ca.pem").triton_tls()
        {'ssl': True, 'root_certificates': 'ca.pem', 'private_key': None, 'certificate_chain': None}
        """
        if not self.triton_ssl:
            return None
        def path(p: Path | None) -> str | None:
            return str(p) if p else None

        return {"ssl": True, "root_certificates": path(self.triton_ssl_cafile),
                "private_key": path(self.triton_ssl_keyfile),
                "certificate_chain": path(self.triton_ssl_certfile)}

    @property
    def triton_http_port(self) -> int:
        return _port_of(self.triton_http_url)

    @property
    def triton_grpc_port(self) -> int:
        return _port_of(self.triton_url)


def _port_of(address: str) -> int:
    """``'127.0.0.1:8001'`` or ``'http://host:8000'`` -> the port.

    >>> _port_of("http://127.0.0.1:8000")
    8000
    """
    return int(address.rstrip("/").rsplit(":", 1)[1])


def explain_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting, without the values given: pydantic's own text repeats the
    whole input, the Kafka password included.

    >>> try:
    ...     Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password="hunter2")
    ... except ValidationError as exc:
    ...     text = explain_settings_error(exc)
    >>> "hunter2" in text, text.split(" needs ")[0]
    (False, '- settings: kafka_security_protocol=SASL_SSL')
    """
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"- {where}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
