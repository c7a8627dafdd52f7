"""Session fixtures: one real Kafka broker and one real Triton server on free ports.

Each starts once per test session under a temporary home and is stopped by PID at the end.
The jars and Triton's runtime come from the repository's cache (``make setup`` fills it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.local.settings import LocalStackSettings
from streams.local.stack import LocalStack, private_stack_env
from streams.settings import Settings


@pytest.fixture(scope="session")
def stack_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The STREAMSENSE_* variables of this session's stack (for CLI subprocesses)."""
    return private_stack_env(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def stack_settings(stack_environment: dict[str, str]) -> LocalStackSettings:
    return LocalStackSettings.from_env(stack_environment)


def _running(settings: Settings, name: str) -> Iterator[Settings]:
    stack = LocalStack(settings)
    stack.provision()
    service = getattr(stack, name)()
    service.start(timeout_s=settings.startup_timeout_s)
    try:
        yield settings
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka(stack_settings: Settings) -> Iterator[Settings]:
    """A real Apache Kafka broker (KRaft); yields the Settings that point at it."""
    yield from _running(stack_settings, "kafka")


@pytest.fixture(scope="session")
def triton(stack_settings: Settings) -> Iterator[Settings]:
    """A real Triton server serving ``triton_repo/``; yields the Settings that point at it."""
    yield from _running(stack_settings, "triton")
