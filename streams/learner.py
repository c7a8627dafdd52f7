"""``streamsense learn``: the background learner. Its own process, never the worker.

It gathers the rated reviews the workers enrich (``reviews.enriched``, its own consumer group)
into ``<home>/learner/rated.jsonl`` (the newest ``keep`` of them), and after ``every`` new ones
fine-tunes the served model version on them (:func:`models.bert.finetune.finetune`; ratings map
to labels as the adapter's do). A fifth of the rated reviews, chosen by a hash of their text so
the choice never changes between rounds, is held out and never trained on. The new version
replaces the served one only when it beats it **with confidence** on those held-out reviews:
among the polar ones that exactly one of the two labels right, the share the new version gets
right must have a lower bound above 1/2 (:func:`models.sequential.confidence.
bernoulli_confidence_sequence`) at level ``alpha / (k (k + 1))`` in round ``k``: the levels sum
to ``alpha``, so over all rounds together a version no better than the one it replaces is
served with probability at most ``alpha``. Then it is installed as the next version and served
(``ModelControl.load``), with no restart of Triton or the workers; or, with ``shadow`` set, it
shadows the served version on that share of the texts (``ModelControl.shadow``) and the switch
is left to the user (``streamsense model load N``) once the workers' comparison on live traffic
agrees. Each round is a line in ``<home>/learner/rounds.jsonl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.online.sentiment import LABELS, rating_label
from models.sequential.confidence import bernoulli_confidence_sequence
from streams.adapters.kafka_io import read_topic
from streams.local.settings import LocalStackSettings
from streams.topics import TopicNames

__all__ = ["LearnerOptions", "collect", "decide", "learn_round", "pending", "split"]


@dataclass(frozen=True, kw_only=True)
class LearnerOptions:
    every: int = 1000  # new rated reviews between rounds
    epochs: int = 1
    alpha: float = 0.05
    keep: int = 50_000  # rated reviews kept (the newest)
    eval_tweets: int = 1000
    shadow: float | None = None  # a winning version shadows on this share instead of serving


def _store(settings: LocalStackSettings) -> Path:
    folder = settings.home / "learner"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def collect(settings: LocalStackSettings, *, keep: int, idle_timeout_s: float = 5.0) -> int:
    """Append the rated reviews enriched since the last call; returns how many were new."""
    path = _store(settings) / "rated.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    seen = {r["review_id"] for r in rows}
    topic = TopicNames(prefix=settings.topic_prefix).reviews_enriched

    async def read() -> list[dict]:
        new = []
        async for record in read_topic(settings, topic, idle_timeout_s=idle_timeout_s,
                                       group_id=f"{settings.consumer_group}-learner"):
            try:
                body = json.loads(record.value)
                review_id, text, rating = body["review_id"], body["text"], body.get("rating")
            except (ValueError, KeyError, TypeError):
                continue  # not an enriched review: nothing to learn from
            if review_id in seen or not isinstance(text, str) or not text.strip() \
                    or not isinstance(rating, int | float):
                continue
            seen.add(review_id)
            new.append({"review_id": review_id, "text": text, "rating": float(rating)})
        return new

    new = asyncio.run(read())
    if new:
        rows = (rows + new)[-keep:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return len(new)


def _rounds(settings: LocalStackSettings) -> list[dict]:
    path = _store(settings) / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pending(settings: LocalStackSettings) -> int:
    """Rated reviews gathered since the last round (all of them before the first)."""
    folder = _store(settings)
    rated = folder / "rated.jsonl"
    total = sum(1 for _ in rated.open()) if rated.exists() else 0
    rounds = _rounds(settings)
    return max(0, total - (rounds[-1]["rated"] if rounds else 0))


def split(rows: list[dict], settings: LocalStackSettings) -> tuple[list, list]:
    """(train, held out) labelled texts: a fifth held out by a hash of the text, for good."""
    from models.bert.data import LabelledText

    train, heldout = [], []
    for row in rows:
        label = rating_label(row["rating"], negative_max=settings.rating_negative_max,
                             positive_min=settings.rating_positive_min)
        if label is None:
            continue
        digest = hashlib.sha256(row["text"].strip().lower().encode()).digest()
        item = LabelledText(group=f"rated-{digest[:8].hex()}", text=row["text"], label=LABELS[label])
        (heldout if digest[0] % 5 == 0 else train).append(item)
    return train, heldout


def decide(paired: dict[str, int], *, alpha: float, round_number: int = 1
           ) -> tuple[bool, tuple[float, float]]:
    """Serve the new version? Only if, among the held-out polar reviews exactly one of the two
    gets right, the new one's share has a lower confidence bound above 1/2, at the level this
    round spends (``alpha / (k (k + 1))``).

    >>> decide({"after_right": 40, "before_right": 10}, alpha=0.05)[0]
    True
    >>> decide({"after_right": 12, "before_right": 10}, alpha=0.05)[0]
    False
    """
    wins, losses = paired["after_right"], paired["before_right"]
    level = alpha / (round_number * (round_number + 1))
    low, high = bernoulli_confidence_sequence(successes=wins, trials=wins + losses, alpha=level)
    return low > 0.5, (low, high)


def learn_round(settings: LocalStackSettings, options: LearnerOptions, *, log=print) -> dict:
    """One round: fine-tune the served version on what was gathered, serve it if it wins."""
    from models.bert import data, export, finetune
    from streams.adapters.triton_models import ModelControl, repository_versions

    rows = [json.loads(line) for line in (_store(settings) / "rated.jsonl").read_text().splitlines()]
    train, heldout = split(rows, settings)
    control = ModelControl(settings.triton_http_url, home=settings.home)
    versions = {v.number: v for v in repository_versions(settings.triton_model_repository)}
    served = [v for v in control.served() if v in versions]
    if not served:
        raise RuntimeError(f"Triton serves no installed version of text_analysis "
                           f"({settings.triton_model_repository})")
    base = versions[served[-1]]
    if base.weights is None:
        raise RuntimeError(f"version {base.number}'s torch weights are not on this machine: "
                           "cannot fine-tune it")
    out = data.cache_dir() / "models" / f"learned-{base.name[-12:]}-{len(rows)}"
    log(f"learner: fine-tuning version {base.number} on {len(train)} rated reviews "
        f"({len(heldout)} held out)")
    report = finetune.finetune(base.weights, train, out, heldout=heldout, log=log,
                               config=finetune.FinetuneConfig(epochs=options.epochs,
                                                              eval_tweets=options.eval_tweets))
    number_of_round = len(_rounds(settings)) + 1
    accept, (low, high) = decide(report["paired"], alpha=options.alpha, round_number=number_of_round)
    result = {"at": datetime.now(UTC).isoformat(), "round": number_of_round, "base": base.number,
              "rated": len(rows),
              "train": len(train), "heldout": len(heldout), "paired": report["paired"],
              "interval": [round(low, 4), round(high, 4)], "accepted": accept,
              "before": report["before"]["yours (held out)"]["polar_accuracy"],
              "after": report["after"]["yours (held out)"]["polar_accuracy"]}
    if accept:
        number = export.next_version(settings.triton_model_repository)
        export.install(out, settings.triton_model_repository, version=number)
        if options.shadow is not None:
            control.shadow(number, share=options.shadow)
            result["shadowed"] = number
        else:
            control.load(number)
            result["served"] = number
    with (_store(settings) / "rounds.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    log(f"learner: held-out polar accuracy {result['before']:.3f} -> {result['after']:.3f}; new version "
        f"right on {report['paired']['after_right']} of the disagreements, the served one on "
        f"{report['paired']['before_right']} (share {low:.2f}-{high:.2f}): "
        + _outcome(result, options))
    return result


def _outcome(result: dict, options: LearnerOptions) -> str:
    if "served" in result:
        return f"serving version {result['served']}"
    if "shadowed" in result:
        return (f"shadowing version {result['shadowed']} on {options.shadow:.0%} of the texts "
                f"(`streamsense model load {result['shadowed']}` serves it)")
    return "keeping the served version"
