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

A held-out fifth is small early on (95 reviews after 500), and the confidence sequence needs
30-40 disagreements to call a 75-80% winner. So a new version that is ahead there but has not
won yet stays a *candidate* (``candidate.json``; one that is not ahead is deleted):
:func:`check_candidate` scores it and the version it was trained from on every rated review
gathered after its round whose text it has not met (neither trained on nor held out: streams
repeat short texts) and adds them to the same test, at the same level: the sequence is
time-uniform, so looking after every batch keeps the bound. It is served as soon as it wins;
the next round replaces it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.online.sentiment import LABELS, rating_label
from models.sequential.confidence import bernoulli_confidence_sequence
from streams.adapters.kafka_io import read_topic
from streams.local.settings import LocalStackSettings
from streams.topics import TopicNames

__all__ = ["LearnerOptions", "check_candidate", "collect", "decide", "learn_round", "pending", "split"]


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


def collect(settings: LocalStackSettings, *, keep: int, idle_timeout_s: float = 5.0,
            max_seconds: float | None = 10.0) -> int:
    """Append the rated reviews enriched since the last call (reading for at most
    ``max_seconds``: a busy stream is gathered over several calls); returns how many were new."""
    path = _store(settings) / "rated.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    seen = {r["review_id"] for r in rows}
    topic = TopicNames(prefix=settings.topic_prefix).reviews_enriched

    async def read() -> list[dict]:
        new = []
        group = f"{settings.consumer_group}-learner"
        async for record in read_topic(settings, topic, idle_timeout_s=idle_timeout_s,
                                       max_seconds=max_seconds, group_id=group):
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
        gathered = _gathered(settings)
        rows = (rows + new)[-keep:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
        (_store(settings) / "gathered").write_text(str(gathered + len(new)))
    return len(new)


def _gathered(settings: LocalStackSettings) -> int:
    """Rated reviews gathered ever: ``rated.jsonl`` keeps only the newest ``keep``."""
    folder = _store(settings)
    if (folder / "gathered").exists():
        return int((folder / "gathered").read_text())
    rated = folder / "rated.jsonl"  # a store from before the count was kept
    return sum(1 for _ in rated.open()) if rated.exists() else 0


def pending(settings: LocalStackSettings) -> int:
    """Rated reviews gathered since the last round (all of them before the first)."""
    rounds = _rounds(settings)
    last = rounds[-1].get("gathered", rounds[-1]["rated"]) if rounds else 0
    return max(0, _gathered(settings) - last)


def _rounds(settings: LocalStackSettings) -> list[dict]:
    """The rounds' lines (not the lines of candidates served later)."""
    path = _store(settings) / "rounds.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in lines if r.get("kind") != "check"]


def split(rows: list[dict], settings: LocalStackSettings) -> tuple[list, list]:
    """(train, held out) labelled texts: a fifth held out by a hash of the text, for good."""
    train, heldout = [], []
    for item in _labelled(rows, settings):
        digest = hashlib.sha256(_normal(item.text).encode()).digest()
        (heldout if digest[0] % 5 == 0 else train).append(item)
    return train, heldout


def _normal(text: str) -> str:
    return text.strip().lower()


def _labelled(rows: list[dict], settings: LocalStackSettings) -> list:
    from models.bert.data import LabelledText

    out = []
    for row in rows:
        label = rating_label(row["rating"], negative_max=settings.rating_negative_max,
                             positive_min=settings.rating_positive_min)
        if label is not None:
            digest = hashlib.sha256(_normal(row["text"]).encode()).digest()
            out.append(LabelledText(group=f"rated-{digest[:8].hex()}", text=row["text"], label=LABELS[label]))
    return out


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
    from models.bert import calibration, finetune
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
    # With the learner's other files (the deployment's home), not the shared model cache: a
    # served version's weights are the next round's start, and tests' homes are removed whole.
    out = _store(settings) / "versions" / f"learned-{base.name[-12:]}-{len(rows)}"
    log(f"learner: fine-tuning version {base.number} on {len(train)} rated reviews "
        f"({len(heldout)} held out)")
    report = finetune.finetune(base.weights, train, out, heldout=heldout, log=log,
                               served_offsets=calibration.served_log_offsets(base.path),
                               config=finetune.FinetuneConfig(epochs=options.epochs,
                                                              eval_tweets=options.eval_tweets))
    number_of_round = len(_rounds(settings)) + 1
    accept, (low, high) = decide(report["paired"], alpha=options.alpha, round_number=number_of_round)
    result = {"at": datetime.now(UTC).isoformat(), "round": number_of_round, "base": base.number,
              "rated": len(rows), "gathered": _gathered(settings),
              "train": len(train), "heldout": len(heldout), "paired": report["paired"],
              "interval": [round(low, 4), round(high, 4)], "accepted": accept,
              "before": report["before"][finetune.USER_SET]["polar_accuracy"],
              "after": report["after"][finetune.USER_SET]["polar_accuracy"]}
    _drop_candidate(settings)  # a newer round replaces a candidate that never won
    if accept:
        _serve(settings, options, control, out, result)
    elif report["paired"]["after_right"] > report["paired"]["before_right"]:
        result["candidate"] = True  # ahead, not yet with confidence: tested on what comes next
        (_store(settings) / "candidate.json").write_text(json.dumps({
            "round": number_of_round, "base": base.number, "path": str(out), "paired": report["paired"],
            "last": rows[-1]["review_id"]}))
    else:
        shutil.rmtree(out, ignore_errors=True)  # no better on the held-out reviews: not kept
    _append_round(settings, result)
    log(f"learner: held-out polar accuracy {result['before']:.3f} -> {result['after']:.3f}; new version "
        f"right on {report['paired']['after_right']} of the disagreements, the served one on "
        f"{report['paired']['before_right']} (share {low:.2f}-{high:.2f}): "
        + _outcome(result, options))
    return result


def check_candidate(settings: LocalStackSettings, options: LearnerOptions, *, log=print) -> dict | None:
    """Test the candidate of a round that has not won yet on the rated reviews gathered since
    (none of them trained on), and serve it once it wins with confidence; the line added to
    ``rounds.jsonl`` when it is decided, else None."""
    from models.bert import finetune, train
    from streams.adapters.triton_models import ModelControl, repository_versions

    path = _store(settings) / "candidate.json"
    if not path.exists():
        return None
    candidate = json.loads(path.read_text())
    rows = [json.loads(line) for line in (_store(settings) / "rated.jsonl").read_text().splitlines()]
    ids = [r["review_id"] for r in rows]
    control = ModelControl(settings.triton_http_url, home=settings.home)
    versions = {v.number: v for v in repository_versions(settings.triton_model_repository)}
    served = control.served()
    if candidate["last"] not in ids or not served or served[-1] != candidate["base"] \
            or versions.get(candidate["base"]) is None or versions[candidate["base"]].weights is None:
        _drop_candidate(settings)
        log(f"learner: round {candidate['round']}'s candidate dropped (the served version changed, or "
            "its reviews were trimmed)")
        return None
    fresh = _unmet(rows, ids.index(candidate["last"]) + 1, settings)
    candidate["last"] = ids[-1]
    if not fresh:
        path.write_text(json.dumps(candidate))
        return None
    texts = [t.text for t in fresh]
    from tokenizers import Tokenizer

    probs = []
    for folder in (versions[candidate["base"]].weights, Path(candidate["path"])):
        model = train.load(folder)
        model.eval()
        probs.append(finetune.predict(model, Tokenizer.from_file(str(folder / "tokenizer.json")), texts))
    counts = finetune.paired(fresh, probs[0], probs[1])
    total = {k: candidate["paired"][k] + counts[k] for k in counts}
    accept, (low, high) = decide(total, alpha=options.alpha, round_number=candidate["round"])
    candidate["paired"] = total
    log(f"learner: round {candidate['round']}'s candidate on {len(fresh)} more rated texts: right on "
        f"{total['after_right']} of all disagreements, the served version on {total['before_right']} "
        f"(share {low:.2f}-{high:.2f})")
    if not accept:
        path.write_text(json.dumps(candidate))
        return None
    result = {"at": datetime.now(UTC).isoformat(), "kind": "check", "round": candidate["round"],
              "base": candidate["base"], "rated": len(rows), "paired": total,
              "interval": [round(low, 4), round(high, 4)], "accepted": True}
    _serve(settings, options, control, Path(candidate["path"]), result)
    path.unlink()
    _append_round(settings, result)
    log("learner: " + _outcome(result, options))
    return result


def _unmet(rows: list[dict], cut: int, settings: LocalStackSettings) -> list:
    """The labelled texts of ``rows[cut:]``, each once, and none that came before ``cut``:
    streams repeat short texts ("Great product!"), and one the candidate was trained on would
    count for it."""
    known = {_normal(r["text"]) for r in rows[:cut]}
    fresh = []
    for item in _labelled(rows[cut:], settings):
        if (key := _normal(item.text)) not in known:
            known.add(key)
            fresh.append(item)
    return fresh


def _drop_candidate(settings: LocalStackSettings) -> None:
    """Forget the pending candidate, and its weights (223 MB; never installed)."""
    path = _store(settings) / "candidate.json"
    if path.exists():
        shutil.rmtree(json.loads(path.read_text())["path"], ignore_errors=True)
        path.unlink()


def _serve(settings: LocalStackSettings, options: LearnerOptions, control, out: Path, result: dict) -> None:
    """Install ``out`` as the next version; serve or shadow it (noted in ``result``)."""
    from models.bert import export

    number = export.next_version(settings.triton_model_repository)
    export.install(out, settings.triton_model_repository, version=number)
    if options.shadow is not None:
        control.shadow(number, share=options.shadow)
        result["shadowed"] = number
    else:
        control.load(number)
        result["served"] = number


def _append_round(settings: LocalStackSettings, result: dict) -> None:
    with (_store(settings) / "rounds.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")


def _outcome(result: dict, options: LearnerOptions) -> str:
    if "served" in result:
        return f"serving version {result['served']}"
    if "shadowed" in result:
        return (f"shadowing version {result['shadowed']} on {options.shadow:.0%} of the texts "
                f"(`streamsense model load {result['shadowed']}` serves it)")
    if result.get("candidate"):
        return "keeping the served version; the new one is tested on the rated reviews that come next"
    return "keeping the served version"
