import asyncio
import json

import numpy as np
import pytest

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import InferenceRejected, TritonInferencer

ANALYSIS = json.dumps({"sentiment": {"label": "neutral", "score": 1.0,
                                     "probs": {"negative": 0.0, "neutral": 1.0, "positive": 0.0}},
                       "entities": [], "model": "m"}).encode()


class _Result:
    def __init__(self, n):
        self.n = n

    def as_numpy(self, name):
        return np.array([[ANALYSIS]] * self.n, dtype=np.object_)


def test_in_flight_gauge_counts_requests_while_they_run_and_returns_to_zero():
    metrics = Metrics()
    seen = []

    class Client:
        async def infer(self, model, inputs, client_timeout):
            seen.append(metrics.triton_in_flight._value.get())
            await asyncio.sleep(0.01)
            return _Result(inputs[0].shape()[0])

    inferencer = TritonInferencer(url="unused", metrics=metrics)
    inferencer._get_client = Client
    results = asyncio.run(inferencer.analyse(["a", "b", "c"]))
    assert [r.sentiment["label"] for r in results] == ["neutral"] * 3
    assert seen and min(seen) >= 1
    assert metrics.triton_in_flight._value.get() == 0


class _Channel:
    """A fake Triton client; ``script`` says what each call does: "ok", "down", "cancelled", "slow"."""

    def __init__(self, script, log, *, ready=True):
        self.script, self.log, self.closed, self.ready = script, log, False, ready

    async def infer(self, model, inputs, client_timeout):
        from tritonclient.utils import InferenceServerException
        step = self.script.pop(0)
        self.log.append((id(self), step))
        if step == "down":
            raise InferenceServerException("[StatusCode.UNAVAILABLE] failed to connect to all addresses")
        if step == "cancelled":  # what grpc raises in a call whose channel was closed under it
            raise asyncio.CancelledError()
        if step == "error":  # the model failed on these texts (the server itself is fine)
            raise InferenceServerException("text_analysis failed on this request: ValueError()",
                                           status="StatusCode.INTERNAL")
        if step == "slow":
            await asyncio.sleep(0.2)
            assert not self.closed, "the channel was closed under a call still in flight"
        return _Result(inputs[0].shape()[0])

    async def close(self):
        self.closed = True

    async def is_model_ready(self, model, *, client_timeout):  # a deadline, always
        return self.ready


def _inferencer(channels):
    inferencer = TritonInferencer(url="unused", max_chunk=1)
    made = iter(channels)
    original = inferencer._get_client

    def get_client():
        if inferencer._client is None:
            inferencer._client = next(made)
        return original()
    inferencer._get_client = get_client
    return inferencer


def test_a_cancelled_error_from_the_channel_is_retried_not_raised():
    # A CancelledError that is not the task's own cancellation crashed the agent (and Faust then
    # acked its batch: records lost when Triton was killed mid-stream). It is an outage: retry.
    log = []
    broken, fresh = _Channel(["cancelled"], log), _Channel(["ok"], log)
    results = asyncio.run(_inferencer([broken, fresh])._call(["a"]))
    assert len(results) == 1 and [step for _, step in log] == ["cancelled", "ok"]
    assert broken.closed and not fresh.closed  # a channel that cancels calls is replaced


def test_an_outage_retires_the_channel_but_closes_it_only_after_its_calls_finish():
    log = []
    old = _Channel(["slow", "down"], log)   # one call in flight, the other finds Triton down
    new = _Channel(["ok"], log)
    inferencer = _inferencer([old, new])

    async def run():
        return await inferencer.analyse(["a", "b"])   # max_chunk=1: two concurrent calls
    results = asyncio.run(run())
    assert len(results) == 2
    assert old.closed and not new.closed              # retired, closed after its slow call ended
    assert inferencer._client is new and not inferencer._retired and not inferencer._users


def test_the_tasks_own_cancellation_still_propagates():
    log = []
    inferencer = _inferencer([_Channel(["slow"], log)])

    async def run():
        task = asyncio.ensure_future(inferencer._call(["a"]))
        await asyncio.sleep(0.05)
        task.cancel()
        await task
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())


def test_a_batch_the_ready_model_keeps_failing_is_rejected_after_a_bounded_number_of_tries():
    log = []
    inferencer = _inferencer([_Channel(["error"] * 5, log)])
    with pytest.raises(InferenceRejected, match="3 times while ready"):
        asyncio.run(inferencer._call(["poison"]))
    assert len(log) == 3


def test_errors_while_the_model_is_not_ready_are_an_outage_and_retried():
    log = []
    channel = _Channel(["error", "error", "error", "error", "ok"], log, ready=False)
    inferencer = _inferencer([channel])
    inferencer.breaker.failure_threshold, states = 2, []
    failure = inferencer.breaker.failure
    inferencer.breaker.failure = lambda: (failure(), states.append(inferencer.breaker.state))
    results = asyncio.run(inferencer._call(["a"]))
    assert len(results) == 1 and len(log) == 5
    assert states[:2] == ["closed", "open"]  # an outage opens the breaker for everyone


def test_refusals_by_the_ready_model_never_open_the_breaker_for_other_requests():
    # A poison text is refused max_rejections times per try, and narrowing a batch down to it
    # tries again and again: counted as outages, those refusals opened the breaker, and every
    # other request of the worker waited out its cooldowns.
    log = []
    inferencer = _inferencer([_Channel(["error"] * 12, log)])
    for _ in range(4):
        with pytest.raises(InferenceRejected):
            asyncio.run(inferencer._call(["poison"]))
    assert len(log) == 12 and inferencer.breaker.state == "closed"


