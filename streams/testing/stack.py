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
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from streams.adapters.kafka_io import read_topic
from streams.local.paths import repo_root
from streams.settings import Settings

__all__ = ["REPO", "TcpProxy", "WorkerProcess", "assert_loopback_only", "ids_in", "infer_texts",
           "listening_addresses", "make_certificates", "replay_reviews"]

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


def replay_reviews(settings: Settings, env: dict[str, str], reviews: list[dict], *, log_dir: Path,
                   read: tuple[str, ...] = ("alerts",)) -> tuple[dict[str, list[dict]], WorkerProcess]:
    """Run a worker (``env``), produce ``reviews`` to it, wait until all are enriched, and return
    the values of the output topics in ``read`` (contract names, e.g. ``"alerts"``) and the
    stopped worker (for its log)."""
    from streams.adapters.kafka_io import produce_lines
    from streams.topics import TopicNames

    names = TopicNames(prefix=settings.topic_prefix)
    worker = WorkerProcess(env, log_dir=log_dir)
    try:
        lines = [json.dumps(r).encode() for r in reviews]
        asyncio.run(produce_lines(settings, names.reviews, "reviews", lines))
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(lines), timeout_s=240, worker=worker)

        async def values(topic: str) -> list[dict]:
            return [json.loads(rec.value) async for rec in read_topic(settings, topic, idle_timeout_s=5)]

        return {topic: asyncio.run(values(names.name(topic))) for topic in read}, worker
    finally:
        worker.stop()


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


def infer_texts(url: str, model: str, texts: list[str], output: str, *, timeout_s: float = 120,
                parameters: dict[str, str] | None = None):
    """One gRPC request with ``texts`` as the model's TEXT input (and the request
    ``parameters``, e.g. ``{"domain": "reviews"}``); returns ``output`` as numpy."""
    import asyncio

    import numpy as np
    import tritonclient.grpc.aio as grpcclient

    async def call():
        client = grpcclient.InferenceServerClient(url)
        try:
            data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
            inp = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            inp.set_data_from_numpy(data)
            result = await client.infer(model, [inp], timeout=int(timeout_s), parameters=parameters)
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


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target``. It holds every chunk ``delay_s`` before
    passing it on (both directions: a slow server, as the client sees it; ``delay_s`` can change
    while it runs), and with ``tls`` (a server-side ``ssl.SSLContext``) it terminates TLS: a
    plaintext server behind a TLS front, as a mesh or an ingress puts it."""

    def __init__(self, target: str, *, delay_s: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.delay_s = delay_s
        self.tls = tls
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                                              ssl=self.tls))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
