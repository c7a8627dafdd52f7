"""Running the real thing in tests: worker processes, output checks, Triton calls, loopback
checks and TLS certificates. Used by this project's integration, chaos and end-to-end tests,
and usable from yours (the fixtures that start Kafka and Triton are in ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from streams.adapters.kafka_io import read_topic
from streams.local.paths import repo_root
from streams.settings import Settings

__all__ = ["REPO", "WorkerProcess", "assert_loopback_only", "ids_in", "infer_texts", "listening_addresses",
           "make_certificates"]

REPO = repo_root()


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


def ids_in(settings: Settings, topic: str, id_field: str, *, expect: int, timeout_s: float,
           worker: WorkerProcess | None = None) -> Counter:
    """Ids seen in ``topic`` (committed records only), waiting until ``expect`` arrived.

    Gives up at ``timeout_s``, or at once when the worker process has died.
    """
    async def collect() -> Counter:
        seen: Counter = Counter()
        deadline = time.monotonic() + timeout_s
        group = f"checker-{time.monotonic_ns()}"
        while sum(seen.values()) < expect and time.monotonic() < deadline:
            if worker is not None and worker.proc.poll() is not None:
                break
            async for rec in read_topic(settings, topic, idle_timeout_s=2, group_id=group):
                body = json.loads(rec.value)
                key = (body.get(id_field)
                       or f"{body.get('source_topic')}:{body.get('partition')}:{body.get('offset')}")
                seen[key] += 1
        return seen

    return asyncio.run(collect())


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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path, *, name: str = "ca") -> tuple[Path, Path]:
    """A CA, and a key + certificate for 127.0.0.1 signed by it; returns (broker PEM, CA file)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test-{name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "broker.key",
             "-out", "broker.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", f"{name}.pem", "-CAkey", f"{name}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.crt", cwd=directory)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8", cwd=directory)
    pem = directory / "broker-bundle.pem"
    pem.write_text((directory / "broker.pk8").read_text() + (directory / "broker.crt").read_text())
    return pem, directory / f"{name}.pem"
