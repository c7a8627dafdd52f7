import pytest
from pydantic import ValidationError

from streams.settings import Settings
from streams.topics import TopicNames


def test_defaults_match_the_interface(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("STREAMSENSE_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert (s.triton_url, s.triton_http_url, s.triton_metrics_port) == (
        "127.0.0.1:8001", "127.0.0.1:8000", 8002)
    assert s.metrics_port == 9100 and s.metrics_host == "127.0.0.1" and s.topic_prefix == ""


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("STREAMSENSE_KAFKA_BOOTSTRAP", "a:1, b:2")
    monkeypatch.setenv("STREAMSENSE_TOPIC_PREFIX", "prod.")
    s = Settings()
    assert s.kafka_bootstrap_servers == ["a:1", "b:2"]
    assert TopicNames(prefix=s.topic_prefix).alerts == "prod.alerts"


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        Settings().batch_max = 3  # type: ignore[misc]


def test_sasl_needs_credentials_and_hides_the_password():
    with pytest.raises(ValidationError, match="needs STREAMSENSE_KAFKA_SASL_MECHANISM"):
        Settings(kafka_security_protocol="SASL_SSL")
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc", kafka_sasl_password="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    kwargs = s.kafka_client_kwargs()
    assert kwargs["sasl_plain_password"] == "hunter2" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_unknown_topic_is_an_error():
    with pytest.raises(KeyError, match="unknown topic 'review'"):
        TopicNames().name("review")
    assert TopicNames(prefix="x.").base("x.reviews.enriched") == "reviews.enriched"


def test_the_commit_interval_reaches_faust(monkeypatch, tmp_path):
    from streams.app import create_app

    monkeypatch.setenv("STREAMSENSE_HOME", str(tmp_path))
    inferencer = object()  # never called: the app is built, not started
    interval = lambda: create_app(Settings(), inferencer=inferencer).conf.broker_commit_interval  # noqa: E731
    assert interval() == 2.8  # Faust's, under at-least-once
    monkeypatch.setenv("STREAMSENSE_PROCESSING_GUARANTEE", "exactly_once")
    assert interval() == 1.0  # outputs wait for the commit to be seen
    monkeypatch.setenv("STREAMSENSE_COMMIT_INTERVAL_S", "0.5")
    assert interval() == 0.5
    with pytest.raises(ValidationError):
        Settings(commit_interval_s=0)
