import asyncio
import json

import numpy as np

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import TritonInferencer

ANALYSIS = json.dumps({"sentiment": {"label": "neutral", "score": 1.0,
                                     "probs": {"negative": 0.0, "neutral": 1.0, "positive": 0.0}},
                       "entities": [], "model": "m"}).encode()


def test_in_flight_gauge_counts_requests_while_they_run_and_returns_to_zero():
    metrics = Metrics()
    seen = []

    class Result:
        def __init__(self, n):
            self.n = n

        def as_numpy(self, name):
            return np.array([[ANALYSIS]] * self.n, dtype=np.object_)

    class Client:
        async def infer(self, model, inputs, client_timeout):
            seen.append(metrics.triton_in_flight._value.get())
            await asyncio.sleep(0.01)
            return Result(inputs[0].shape()[0])

    inferencer = TritonInferencer(url="unused", metrics=metrics)
    inferencer._get_client = Client
    results = asyncio.run(inferencer.analyse(["a", "b", "c"]))
    assert [r.sentiment["label"] for r in results] == ["neutral"] * 3
    assert seen and min(seen) >= 1
    assert metrics.triton_in_flight._value.get() == 0