class _EmbeddingClient:
    """A Triton whose model has (or, before its re-export, lacks) the EMBEDDING output."""

    def __init__(self, outputs):
        self.outputs, self.asked = outputs, []

    async def get_model_metadata(self, model, as_json=False, *, client_timeout):
        return {"outputs": [{"name": name} for name in self.outputs]}

    async def infer(self, model, inputs, client_timeout, outputs=None):
        self.asked.append([o.name() for o in outputs] if outputs else None)
        n = inputs[0].shape()[0]

        class Result:
            def as_numpy(self, name):
                if name == "EMBEDDING":
                    return np.full((n, 384), 0.5, dtype=np.float16)
                return np.array([[ANALYSIS]] * n, dtype=np.object_)
        return Result()


def test_embeddings_come_with_each_analysis_when_the_model_serves_them():
    client = _EmbeddingClient(["ANALYSIS", "EMBEDDING"])
    inferencer = TritonInferencer(url="unused", embeddings=True)
    inferencer._get_client = lambda: client
    results = asyncio.run(inferencer.analyse(["a", "b"]))
    assert [r.embedding.shape for r in results] == [(384,), (384,)]
    assert client.asked == [["ANALYSIS", "EMBEDDING"]]


def test_a_model_without_embeddings_turns_them_off_instead_of_failing():
    client = _EmbeddingClient(["ANALYSIS"])
    inferencer = TritonInferencer(url="unused", embeddings=True)
    inferencer._get_client = lambda: client
    results = asyncio.run(inferencer.analyse(["a"]))
    assert results[0].embedding is None and client.asked == [None] and not inferencer.embeddings


class _SmallModel:
    """Triton serving a model with ``max_batch_size`` 8; ``requests`` gets each request's size
    and parameters."""

    def __init__(self, requests: list):
        self.requests = requests

    async def get_model_config(self, model, as_json, *, client_timeout):
        return {"config": {"max_batch_size": 8}}

    async def get_model_metadata(self, model, as_json, *, client_timeout):
        return {"versions": ["1"]}

    async def infer(self, model, inputs, client_timeout, **extra):
        n = inputs[0].shape()[0]
        self.requests.append((n, extra.get("parameters")))
        if n > 8:  # what Triton answers: INVALID_ARGUMENT
            from tritonclient.utils import InferenceServerException
            raise InferenceServerException(f"inference request batch-size must be <= 8, got {n}")
        return _Result(n)

    async def close(self):
        pass


def test_requests_never_exceed_the_models_max_batch_size_whatever_the_worker_batch():
    requests = []
    inferencer = TritonInferencer(url="unused", max_chunk=256)  # STREAMSENSE_BATCH_MAX=256
    inferencer._get_client = lambda: _SmallModel(requests)
    inferencer.batch_size.value = 256  # as if it had grown on fast answers
    # Before the fix: every chunk over 8 was refused and retried with backoff for good.
    results = asyncio.run(asyncio.wait_for(inferencer.analyse([f"t{i}" for i in range(100)]), 10))
    assert len(results) == 100 and max(n for n, _ in requests) <= 8


def test_a_failed_route_refresh_is_counted_and_the_last_route_kept():
    metrics = Metrics()
    down = []

    class Client:
        async def get_model_config(self, model, as_json, *, client_timeout):
            if down:
                from tritonclient.utils import InferenceServerException
                raise InferenceServerException("[StatusCode.DEADLINE_EXCEEDED] Deadline Exceeded")
            return {"config": {"max_batch_size": 8, "version_policy": {"specific": {"versions": [2]}}}}

        async def get_model_metadata(self, model, as_json, *, client_timeout):
            return {"versions": ["1", "2"]}

        async def infer(self, model, inputs, client_timeout, **extra):
            return _Result(inputs[0].shape()[0])

        async def close(self):
            pass

    inferencer = TritonInferencer(url="unused", metrics=metrics, route_refresh_s=0.0)
    inferencer._get_client = Client
    asyncio.run(inferencer.analyse(["a"]))  # the first refresh reads the route
    route = inferencer.route
    assert route is not None and metrics.errors.labels(kind="triton_route")._value.get() == 0
    down.append(True)
    asyncio.run(inferencer.analyse(["b"]))  # the next one fails: counted, the route kept
    assert metrics.errors.labels(kind="triton_route")._value.get() >= 1
    assert inferencer.route == route


def test_the_domain_of_the_texts_goes_to_triton_as_a_request_parameter():
    """The reviews agent names its texts so a version can serve reviews with their own
    calibration (models/bert/calibration.py); a call that names nothing sends no parameter."""
    requests = []
    inferencer = TritonInferencer(url="unused")
    inferencer._get_client = lambda: _SmallModel(requests)
    asyncio.run(inferencer.analyse([f"r{i}" for i in range(12)], domain="reviews"))
    assert requests == [(8, {"domain": "reviews"}), (4, {"domain": "reviews"})]
    requests.clear()
    asyncio.run(inferencer.analyse(["n1"]))
    asyncio.run(inferencer.analyse_version(["s1"], 2, domain="news"))
    assert requests == [(1, None), (1, {"domain": "news"})]
