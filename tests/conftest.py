"""Session fixtures: one real Kafka broker and one real Triton server on free ports.

Each starts once per test session under a temporary home and is stopped by PID at the end.
The jars and Triton's runtime come from the repository's cache (``make setup`` fills it).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local.stack import LocalStack
from streams.local.stack import private_stack_env as stack_env
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stack_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The STREAMSENSE_* variables of this session's stack (for CLI subprocesses)."""
    return stack_env(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def stack_settings(stack_environment: dict[str, str]) -> Settings:
    return Settings.from_env(stack_environment)


class WorkerProcess:
    """`streamsense worker` as a subprocess, as a user (or a process manager) runs it."""

    def __init__(self, env: dict[str, str], *, index: int = 0, log_dir: Path) -> None:
        self.log = log_dir / f"worker-{index}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--index", str(index),
             "--loglevel", os.environ.get("TEST_WORKER_LOGLEVEL", "warn")],
            env={**os.environ, **env}, cwd=REPO, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.hung_on_stop = False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (as a process manager would); a worker
        that needed the SIGKILL is marked ``hung_on_stop``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.hung_on_stop = True
                self.kill(signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


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


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port``, read from /proc/net/tcp{,6}."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word little-endian
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, width // 2, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


def assert_loopback_only(port: int) -> None:
    addresses = listening_addresses(port)
    assert addresses, f"nothing listens on {port}"
    for address in addresses:
        ip = ipaddress.ip_address(address)
        ip = getattr(ip, "ipv4_mapped", None) or ip
        assert ip.is_loopback, f"port {port} listens on {address}"


def infer_texts(url: str, model: str, texts: list[str], output: str, *, timeout_s: float = 120):
    """One gRPC request with ``texts`` as the model's TEXT input; returns ``output`` as numpy."""
    import asyncio

    import numpy as np
    import tritonclient.grpc.aio as grpcclient

    async def call():
        client = grpcclient.InferenceServerClient(url)
        try:
            data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
            inp = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            inp.set_data_from_numpy(data)
            result = await client.infer(model, [inp], timeout=int(timeout_s))
            return result.as_numpy(output)
        finally:
            await client.close()

    return asyncio.run(call())
