"""The click section's peers, each a process of its own: the same plain-state workload in a
minimal faust-streaming agent and in a Quix Streams app.

The workload (also :func:`streams.bench.peers.bare_loop`'s): decode each click's JSON, keep the
user's last 10 items as per-key state, and send one record per engagement (any action but an
impression) with the user's recent items. :func:`run` reads ``PEER_BROKER``, ``PEER_SOURCE``,
``PEER_SINK``, ``PEER_GROUP`` and ``PEER_STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["RECENT", "faust_app", "quix_app", "run", "step"]

RECENT = 10


def step(recent: list[str] | None, click: dict) -> tuple[list[str], dict | None]:
    """The user's new recent items, and the record to send (None for an impression).

    >>> step(["a"], {"user_id": "u", "event_id": "e", "item_id": "b", "action": "click"})
    (['a', 'b'], {'user_id': 'u', 'event_id': 'e', 'recent': ['a', 'b']})
    """
    items = [*(recent or [])[-(RECENT - 1):], click["item_id"]]
    if click["action"] == "impression":
        return items, None
    return items, {"user_id": click["user_id"], "event_id": click["event_id"], "recent": items}


def faust_app():
    """A per-record faust-streaming agent with a changelogged table (in memory), as a minimal
    Faust application is written: no batching, no StreamSense runtime patches."""
    import faust

    env = os.environ
    app = faust.App(env["PEER_GROUP"], broker=f"kafka://{env['PEER_BROKER']}", store="memory://",
                    web_enabled=False, topic_partitions=4, datadir=env["PEER_STATE_DIR"])
    source = app.topic(env["PEER_SOURCE"], key_serializer="raw", value_serializer="raw")
    sink = app.topic(env["PEER_SINK"], key_serializer="raw", value_serializer="raw")
    recent = app.Table("recent", default=list, partitions=4)

    @app.agent(source)
    async def clicks(stream):
        async for event in stream.events():
            click = json.loads(event.value)
            items, out = step(recent[click["user_id"]], click)
            recent[click["user_id"]] = items
            if out is not None:
                await sink.send(key=event.key, value=json.dumps(out).encode())

    return app


def quix_app():
    """The same in Quix Streams: a stateful ``apply`` (RocksDB state, changelogged), a filter
    and ``to_topic``."""
    from quixstreams import Application

    env = os.environ
    app = Application(broker_address=env["PEER_BROKER"], consumer_group=env["PEER_GROUP"],
                      auto_offset_reset="earliest", state_dir=env["PEER_STATE_DIR"], loglevel="WARNING")
    source = app.topic(env["PEER_SOURCE"], value_deserializer="json")
    sink = app.topic(env["PEER_SINK"], value_serializer="json")

    def update(click: dict, state) -> dict | None:
        items, out = step(state.get("recent"), click)
        state.set("recent", items)
        return out

    sdf = app.dataframe(source).apply(update, stateful=True).filter(lambda out: out is not None)
    sdf.to_topic(sink)
    return app


def run(name: str) -> None:
    """Run the peer ``name`` until stopped (``streams.bench.peers.run_peer`` starts it)."""
    if name == "faust":
        sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
        faust_app().main()
    elif name == "quix":
        quix_app().run()
    else:
        raise ValueError(f"no peer {name!r}: faust or quix")
