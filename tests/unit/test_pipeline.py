"""Text batches in a pipeline (streams/runtime/pipeline.py): the next batch starts while the last
one finishes, batches finish and are acked in input order, and a batch whose finish did not end
is never acked."""

import asyncio
import json

from streams.adapters.metrics import Metrics
from streams.agents.text import TextProcessor
from streams.core.text import Analysis
from streams.runtime import run_pipelined
from streams.testing import FakeTopic, fake_events

ANALYSIS = {"sentiment": {"label": "negative", "score": 0.9,
                          "probs": {"negative": 0.9, "neutral": 0.05, "positive": 0.05}},
            "entities": [], "model": "fake"}


async def _batches(batches, gap_s=0.0):
    for batch in batches:
        await asyncio.sleep(gap_s)
        yield batch


def test_the_next_batch_starts_while_the_last_finishes_and_all_finish_and_ack_in_order():
    log, in_flight, most = [], set(), [0]

    def start(events):
        log.append(("start", events[0]))
        in_flight.add(events[0])
        most[0] = max(most[0], len(in_flight))
        return events

    async def finish(events):
        await asyncio.sleep(0.03 if events[0] % 2 == 0 else 0.001)  # even batches are slow
        log.append(("finish", events[0]))

    async def ack(events):
        in_flight.discard(events[0])
        log.append(("ack", events[0]))

    asyncio.run(run_pipelined(_batches([[n] for n in range(6)]), start=start, finish=finish, ack=ack, depth=2))
    assert [n for step, n in log if step == "finish"] == list(range(6))
    assert [n for step, n in log if step == "ack"] == list(range(6))
    assert log.index(("start", 1)) < log.index(("finish", 0))  # pipelined
    assert most[0] == 2  # never more than depth


def test_a_stopped_pipeline_acks_nothing_unfinished_and_cancels_what_it_started():
    acked, cancelled = [], []

    class _Started(list):
        def cancel(self):
            cancelled.append(self[0])

    async def finish(started):
        if started[0] == 1:
            await asyncio.sleep(60)  # still in Triton when the worker stops

    async def ack(events):
        acked.append(events[0])

    async def run():
        task = asyncio.ensure_future(run_pipelined(_batches([[0], [1], [2]], gap_s=0.01), start=_Started,
                                                   finish=finish, ack=ack, depth=2))
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(run())
    assert acked == [0] and sorted(cancelled) == [1, 2]


class _Inferencer:
    """Answers each batch after a delay that shrinks batch after batch, so a later batch's answer
    is back before an earlier one's."""

    def __init__(self):
        self.delays = iter([0.05, 0.03, 0.01, 0.0])

    async def analyse(self, texts, *, domain=None):
        await asyncio.sleep(next(self.delays, 0.0))
        return [Analysis.from_json(json.dumps(ANALYSIS)) for _ in texts]


def test_pipelined_text_batches_send_what_one_at_a_time_sends_in_the_same_order():
    values = [{"review_id": f"r{i}", "product_id": f"p{i % 3}", "user_id": f"u{i}", "text": f"broke after {i} days",
               "rating": 1} for i in range(40)]
    batches = [fake_events("reviews", values)[i:i + 10] for i in range(0, 40, 10)]

    def run(pipelined: bool):
        output = FakeTopic()
        processor = TextProcessor("reviews", inferencer=_Inferencer(), output=output, deadletter=FakeTopic(),
                                  metrics=Metrics())

        async def go():
            if pipelined:
                async def ack(events):
                    pass
                await run_pipelined(_batches(batches), start=processor.start, finish=processor.finish, ack=ack,
                                    depth=3)
            else:
                for batch in batches:
                    await processor.process(batch)
        asyncio.run(go())
        return [(key, json.loads(value)["review_id"]) for key, value in output.sent]
    assert run(pipelined=True) == run(pipelined=False) and len(run(pipelined=False)) == 40
