"""Shadowing a candidate model version: the sample, the comparison's counts, and that nothing the
candidate does (fail, hang) reaches the served path; the served version is named in requests."""

from __future__ import annotations

import asyncio
import json
import random
import string

import numpy as np
from tritonclient.utils import InferenceServerException

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import TritonInferencer
from streams.adapters.triton_models import ModelRoute
from streams.agents.shadow import ShadowComparison
from streams.core.shadow import compare, sample
from streams.core.text import Analysis
from streams.records import Review


def _analysis(label: str, model: str, *, positive: float = 0.5, entities=()) -> Analysis:
    probs = {"negative": round(1 - positive, 3), "neutral": 0.0, "positive": positive}
    return Analysis(sentiment={"label": label, "score": 1.0, "probs": probs},
                    entities=[dict(e) for e in entities], truncated=False, model=model)


def test_the_sample_keeps_its_share_and_picks_the_same_texts_every_time():
    rng = random.Random(4)
    texts = ["".join(rng.choices(string.ascii_letters + " ", k=40)) for _ in range(20_000)]
    picked = sample(texts, 0.1)
    assert 0.09 < len(picked) / len(texts) < 0.11
    assert sample(texts, 0.1) == picked
    # A text's fate does not depend on its batch: the same texts in another order and mix.
    chosen = {texts[i] for i in picked}
    shuffled = texts[::-1][:5000]
    assert {shuffled[i] for i in sample(shuffled, 0.1)} == chosen & set(shuffled)
    assert sample(texts, 1.0) == list(range(len(texts)))


def test_the_tally_counts_agreement_and_scores_only_polar_ratings():
    served = [_analysis("positive", "a", positive=0.9), _analysis("negative", "a", positive=0.1,
                                                                     entities=[{"start": 0, "end": 4, "type": "ORG"}]),
              _analysis("neutral", "a", positive=0.6), _analysis("neutral", "a", positive=0.4)]
    shadow = [_analysis("positive", "b", positive=0.8), _analysis("negative", "b", positive=0.3),
              _analysis("positive", "b", positive=0.7), _analysis("negative", "b", positive=0.2)]
    tally = compare(served, shadow, [2, 0, 1, 2])  # the third is neutral-rated: not scored
    assert (tally.texts, tally.sentiment_agreed, tally.entities_agreed) == (4, 2, 3)
    assert (tally.rated, tally.served_right, tally.shadow_right) == (3, 2, 2)


class _Candidate:
    """The inferencer as the comparison sees it: a route and one try at a version."""

    def __init__(self, route: ModelRoute | None, answer=None, *, delay_s: float = 0.0) -> None:
        self.route, self.answer, self.delay_s, self.calls = route, answer, delay_s, []

    async def analyse_version(self, texts, version, *, domain=None):
        self.calls.append((list(texts), version))
        await asyncio.sleep(self.delay_s)
        if isinstance(self.answer, Exception):
            raise self.answer
        return [self.answer(t) for t in texts]


def _value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _reviews(n: int) -> tuple[list[str], list[Review]]:
    texts = [f"review number {i} of a kettle" for i in range(n)]
    records = [Review(review_id=f"r{i}", product_id="p", text=t, rating=5 if i % 2 else 1)
               for i, t in enumerate(texts)]
    return texts, records


def test_the_comparison_counts_what_both_versions_said_on_the_sample():
    metrics = Metrics()
    texts, records = _reviews(40)
    served = [_analysis("positive", "v1", positive=0.9) for _ in texts]
    candidate = _Candidate(ModelRoute(1, 2, 1.0), lambda t: _analysis("negative", "v2", positive=0.2))
    shadow = ShadowComparison(candidate, metrics)

    async def run():
        shadow.launch(texts, served, records)
        await shadow.wait()
    asyncio.run(run())
    assert candidate.calls == [(texts, 2)]
    names = {"served": "v1", "shadow": "v2"}
    assert _value(metrics, "streamsense_shadow_texts_total", **names) == 40
    assert _value(metrics, "streamsense_shadow_agreed_total", **names, output="sentiment") == 0
    assert _value(metrics, "streamsense_shadow_agreed_total", **names, output="entities") == 40
    assert _value(metrics, "streamsense_shadow_rated_total", **names) == 40
    assert _value(metrics, "streamsense_shadow_rated_right_total", **names, labeller="served") == 20
    assert _value(metrics, "streamsense_shadow_rated_right_total", **names, labeller="shadow") == 20


