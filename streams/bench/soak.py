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


def _soak_clicks(keys: int, passes: int, seed: int, start_s: float) -> list[bytes]:
    """One event per user and round."""
    rng = random.Random(seed)
    return [json.dumps({"event_id": f"s{step}", "user_id": f"u{user}", "item_id": f"i{rng.randrange(2000)}",
                        "session_id": f"s{user}-{round_}",
                        "action": rng.choice(("impression", "impression", "click")),
                        "ts": round(start_s * 1000) + step * 10}).encode()
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


# The soak worker's time to live for click users and detector subjects: a day of event time.
# The first phases span less than that; the churning phases bring a new key every 17.28 s
# of event time, so about 5,000 keys are within a day of the newest at any moment.
SOAK_TTL_S = 86_400.0
CHURN_STEP_S = 17.28
_CHURNING = ("click users churning", "entities churning")
_T_CHURN_MENTIONS = datetime(2026, 2, 4, tzinfo=UTC).timestamp()  # two days after the themed phase


def _churn_clicks(keys: int, seed: int, start_s: float) -> list[bytes]:
    """One click or impression per new user, a user every ``CHURN_STEP_S`` of event time."""
    rng = random.Random(seed)
    return [json.dumps({"event_id": f"c{n}", "user_id": f"c{n}", "item_id": f"i{rng.randrange(2000)}",
                        "session_id": f"c{n}", "action": rng.choice(("impression", "impression", "click")),
                        "ts": round((start_s + n * CHURN_STEP_S) * 1000)}).encode() for n in range(keys)]


def _churn_mentions(keys: int, seed: int, start_s: float) -> list[bytes]:
    """One mention per new entity, an entity every ``CHURN_STEP_S`` of event time."""
    rng = random.Random(seed)
    return [_mention(f"Churn {n}", f"cm{n}", f"a text that names Churn {n}",
                     rng.choice(("negative", "neutral", "positive")), start_s + n * CHURN_STEP_S)
            for n in range(keys)]


def _phases(keys: int, passes: int, themed_keys: int, themed_passes: int) -> list[tuple]:
    """(phase, input topic, records, distinct keys, table): the first three phases span less
    event time than ``SOAK_TTL_S`` each; the churning ones start two days after the last."""
    churn = keys * 3 // 5
    day = 86_400.0
    # Clicks carry event times a worker accepts as they are (STREAMSENSE_EVENT_TIME_BEHIND_S:
    # the soak's worker takes 60 days): the churning users end 16 days before now.
    clicks_start = time.time() - 2 * day - churn * CHURN_STEP_S - 16 * day
    return [("click users", "clicks", _soak_clicks(keys, passes, 5, clicks_start), keys, "click-users"),
            ("entities", "entity-mentions", _soak_mentions(keys, passes, seed=6), keys, "entity-monitors"),
            ("entities with themes", "entity-mentions", _soak_themed(themed_keys, themed_passes, seed=7),
             themed_keys, "entity-monitors"),
            ("click users churning", "clicks", _churn_clicks(churn, 8, clicks_start + 2 * day), churn,
             "click-users"),
            ("entities churning", "entity-mentions", _churn_mentions(churn, 9, _T_CHURN_MENTIONS), churn,
             "entity-monitors")]


def soak(stack: Stack, keys: int, passes: int = 2, *, themed_keys: int = 2_000,
         themed_passes: int = 40) -> str:
    """RSS of one worker sampled as it works through per-key state for ``keys`` users, then
    ``keys`` entities, each seen ``passes`` times, then ``themed_keys`` entities each mentioned
    ``themed_passes`` times with embeddings (themes and keywords); then new users and new
    entities that keep coming while the old ones expire (``SOAK_TTL_S``).
    Once every key is known (the later passes) memory grows only as each key's state fills up
    to its cap; with keys expiring it stays flat however many come."""
    settings, env, names = stack.prefixed("bench-s.")
    env = {**env, "STREAMSENSE_USER_TTL_S": str(SOAK_TTL_S), "STREAMSENSE_SUBJECT_TTL_S": str(SOAK_TTL_S),
           "STREAMSENSE_EVENT_TIME_BEHIND_S": str(60 * 86_400),
           "STREAMSENSE_EXPIRY_SWEEP_S": "5"}  # weeks of event time pass in seconds here
    asyncio.run(ensure_topics(settings, names.all()))
    rows = []
    with Workers(env, 1, stack.home) as running:
        pid = running.procs[0].pid
        running.wait_ready()
        time.sleep(10)  # partitions assigned, tables recovered
        rows.append(("start", 0, 0, 0, rss_mib(pid)))
        offset: dict[str, int] = {}  # events already on each topic before the phase
        seen: dict[str, int] = {}  # keys ever written to each table before the phase

        def held(table: str, base: str, before_in: float, phase_keys: int) -> int:
            # Both counts from the worker's metrics, scraped together: the committed offsets
            # trail what it has processed (and expired) by a commit interval.
            processed = running.total(f'streamsense_events_in_total{{topic="{base}"}}') - before_in
            expired = running.total(f'streamsense_state_expired_total{{table="{table}"}}')
            return seen.get(table, 0) + min(phase_keys, round(processed)) - round(expired)

        for phase, base, records, phase_keys, table in _phases(keys, passes, themed_keys, themed_passes):
            topic = names.name(base)
            before = offset.get(topic, 0)
            before_in = running.total(f'streamsense_events_in_total{{topic="{base}"}}')
            asyncio.run(produce_lines(settings, topic, base, records))
            offset[topic] = before + len(records)
            marks = [before + round(len(records) * k / 8) for k in range(1, 9)]
            deadline = time.monotonic() + 1800
            while marks and time.monotonic() < deadline:
                if running.procs[0].poll() is not None:
                    raise RuntimeError("the worker exited during the soak")
                done = committed(settings, topic)
                if done >= marks[0]:
                    known = min(phase_keys, done - before)
                    rows.append((phase, done - before, known, held(table, base, before_in, phase_keys),
                                 rss_mib(pid)))
                    marks = [m for m in marks if m > done]
                time.sleep(0.5)
            if marks:
                raise RuntimeError(f"the soak's {phase} were not all processed within 30 minutes")
            seen[table] = seen.get(table, 0) + phase_keys
    stack.figures["soak"] = {"rows": rows}
    return _soak_table(rows)


def _soak_table(rows: list[tuple[str, int, int, int, float]]) -> str:
    """The RSS curve and, per phase, MiB per 1,000 keys up to the first sample with every key
    seen, and the growth after it (when every key is already known); for a churning phase, the
    keys held at the end and the growth after its first quarter.

    >>> print(_soak_table([("start", 0, 0, 0, 100.0), ("users", 50, 50, 50, 150.0),
    ...                    ("users", 100, 100, 100, 200.0), ("users", 150, 100, 100, 201.0),
    ...                    ("users", 200, 100, 100, 202.0), ("click users churning", 100, 100, 150, 230.0),
    ...                    ("click users churning", 400, 400, 60, 231.0)]))
    ... # doctest: +NORMALIZE_WHITESPACE
    | phase | events processed | keys seen in the phase | keys in the table | worker RSS (MiB) |
    |---|---|---|---|---|
    | start | 0 | 0 | 0 | 100 |
    | users | 50 | 50 | 50 | 150 |
    | users | 100 | 100 | 100 | 200 |
    | users | 150 | 100 | 100 | 201 |
    | users | 200 | 100 | 100 | 202 |
    | click users churning | 100 | 100 | 150 | 230 |
    | click users churning | 400 | 400 | 60 | 231 |
    <BLANKLINE>
    | phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |
    |---|---|---|
    | users | 1000.0 | +2 |
    <BLANKLINE>
    | phase (keys expiring) | keys seen | keys in the table at the end | RSS growth after 1/4 (MiB) |
    |---|---|---|---|
    | click users churning | 400 | 60 | +1 |
    """
    lines = ["| phase | events processed | keys seen in the phase | keys in the table | worker RSS (MiB) |",
             "|---|---|---|---|---|"]
    lines += [f"| {p} | {n} | {k} | {h} | {rss:.0f} |" for p, n, k, h, rss in rows]
    lines += ["", "| phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |", "|---|---|---|"]
    churning = ["", "| phase (keys expiring) | keys seen | keys in the table at the end "
                "| RSS growth after 1/4 (MiB) |", "|---|---|---|---|"]
    before = rows[0][4]
    for phase in dict.fromkeys(p for p, *_ in rows[1:]):
        mine = [r for r in rows if r[0] == phase]
        if phase in _CHURNING:
            quarter = next(r for r in mine if r[1] >= mine[-1][1] / 4)
            churning.append(f"| {phase} | {mine[-1][2]} | {mine[-1][3]} | {mine[-1][4] - quarter[4]:+.0f} |")
            continue
        known = next(r for r in mine if r[2] == mine[-1][2])  # the first sample with every key seen
        per_key = (known[4] - before) / known[2] * 1000
        lines.append(f"| {phase} | {per_key:.1f} | {mine[-1][4] - known[4]:+.0f} |")
        before = mine[-1][4]
    return "\n".join(lines + (churning if len(churning) > 3 else []))
