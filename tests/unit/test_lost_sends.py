"""At-least-once outputs go straight to the producer, and a send that fails for good restarts the
worker before a commit can pass its input (Faust only logged it): ours and Faust's own (table
changelogs) alike."""

import asyncio
from types import SimpleNamespace

import faust
from aiokafka.errors import KafkaTimeoutError
from faust.types.tuples import FutureMessage, PendingMessage

from streams.runtime import SourceTransactionTopic
from streams.runtime.producer_patches import report_lost_sends


class _Producer:
    def __init__(self):
        self.sent, self.futures = [], []

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        assert transactional_id is None
        self.sent.append((topic, key, value))
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


class _App:
    def __init__(self):
        self.producer = _Producer()


def _output(lost):
    app = _App()
    topic = SimpleNamespace(get_topic_name=lambda: "recommendations")
    return app.producer, SourceTransactionTopic(app, topic, exactly_once=False,
                                                on_lost=lambda *args: lost.append(args))


def test_an_at_least_once_output_goes_straight_to_the_producer_and_a_lost_one_is_reported():
    lost = []

    async def run():
        producer, output = _output(lost)
        await output.send(key=b"u1", value=b"{}")
        await output.send(key=b"u2", value=b"{}")
        producer.futures[0].set_result("delivered")
        producer.futures[1].set_exception(KafkaTimeoutError("batch expired"))
        await asyncio.sleep(0)  # the done callbacks
        return producer
    producer = asyncio.run(run())
    assert producer.sent == [("recommendations", b"u1", b"{}"), ("recommendations", b"u2", b"{}")]
    assert [(topic, type(error)) for topic, error in lost] == [("recommendations", KafkaTimeoutError)]


def test_a_lost_send_is_reported_before_the_commit_that_waited_for_it_goes_on():
    # Faust's at-least-once commit flushes the producer, then commits: the report (and the
    # restart it makes) must come first. aiokafka resolves a batch, then its records.
    order = []

    async def run():
        producer, output = _output([])
        output.on_lost = lambda *args: order.append("lost")
        await output.send(key=b"u1", value=b"{}")
        batch = asyncio.get_running_loop().create_future()

        async def commit():
            await asyncio.wait([batch])  # the producer's flush
            order.append("commit")
        committing = asyncio.ensure_future(commit())
        await asyncio.sleep(0)
        batch.set_exception(KafkaTimeoutError())
        producer.futures[0].set_exception(KafkaTimeoutError())
        await committing
    asyncio.run(run())
    assert order == ["lost", "commit"]


def test_fausts_own_sends_that_fail_are_reported_too():
    lost = []

    async def run():
        app = faust.App("lost-sends-test", broker="memory://")
        topic = app.topic("lost-sends-test-click-users-changelog")
        report_lost_sends(app, lambda *args: lost.append(args))
        messages = [FutureMessage(PendingMessage(channel=topic, key=b"k", value=b"v", partition=0,
                                                 timestamp=None, headers=None, key_serializer=None,
                                                 value_serializer=None, callback=None)) for _ in range(2)]
        delivered, failed = (asyncio.get_running_loop().create_future() for _ in range(2))
        delivered.set_result(None)
        failed.set_exception(KafkaTimeoutError())
        topic._on_published(delivered, message=messages[0], producer=None, state=None)
        topic._on_published(failed, message=messages[1], producer=None, state=None)
        return messages[1]
    message = asyncio.run(run())
    assert [(topic, type(error)) for topic, error in lost] == [
        ("lost-sends-test-click-users-changelog", KafkaTimeoutError)]
    assert message.done()  # Faust's own handling still ran


def test_the_runtime_restarts_the_worker_on_a_lost_send_under_at_least_once_only(tmp_path):
    from streams.adapters.metrics import Metrics
    from streams.runtime import Runtime

    restarts = []
    for guarantee in (False, True):
        app = faust.App(f"lost-sends-runtime-{guarantee}", broker="memory://")
        runtime = Runtime(app, exactly_once=guarantee, datadir=tmp_path, metrics=Metrics(), deadletter="deadletter")
        runtime.restart = lambda g=guarantee: restarts.append(g)
        output = runtime.output("recommendations")
        assert (output.on_lost is None) == guarantee
        if output.on_lost is not None:
            output.on_lost("recommendations", KafkaTimeoutError())
    assert restarts == [False]