def test_a_failing_or_hanging_candidate_is_counted_and_never_raises():
    texts, records = _reviews(10)
    served = [_analysis("positive", "v1") for _ in texts]
    for candidate, timeout_s in ((_Candidate(ModelRoute(1, 2, 1.0), InferenceServerException("boom")), 5.0),
                                 (_Candidate(ModelRoute(1, 2, 1.0), lambda t: None, delay_s=5.0), 0.05)):
        metrics = Metrics()
        shadow = ShadowComparison(candidate, metrics, timeout_s=timeout_s)

        async def run(shadow=shadow):
            shadow.launch(texts, served, records)
            await shadow.wait()
        asyncio.run(run())
        assert _value(metrics, "streamsense_shadow_errors_total") == 10


def test_one_comparison_at_a_time_and_none_without_a_shadow():
    metrics = Metrics()
    texts, records = _reviews(10)
    served = [_analysis("positive", "v1") for _ in texts]
    candidate = _Candidate(ModelRoute(1, 2, 1.0), lambda t: _analysis("positive", "v2"), delay_s=0.05)
    shadow = ShadowComparison(candidate, metrics)

    async def run():
        shadow.launch(texts, served, records)
        shadow.launch(texts, served, records)  # the first is still running: skipped, not queued
        await shadow.wait()
        candidate.route = ModelRoute(1)
        shadow.launch(texts, served, records)
        await shadow.wait()
    asyncio.run(run())
    assert len(candidate.calls) == 1
    assert _value(metrics, "streamsense_shadow_skipped_total") == 10
    assert _value(metrics, "streamsense_shadow_texts_total", served="v1", shadow="v2") == 10


class _Triton:
    """A Triton holding versions: each answer names the version that gave it."""

    def __init__(self, ready: list[int], served: int | None) -> None:
        self.ready, self.served, self.asked = ready, served, []

    async def get_model_config(self, model, as_json=False, *, client_timeout):
        params = {} if self.served is None else {"streamsense_served": {"string_value": str(self.served)}}
        return {"config": {"name": model, "parameters": params}}

    async def get_model_metadata(self, model, as_json=False, *, client_timeout):
        return {"versions": [str(v) for v in self.ready], "outputs": [{"name": "ANALYSIS"}]}

    async def is_model_ready(self, model, *, client_timeout):  # a deadline, always
        return bool(self.ready)

    async def infer(self, model, inputs, client_timeout, model_version=""):
        self.asked.append(model_version)
        version = int(model_version) if model_version else max(self.ready)
        if version not in self.ready:
            raise InferenceServerException(f"Request for unknown model: '{model}' version {version} is not "
                                           "at ready state", status="StatusCode.UNAVAILABLE")
        n = inputs[0].shape()[0]
        body = json.dumps({"sentiment": {"label": "neutral", "probs": {}}, "entities": [],
                           "model": f"v{version}"}).encode()

        class Result:
            def as_numpy(self, name):
                return np.array([[body]] * n, dtype=np.object_) if name == "ANALYSIS" else None
        return Result()


def _pointed_at(triton: _Triton) -> TritonInferencer:
    inferencer = TritonInferencer(url="unused", route_refresh_s=3600)
    inferencer._client = triton
    return inferencer


def test_requests_name_the_served_version_even_when_a_newer_one_is_loaded():
    triton = _Triton(ready=[1, 2], served=1)  # 2 is a shadow: unnamed requests would reach it
    inferencer = _pointed_at(triton)
    results = asyncio.run(inferencer.analyse(["a", "b"]))
    assert {r.model for r in results} == {"v1"} and set(triton.asked) == {"1"}


def test_a_switch_that_unloads_the_pinned_version_moves_requests_at_once():
    triton = _Triton(ready=[1], served=1)
    inferencer = _pointed_at(triton)

    async def run():
        first = await inferencer.analyse(["a"])
        triton.ready, triton.served = [2], 2  # `streamsense model load 2` (refresh is an hour away)
        second = await inferencer.analyse(["b"])
        return first, second
    first, second = asyncio.run(run())
    assert first[0].model == "v1" and second[0].model == "v2"
    assert triton.asked == ["1", "1", "2"]  # one failed try at the unloaded version, no backoff
