"""The pipeline over a SASL_SSL (SCRAM-SHA-512) listener of a real broker, with self-signed
certificates made here by openssl: enriched output arrives; the wrong password, plaintext and
an untrusted CA are refused; the password appears in no log and no metric."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.local.process import free_port
from streams.local.settings import LocalStackSettings
from streams.local.stack import LocalStack
from streams.settings import Settings
from streams.testing import synthetic_events
from streams.testing.stack import WorkerProcess, ids_in, make_certificates
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Ol4f-do-not-log"




@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, triton: Settings, stack_environment: dict[str, str]):
    """A second broker, SASL_SSL only, under its own home; yields its worker environment."""
    home = tmp_path_factory.mktemp("secured")
    pem, cafile = make_certificates(home / "tls")
    env = {**stack_environment,
           "STREAMSENSE_HOME": str(home),
           "STREAMSENSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "STREAMSENSE_KAFKA_CONTROLLER_PORT": str(free_port()),
           "STREAMSENSE_METRICS_PORT": str(free_port()),
           "STREAMSENSE_WEB_PORT": str(free_port()),
           "STREAMSENSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "STREAMSENSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMSENSE_KAFKA_SASL_USERNAME": "streamsense",
           "STREAMSENSE_KAFKA_SASL_PASSWORD": PASSWORD,
           "STREAMSENSE_KAFKA_SSL_CAFILE": str(cafile),
           "STREAMSENSE_KAFKA_BROKER_PEM": str(pem),
           "STREAMSENSE_TOPIC_PREFIX": "sec."}
    settings = LocalStackSettings.from_env(env)
    broker = LocalStack(settings).kafka()
    broker.start(timeout_s=settings.startup_timeout_s)
    try:
        yield env, settings, home
    finally:
        broker.stop()


def _connects(settings: Settings) -> bool:
    async def attempt() -> bool:
        producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), request_timeout_ms=5000)
        try:
            await asyncio.wait_for(producer.start(), 15)
            return True
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await producer.stop()

    return asyncio.run(attempt())


def test_pipeline_runs_over_sasl_ssl_and_secrets_stay_out_of_logs_and_metrics(secured, tmp_path: Path):
    env, settings, home = secured
    names = TopicNames(prefix="sec.")
    asyncio.run(ensure_topics(settings, names.all()))
    reviews = list(synthetic_events("reviews", 300, seed=5))
    worker = WorkerProcess({**env, "TEST_WORKER_LOGLEVEL": "info"}, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in reviews]))
        enriched = ids_in(settings, names.reviews_enriched, "review_id", expect=300, timeout_s=180, worker=worker)
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{env['STREAMSENSE_METRICS_PORT']}/metrics", timeout=10).read().decode()
    finally:
        worker.stop()
    assert set(enriched) == {r["review_id"] for r in reviews}, worker.tail()

    # Refused: a wrong password, no TLS, and a client that does not trust the broker's CA.
    assert not _connects(settings.model_copy(update={"kafka_sasl_password": SecretStr("wrong")}))
    assert not _connects(settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT",
                                                     "kafka_sasl_mechanism": None}))
    _, other_ca = make_certificates(tmp_path / "other", name="other-ca")
    assert not _connects(settings.model_copy(update={"kafka_ssl_cafile": other_ca}))

    logs = [worker.log, *(home / "run").glob("*.log")]
    assert len(logs) >= 2
    for text in [metrics, *(p.read_text(errors="replace") for p in logs)]:
        assert PASSWORD not in text
    assert "SASL_SSL" in (home / "kafka" / "server.properties").read_text()
    assert (home / "kafka" / "server.properties").stat().st_mode & 0o077 == 0
