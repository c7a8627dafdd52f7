"""Triton at the edge: batched ``text_analysis`` calls with bounded, adaptive concurrency.

Outages are retried without limit (timeouts, refused connections, a server restarting, a full
queue): Triton being slow or down delays processing and never drops events. The retry loop
backs off with jitter and a circuit breaker, so callers block and the agent stops pulling from
Kafka (backpressure) instead of buffering without bound.

A batch the server *rejects* while it is up and the model ready (the model failed on these
texts) is different: retrying it forever would block its partition behind one poison text. After
``max_rejections`` such answers in a row :class:`InferenceRejected` is raised, and the agent
narrows the batch down to the culprit and dead-letters it (``streams.agents.text.TextProcessor``).

Which version answers: Triton may hold two versions of the model at once (the served one and a
shadow candidate, ``streamsense model shadow``), and a request that names no version goes to the
newest. So each request names the served version, read from the model's configuration
(:class:`~streams.adapters.triton_models.ModelRoute`, refreshed every ``route_refresh_s`` and at
once when a request to the pinned version fails: ``model load`` unloads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from streams.adapters.triton_models import ModelRoute, route_of
from streams.core.flow import AdaptiveBatchSize, AdaptiveLimiter, CircuitBreaker, backoff_s, cancelling
from streams.core.text import Analysis
from streams.errors import StreamSenseError

__all__ = ["InferenceRejected", "Inferencer", "TritonInferencer"]

log = logging.getLogger(__name__)


class InferenceRejected(StreamSenseError):
    """Triton, up and with the model ready, kept failing this batch: something in it."""


class Inferencer(Protocol):
    async def analyse(self, texts: list[str], *, domain: str | None = None) -> list[Analysis]:
        """One analysis per text, in order. ``domain``: what the texts are ("reviews", "news"),
        sent to Triton as the request parameter ``domain``, so a version can serve each kind with
        its own calibration (models/bert/calibration.py: reviews get a neutral offset)."""
        ...


class TritonInferencer:
    def __init__(self, *, url: str, model: str = "text_analysis", timeout_s: float = 30.0,
                 max_chunk: int = 64, max_in_flight: int = 8, latency_target_s: float = 1.0,
                 max_rejections: int = 3, metrics=None, tls: dict | None = None,
                 embeddings: bool = False, route_refresh_s: float = 5.0) -> None:
        self.url = url
        # Also ask for each text's sentence embedding (the sentiment adapter learns from it);
        # turned off, with a warning, when the served model has no EMBEDDING output.
        self.embeddings = embeddings
        self._outputs_checked = not embeddings
        # tritonclient's TLS arguments (ssl, root_certificates, private_key, certificate_chain:
        # file paths), from Settings.triton_tls(); None: plaintext.
        self.tls = tls or {}
        self.model = model
        self.timeout_s = timeout_s
        self.max_rejections = max_rejections
        self.batch_size = AdaptiveBatchSize(initial=min(16, max_chunk), maximum=max_chunk,
                                            target_s=latency_target_s)
        self.limiter = AdaptiveLimiter(initial=2, maximum=max_in_flight)
        self.breaker = CircuitBreaker()
        self.metrics = metrics
        self._client: grpcclient.InferenceServerClient | None = None
        # Calls in flight per channel: a channel is closed only when none is left on it, because
        # closing it cancels them (grpc raises CancelledError inside their awaits).
        self._users: dict[int, int] = {}
        self._retired: dict[int, grpcclient.InferenceServerClient] = {}
        # Which version to ask (None: not known yet, or the server cannot say: Triton chooses).
        self.route: ModelRoute | None = None
        self.route_refresh_s = route_refresh_s
        self._route_at = -float("inf")

    def _get_client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url, **self.tls)
        return self._client

    async def close(self) -> None:
        clients = [*self._retired.values(), *([self._client] if self._client is not None else [])]
        self._client = None
        self._retired.clear()
        for client in clients:
            await client.close()

    async def analyse(self, texts: list[str], *, domain: str | None = None) -> list[Analysis]:
        if not texts:
            return []
        if self._route_at == -float("inf"):  # first call: the model's limits before cutting chunks
            client = self._checkout()
            try:
                await self._refresh_route(client)
            finally:
                await self._release(client)
        size = self.batch_size.value
        calls = [asyncio.ensure_future(self._call(texts[i:i + size], domain))
                 for i in range(0, len(texts), size)]
        try:
            results = await asyncio.gather(*calls)
        except BaseException:
            for call in calls:  # one chunk failed for good (or we are cancelled): not the others either
                call.cancel()
            raise
        return [a for chunk in results for a in chunk]

    async def _check_outputs(self, client) -> None:
        """Once: does the served model have the EMBEDDING output asked for?"""
        metadata = await client.get_model_metadata(self.model, as_json=True, client_timeout=self.timeout_s)
        if "EMBEDDING" not in {o["name"] for o in metadata.get("outputs", [])}:
            log.warning("Triton's %s has no EMBEDDING output (a model exported before embeddings "
                        "were served): the sentiment adapter gets no embeddings", self.model)
            self.embeddings = False
        self._outputs_checked = True

    async def _call(self, texts: list[str], domain: str | None = None) -> list[Analysis]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        attempt = rejections = 0
        while True:
            await self.breaker.wait_until_callable()
            async with self.limiter.slot(), self._counted_in_flight():
                started = time.monotonic()
                client = self._checkout()
                version = None
                try:
                    version = await self._served_version(client)
                    analyses = await self._infer(client, data, version=version, domain=domain)
                except (TimeoutError, InferenceServerException, OSError) as exc:
                    kind = _kind(exc)
                    if version is not None and await self._route_moved(client, version):
                        continue  # `model load` unloaded the version asked for: ask the new one
                    # The ready model refusing these texts is not an outage: counted by the
                    # breaker, a poison record's retries (and the narrowing down to it) would
                    # hold every other request back for the breaker's cooldowns.
                    refused = kind == "error" and await self._model_ready(client)
                    if not refused:
                        self.breaker.failure()
                    if self.metrics:
                        self.metrics.errors.labels(kind=f"triton_{kind}").inc()
                    if attempt == 0 or attempt % 10 == 0:
                        log.warning("Triton %s failed (%s: %s); retrying with backoff (attempt %d)",
                                    self.model, kind, str(exc)[:200], attempt + 1)
                    if kind == "unavailable":
                        self._retire(client)
                    rejections = rejections + 1 if refused else 0
                    if rejections >= self.max_rejections:
                        raise InferenceRejected(f"Triton {self.model} failed this batch of {len(texts)} "
                                                f"{rejections} times while ready: {str(exc)[:300]}") from exc
                else:
                    latency = time.monotonic() - started
                    self.breaker.success()
                    self.limiter.observe(latency)
                    self.batch_size.observe(latency_s=latency, items=len(texts))
                    if self.metrics:
                        self.metrics.triton_request_seconds.observe(latency)
                        self.metrics.triton_batch_size.observe(len(texts))
                    return analyses
                finally:
                    await self._release(client)
            attempt += 1
            await asyncio.sleep(backoff_s(attempt))

    async def _infer(self, client, data: np.ndarray, *, version: int | None,
                     embeddings: bool | None = None, domain: str | None = None) -> list[Analysis]:
        """One request: ``version`` None lets Triton choose. Raises what the client raises."""
        inp = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        if not self._outputs_checked:
            await self._check_outputs(client)
        want = self.embeddings if embeddings is None else embeddings and self.embeddings
        extra = {"outputs": [grpcclient.InferRequestedOutput(name) for name in ("ANALYSIS", "EMBEDDING")]
                 } if want else {}
        if version is not None:
            extra["model_version"] = str(version)
        if domain is not None:
            extra["parameters"] = {"domain": domain}
        try:
            result = await client.infer(self.model, [inp], client_timeout=self.timeout_s, **extra)
        except asyncio.CancelledError:
            if cancelling():
                raise
            # Not our task's cancellation: grpc cancels calls on a channel that failed or
            # closed under them. Retried like any outage.
            raise InferenceServerException("cancelled by its channel (unavailable)") from None
        out = result.as_numpy("ANALYSIS")
        if out is None or len(out) != len(data):
            raise InferenceServerException(f"expected {len(data)} results")
        vectors = result.as_numpy("EMBEDDING") if want else None
        if vectors is not None and vectors.shape[0] != len(data):
            raise InferenceServerException(f"expected {len(data)} embeddings")
        analyses = [Analysis.from_json(v[0].decode("utf-8")) for v in out]
        if vectors is not None:
            analyses = [a.with_embedding(v) for a, v in zip(analyses, vectors, strict=True)]
        return analyses

    async def analyse_version(self, texts: list[str], version: int, *,
                              domain: str | None = None) -> list[Analysis]:
        """One try at ``version`` (a shadow candidate), outside the served path's retries,
        breaker and adaptive sizes: its failure is the caller's to count, never to wait out."""
        client = self._checkout()
        try:
            out: list[Analysis] = []
            for start in range(0, len(texts), self.batch_size.maximum):
                chunk = texts[start:start + self.batch_size.maximum]
                data = np.array([[t.encode("utf-8")] for t in chunk], dtype=np.object_)
                out += await self._infer(client, data, version=version, embeddings=False, domain=domain)
            return out
        finally:
            await self._release(client)

    async def _served_version(self, client) -> int | None:
        if time.monotonic() - self._route_at >= self.route_refresh_s:
            await self._refresh_route(client)
        return self.route.served if self.route is not None else None

    async def _refresh_route(self, client) -> None:
        self._route_at = time.monotonic()  # also on failure: one try per interval
        try:
            # Deadlines as for inference: a server that stopped answering must not hold the
            # request (and its slot) for good; a slow one times out here as it would there.
            deadline = self.timeout_s
            config = (await client.get_model_config(self.model, as_json=True, client_timeout=deadline)
                      ).get("config", {})
            metadata = await client.get_model_metadata(self.model, as_json=True, client_timeout=deadline)
            ready = [int(v) for v in metadata.get("versions", []) if str(v).isdigit()]
        except asyncio.CancelledError:
            if cancelling():
                raise
            return
        except Exception as exc:  # an outage, or a server that cannot say: keep what we knew
            # Counted: a refresh that keeps failing leaves the worker asking a version that may
            # no longer be the served one (the inference that follows is counted on its own).
            log.debug("reading %s's versions failed: %r", self.model, exc)
            if self.metrics:
                self.metrics.errors.labels(kind="triton_route").inc()
            return
        most = config.get("max_batch_size")
        if isinstance(most, int | str) and str(most).isdigit() and int(most) > 0:
            # The model's own limit: a request over it is refused (INVALID_ARGUMENT), however
            # large the worker's batches are (STREAMSENSE_BATCH_MAX).
            self.batch_size.limit(int(most))
        route = route_of(config, ready)
        if route != self.route:
            log.info("Triton %s: serving version %s%s", self.model, route.served,
                     f", shadow version {route.shadow} ({route.share:.0%} of texts)" if route.shadow else "")
        self.route = route

    async def _route_moved(self, client, version: int) -> bool:
        """After a failed request to ``version``: does the server serve another one now?"""
        await self._refresh_route(client)
        return self.route is not None and self.route.served != version

    @contextlib.asynccontextmanager
    async def _counted_in_flight(self):
        if self.metrics:
            self.metrics.triton_in_flight.inc()
        try:
            yield
        finally:
            if self.metrics:
                self.metrics.triton_in_flight.dec()

    async def _model_ready(self, client) -> bool:
        try:
            return bool(await client.is_model_ready(self.model, client_timeout=self.timeout_s))
        except Exception:  # cannot tell: an outage, keep waiting
            return False

    def _retire(self, client: grpcclient.InferenceServerClient) -> None:
        # A restarted server needs a fresh channel; the old one can stay in a failed state.
        # Calls still on the old one finish (or fail) there; the last of them closes it.
        if self._client is client:
            self._client = None
            self._retired[id(client)] = client

    def _checkout(self) -> grpcclient.InferenceServerClient:
        """The current channel, counted as in use until :meth:`_release`."""
        client = self._get_client()
        self._users[id(client)] = self._users.get(id(client), 0) + 1
        return client

    async def _release(self, client: grpcclient.InferenceServerClient) -> None:
        key = id(client)
        self._users[key] -= 1
        if self._users[key] == 0:
            del self._users[key]
            retired = self._retired.pop(key, None)
            if retired is not None:
                try:
                    await retired.close()
                except Exception:
                    log.debug("closing the old Triton channel failed", exc_info=True)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    status = getattr(exc, "status", lambda: None)()
    text = f"{status} {exc}".lower()
    if "deadline" in text or "timeout" in text:
        return "timeout"
    if "unavailable" in text or "connect" in text or isinstance(exc, OSError):
        return "unavailable"
    if "exhausted" in text or "queue" in text:
        return "overloaded"
    return "error"
