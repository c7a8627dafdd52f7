"""Section ``soak`` (``make soak``): one worker's memory over per-key state."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, committed, rss_mib
from streams.core.mentions import EntityMention
from streams.core.monitoring import Observation
from streams.records import encode

__all__ = ["soak"]



def _soak_clicks(keys: int, passes: int, seed: int) -> list[bytes]:
    """``passes`` rounds over ``keys`` distinct users (shuffled each round), one event each."""
    rng = random.Random(seed)
    out = []
    for round_ in range(passes):
        users = list(range(keys))
        rng.shuffle(users)
        for i, user in enumerate(users):
            out.append(json.dumps({"event_id": f"s{round_}-{i}", "user_id": f"u{user}",
                                   "item_id": f"i{rng.randrange(2000)}", "session_id": f"s{user}-{round_}",
                                   "action": rng.choice(("impression", "impression", "click")),
                                   "ts": 1_763_805_600_000 + (round_ * keys + i) * 10}).encode())
    return out


def _soak_mentions(keys: int, passes: int, seed: int) -> list[bytes]:
    """``passes`` rounds over ``keys`` distinct entities, as the text path would repartition them."""
    rng = random.Random(seed)
    out = []
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for round_ in range(passes):
        names = list(range(keys))
        rng.shuffle(names)
        for i, n in enumerate(names):
            label = rng.choice(("negative", "neutral", "positive"))
            ts = datetime.fromtimestamp(start + (round_ * keys + i) * 0.05, UTC)
            mention = EntityMention(f"entity {n}", f"Entity {n}", "ORG", Observation(
                f"m{round_}-{i}", f"a text that names Entity {n}", label,
                0.9 if label == "negative" else 0.05, ts))
            out.append(encode(mention.to_record()))
    return out


def soak(stack: Stack, keys: int, passes: int = 2) -> str:
    """RSS of one worker sampled as it works through per-key state for ``keys`` users, then
    ``keys`` entities, each seen ``passes`` times. Once every key is known (the later passes)
    memory grows only as each key's state fills up to its cap."""
    settings, env, names = stack.prefixed("bench-s.")
    asyncio.run(ensure_topics(settings, names.all()))
    phases = [("click users", "clicks", _soak_clicks(keys, passes, seed=5)),
              ("entities", "entity-mentions", _soak_mentions(keys, passes, seed=6))]
    rows = []
    with Workers(env, 1, stack.home) as running:
        pid = running.procs[0].pid
        running.wait_ready()
        time.sleep(10)  # partitions assigned, tables recovered
        rows.append(("start", 0, 0, rss_mib(pid)))
        for phase, base, records in phases:
            topic = names.name(base)
            asyncio.run(produce_lines(settings, topic, base, records))
            marks = [round(len(records) * k / 8) for k in range(1, 9)]
            deadline = time.monotonic() + 1800
            while marks and time.monotonic() < deadline:
                if running.procs[0].poll() is not None:
                    raise RuntimeError("the worker exited during the soak")
                done = committed(settings, topic)
                if done >= marks[0]:
                    rows.append((phase, done, min(keys, done), rss_mib(pid)))
                    marks = [m for m in marks if m > done]
                time.sleep(0.5)
            if marks:
                raise RuntimeError(f"the soak's {phase} were not all processed within 30 minutes")
    stack.figures["soak"] = {"rows": rows}
    return _soak_table(rows, keys, passes)


def _soak_table(rows: list[tuple[str, int, int, float]], keys: int, passes: int) -> str:
    """The RSS curve and, per phase, MiB per 1,000 keys up to the first sample with every key
    seen, and the growth after it (when every key is already known).

    >>> print(_soak_table([("start", 0, 0, 100.0), ("users", 50, 50, 150.0), ("users", 100, 100, 200.0),
    ...                    ("users", 150, 100, 201.0), ("users", 200, 100, 202.0)], 100, 2))
    ... # doctest: +NORMALIZE_WHITESPACE
    | phase | events processed | keys known | worker RSS (MiB) |
    |---|---|---|---|
    | start | 0 | 0 | 100 |
    | users | 50 | 50 | 150 |
    | users | 100 | 100 | 200 |
    | users | 150 | 100 | 201 |
    | users | 200 | 100 | 202 |
    <BLANKLINE>
    | phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |
    |---|---|---|
    | users | 1000.0 | +2 |
    """
    lines = ["| phase | events processed | keys known | worker RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {p} | {n} | {k} | {rss:.0f} |" for p, n, k, rss in rows]
    lines += ["", "| phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |", "|---|---|---|"]
    before = rows[0][3]
    for phase in dict.fromkeys(p for p, *_ in rows[1:]):
        mine = [r for r in rows if r[0] == phase]
        known = next(r for r in mine if r[1] >= keys)  # the first sample with every key seen
        per_key = (known[3] - before) / known[1] * 1000
        lines.append(f"| {phase} | {per_key:.1f} | {mine[-1][3] - known[3]:+.0f} |")
        before = mine[-1][3]
    return "\n".join(lines)
