"""The real Triton server from nvidia-pytriton, on CPU, bound to 127.0.0.1."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from streams.local.process import free_port, port_in_use
from streams.local.stack import LocalStack
from streams.local.triton import models_ready, triton_ready
from streams.settings import Settings
from streams.testing.stack import assert_loopback_only, infer_texts

pytestmark = pytest.mark.integration

FIXTURE_MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "triton_models"


def test_serves_the_model_repository_with_metrics(triton: Settings):
    assert triton_ready(triton.triton_http_url)
    expected = {p.name for p in (triton.triton_model_repository).iterdir() if (p / "config.pbtxt").exists()}
    assert set(models_ready(triton.triton_http_url)) == expected
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{triton.triton_metrics_port}/metrics", timeout=5).read().decode()
    assert "nv_cpu_utilization" in metrics or "nv_inference" in metrics


def test_binds_loopback_only(triton: Settings):
    for port in (triton.triton_http_port, triton.triton_grpc_port, triton.triton_metrics_port):
        assert_loopback_only(port)


def test_python_backend_runs_batched_string_models(stack_settings: Settings):
    settings = stack_settings.model_copy(update={
        "triton_model_repository": FIXTURE_MODELS,
        "triton_url": f"127.0.0.1:{free_port()}",
        "triton_http_url": f"127.0.0.1:{free_port()}",
        "triton_metrics_port": free_port(),
        "home": stack_settings.home / "python-backend",
    })
    stack = LocalStack(settings)
    stack.provision()
    service = stack.triton()
    service.start(timeout_s=settings.startup_timeout_s)
    try:
        assert models_ready(settings.triton_http_url) == {"text_length": "READY"}
        texts = ["hello", "", "Grüße aus Köln", "x" * 5000]

        lengths = infer_texts(settings.triton_url, "text_length", texts, "LENGTH", timeout_s=30)
        assert lengths.ravel().tolist() == [len(t) for t in texts]
    finally:
        service.stop()
    assert not port_in_use("127.0.0.1", settings.triton_http_port)
