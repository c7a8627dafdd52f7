"""Section ``soak`` (``make soak``): one worker's memory over per-key state."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime

import numpy as np

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, committed, rss_mib
from streams.core.mentions import EntityMention
from streams.core.monitoring import Observation
from streams.records import encode

__all__ = ["soak"]


def _visits(keys: int, passes: int, rng: random.Random):
    """``passes`` rounds over ``keys`` distinct keys, shuffled each round: (round, step, key),
    ``step`` counting every visit so far."""
    for round_ in range(passes):
        order = list(range(keys))
        rng.shuffle(order)
        for i, key in enumerate(order):
            yield round_, round_ * keys + i, key


def _soak_clicks(keys: int, passes: int, seed: int) -> list[bytes]:
    """One event per user and round."""
    rng = random.Random(seed)
    return [json.dumps({"event_id": f"s{step}", "user_id": f"u{user}", "item_id": f"i{rng.randrange(2000)}",
                        "session_id": f"s{user}-{round_}",
                        "action": rng.choice(("impression", "impression", "click")),
                        "ts": 1_763_805_600_000 + step * 10}).encode()
            for round_, step, user in _visits(keys, passes, rng)]


def _mention(name: str, event_id: str, text: str, label: str, ts: float, **extra) -> bytes:
    """An entity-mentions record, as the text path would repartition it."""
    return encode(EntityMention(name.lower(), name, "ORG", Observation(
        event_id, text, label, 0.9 if label == "negative" else 0.05, datetime.fromtimestamp(ts, UTC),
        **extra)).to_record())


def _soak_mentions(keys: int, passes: int, seed: int) -> list[bytes]:
    """One mention per entity and round."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    return [_mention(f"Entity {n}", f"m{step}", f"a text that names Entity {n}",
                     rng.choice(("negative", "neutral", "positive")), start + step * 0.05)
            for _, step, n in _visits(keys, passes, rng)]


def _soak_themed(keys: int, passes: int, seed: int, *, themes: int = 12) -> list[bytes]:
    """One mention per entity and round, each with a sentence embedding (one of ``themes``
    directions plus noise) and words of its theme: the themes and keywords fill up."""
    rng, gen = random.Random(seed), np.random.default_rng(seed)
    centres = gen.normal(size=(themes, 384))
    words = [f"word{k}" for k in range(400)]
    start = datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    out = []
    for _, step, n in _visits(keys, passes, rng):
        theme = rng.randrange(themes)
        vector = centres[theme] + gen.normal(scale=0.8, size=384)
        text = " ".join(rng.choice(words[theme * 30:theme * 30 + 60]) for _ in range(12))
        embedding = (vector / np.linalg.norm(vector)).astype(np.float16)
        out.append(_mention(f"Themed {n}", f"t{step}", text, rng.choice(("negative", "neutral", "positive")),
                            start + step * 0.5, embedding=embedding))
    return out


def soak(stack: Stack, keys: int, passes: int = 2, *, themed_keys: int = 2_000,
         themed_passes: int = 40) -> str:
    """RSS of one worker sampled as it works through per-key state for ``keys`` users, then
    ``keys`` entities, each seen ``passes`` times, then ``themed_keys`` entities each mentioned
    ``themed_passes`` times with embeddings (themes and keywords).
    Once every key is known (the later passes) memory grows only as each key's state fills up
    to its cap."""
    settings, env, names = stack.prefixed("bench-s.")
    asyncio.run(ensure_topics(settings, names.all()))
    phases = [("click users", "clicks", _soak_clicks(keys, passes, seed=5), keys),
              ("entities", "entity-mentions", _soak_mentions(keys, passes, seed=6), keys),
              ("entities with themes", "entity-mentions", _soak_themed(themed_keys, themed_passes, seed=7),
               themed_keys)]
    rows = []
    with Workers(env, 1, stack.home) as running:
        pid = running.procs[0].pid
        running.wait_ready()
        time.sleep(10)  # partitions assigned, tables recovered
        rows.append(("start", 0, 0, rss_mib(pid)))
        offset = {}  # events already on each topic before the phase
        for phase, base, records, phase_keys in phases:
            topic = names.name(base)
            before = offset.get(topic, 0)
            asyncio.run(produce_lines(settings, topic, base, records))
            offset[topic] = before + len(records)
            marks = [before + round(len(records) * k / 8) for k in range(1, 9)]
            deadline = time.monotonic() + 1800
            while marks and time.monotonic() < deadline:
                if running.procs[0].poll() is not None:
                    raise RuntimeError("the worker exited during the soak")
                done = committed(settings, topic)
                if done >= marks[0]:
                    rows.append((phase, done - before, min(phase_keys, done - before), rss_mib(pid)))
                    marks = [m for m in marks if m > done]
                time.sleep(0.5)
            if marks:
                raise RuntimeError(f"the soak's {phase} were not all processed within 30 minutes")
    stack.figures["soak"] = {"rows": rows}
    return _soak_table(rows)


def _soak_table(rows: list[tuple[str, int, int, float]]) -> str:
    """The RSS curve and, per phase, MiB per 1,000 keys up to the first sample with every key
    seen, and the growth after it (when every key is already known).

    >>> print(_soak_table([("start", 0, 0, 100.0), ("users", 50, 50, 150.0), ("users", 100, 100, 200.0),
    ...                    ("users", 150, 100, 201.0), ("users", 200, 100, 202.0)]))
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
        known = next(r for r in mine if r[2] == mine[-1][2])  # the first sample with every key seen
        per_key = (known[3] - before) / known[2] * 1000
        lines.append(f"| {phase} | {per_key:.1f} | {mine[-1][3] - known[3]:+.0f} |")
        before = mine[-1][3]
    return "\n".join(lines)
