"""Settings of the local stack (`streamsense up`/`down`, the demo, the benchmarks and the
tests): the worker's :class:`~streams.settings.Settings` plus where and how the local services
run. The same ``STREAMSENSE_*`` variables; a worker never reads these.

>>> LocalStackSettings(kafka_heap="1g").kafka_heap, LocalStackSettings().kafka_bootstrap
('1g', '127.0.0.1:9092')
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from streams.settings import Settings

__all__ = ["LocalStackSettings"]


class LocalStackSettings(Settings):
    # Where `make setup` caches the Kafka jars and Triton's runtime (shared by homes).
    cache_dir: Path = Path(".streamsense")
    triton_model_repository: Path = Path("triton_repo")
    # The local broker's KRaft controller listener.
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    # The local broker's own TLS identity under SASL_SSL (`streamsense up`, tests): one PEM file
    # with its unencrypted PKCS#8 key and certificate chain; clients trust kafka_ssl_cafile.
    kafka_broker_pem: Path | None = None
    # The local broker's JVM heap: it shares two cores and 24 GB with Triton and the workers.
    kafka_heap: str = "512m"
    # The local stack's Prometheus (`streamsense up --prometheus`, the demo), on 127.0.0.1.
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    # How long `streamsense up` waits for each service to report healthy.
    startup_timeout_s: float = Field(default=120.0, gt=0)
