"""Fine-tune the served model on the user's own labelled texts (``streamsense train --labels``).

The user's file holds JSON lines with a ``text`` and either a ``label`` (negative / neutral /
positive) or a ``rating`` (1-2 negative, 3 neutral, 4-5 positive by default). A fifth of it,
split by text, is held out. The encoder and the sentiment head are fine-tuned on the rest,
mixed with as many of our own training tweets (``replay_fraction``) so the model keeps what it
knew; the entity tagger stays frozen and the encoder is held to the old model's entity tags by
distillation (a KL term on every token), so entities do not change with the sentiment. The
report gives sentiment before and after on the user's held-out part, on our held-out tweets and
customer tweets, and on the hand-written product reviews (on the review sets, "before" is what
the base version serves: with its neutral offset, ``calibration.py``; the new version has
none); the caller installs the result as a new model version (``models.bert.export.install``)
that ``streamsense model load`` serves.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.bert import data, train
from models.bert.evaluate import product_reviews, sentiment_scores
from models.bert.pipeline import SENTIMENT_LABELS, TAGS, encode, shift_probs
from models.online.sentiment import rating_label

__all__ = ["FIXTURE_SET", "REVIEW_SETS", "USER_SET", "FinetuneConfig", "finetune", "paired", "predict",
           "read_labels", "scores_as_served"]

# The report's evaluation sets of reviews (served through the reviews agent, with a version's
# offsets): the user's held-out texts, and the hand-written product reviews.
USER_SET, FIXTURE_SET = "yours (held out)", "product reviews (fixture)"
REVIEW_SETS = (USER_SET, FIXTURE_SET)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 2
    learning_rate: float = 3e-5
    head_learning_rate: float = 5e-4
    batch_size: int = 16
    max_length: int = 256  # what Triton reads (max_tokens): long reviews end with their verdict
    heldout_fraction: float = 0.2
    replay_fraction: float = 0.5  # our labelled tweets per user text, mixed in
    tag_distill_weight: float = 1.0
    eval_tweets: int = 1000
    seed: int = 13


def read_labels(path: Path, *, negative_max: float = 2.0, positive_min: float = 4.0
                ) -> tuple[list[data.LabelledText], list[str]]:
    """The labelled texts of a JSON-lines file, and one problem per line that was left out."""
    texts, problems = [], []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row["text"].strip() if isinstance(row.get("text"), str) else ""
                label = row.get("label")
                rating = row.get("rating")
                if label is None and isinstance(rating, int | float) and not isinstance(rating, bool):
                    index = rating_label(rating, negative_max=negative_max, positive_min=positive_min)
                    label = None if index is None else SENTIMENT_LABELS[index]
            except (json.JSONDecodeError, AttributeError, TypeError) as exc:
                problems.append(f"line {n}: not a JSON object ({exc})")
                continue
            if not text or label not in SENTIMENT_LABELS:
                problems.append(f"line {n}: needs a non-empty text, and a label in {SENTIMENT_LABELS} "
                                "or a rating")
                continue
            group = hashlib.sha256(text.lower().encode()).hexdigest()[:16]
            texts.append(data.LabelledText(group=f"user-{group}", text=text, label=label))
    return texts, problems


def finetune(base: Path, labels: list[data.LabelledText], out: Path, *,
             config: FinetuneConfig = FinetuneConfig(), heldout: list[data.LabelledText] | None = None,
             served_offsets: np.ndarray | None = None, log=print) -> dict:
    """Fine-tune the model in ``base`` (a folder :func:`models.bert.train.ensure_trained`
    writes) on ``labels``; write the result to ``out`` in the same layout; return the report.
    ``served_offsets``: the log offsets the base version serves reviews with
    (:func:`models.bert.calibration.served_log_offsets`), in its "before" scores of the review sets.

    ``heldout``: the user's texts to evaluate on (default: a fifth of ``labels``, split by text).
    The report's ``paired`` counts, on the polar ones, the texts only the new model gets right
    (``after_right``) and only the old one does (``before_right``): what a paired test needs."""
    import torch

    started = time.monotonic()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    meta = json.loads((base / "complete.json").read_text())
    base_config = train.TrainConfig(**meta["config"])
    if heldout is None:
        user_train, user_heldout = train.split_corpus(labels, heldout_fraction=config.heldout_fraction,
                                                      seed=config.seed)
    else:
        user_train, user_heldout = labels, heldout
    if not user_train or not user_heldout:
        raise ValueError(f"need labelled texts for both training and held-out ({len(labels)} given)")
    replay = _replay(base_config, int(len(user_train) * config.replay_fraction), config.seed)
    examples = [(t.text, SENTIMENT_LABELS.index(t.label)) for t in user_train + replay]
    sets = _evaluation_sets(base_config, user_heldout, config)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    teacher, model = train.load(base), train.load(base)
    before, before_probs = _scores(teacher, tokenizer, sets, config, offsets=served_offsets)
    log(f"before: {_brief(before)}")
    for p in [*teacher.parameters(), *model.tagger.parameters()]:
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW([
        {"params": model.encoder.parameters(), "lr": config.learning_rate},
        {"params": model.sentiment.parameters(), "lr": config.head_learning_rate}], weight_decay=0.01)
    rng = random.Random(config.seed)
    total = config.epochs * ((len(examples) + config.batch_size - 1) // config.batch_size)
    step = 0
    for epoch in range(config.epochs):
        model.train()
        model.tagger.eval()
        for batch in train.length_batches(examples, rng, size=config.batch_size, length=lambda e: len(e[0])):
            loss = _loss(model, teacher, tokenizer, batch, config)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % 20 == 0 or step == total:
                elapsed = time.monotonic() - started
                log(f"epoch {epoch + 1}/{config.epochs} step {step}/{total} loss {loss.item():.3f} "
                    f"({elapsed:.0f}s, ~{elapsed / step * (total - step):.0f}s left)")
    model.eval()
    after, after_probs = _scores(model, tokenizer, sets, config)
    log(f"after: {_brief(after)}")
    _save(model, base, out, meta, labels, config)
    report = {"before": before, "after": after, "paired": paired(user_heldout, before_probs, after_probs),
              "user_train": len(user_train),
              "user_heldout": len(user_heldout), "replay": len(replay),
              "seconds": round(time.monotonic() - started)}
    (out / "finetune.json").write_text(json.dumps(report, indent=2))
    return report


def _replay(config: train.TrainConfig, n: int, seed: int) -> list[data.LabelledText]:
    """``n`` of the base model's own kinds of training text (never our held-out ones): half
    tweets, half customer tweets, or all tweets for a model trained without customer tweets
    (replay keeps what the model knew; it must not teach it a domain it never saw)."""
    splits = train.corpus_splits(config)
    pools = [splits.train_tweets] + ([splits.train_customers] if config.customer_tweets_per_label else [])
    rng = random.Random(seed + 7)
    return [t for pool in pools for t in rng.sample(pool, min(n // len(pools), len(pool)))]


def _evaluation_sets(config: train.TrainConfig, user_heldout: list, ft: FinetuneConfig) -> dict[str, list]:
    rng = random.Random(ft.seed + 11)
    sets = {USER_SET: user_heldout}
    splits = train.corpus_splits(config)
    for name, heldout in (("our tweets (held out)", splits.heldout_tweets),
                          ("customer tweets (held out)", splits.heldout_customers)):
        sets[name] = rng.sample(heldout, min(ft.eval_tweets, len(heldout)))
    sets[FIXTURE_SET] = product_reviews()
    return sets


def _forward(model, tokenizer, texts: list[str], max_length: int):
    import torch

    enc = encode(tokenizer, texts, max_length=max_length)
    ids, mask = torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)
    return model(ids, mask, torch.from_numpy(enc.casing)), mask


def _loss(model, teacher, tokenizer, batch, config: FinetuneConfig):
    import torch

    (sentiment, tags), mask = _forward(model, tokenizer, [t for t, _ in batch], config.max_length)
    with torch.no_grad():
        (_, teacher_tags), _ = _forward(teacher, tokenizer, [t for t, _ in batch], config.max_length)
    target = torch.tensor([label for _, label in batch])
    loss = torch.nn.functional.cross_entropy(sentiment, target)
    # Entities stay as they were: KL(teacher || student) over each real token's tag distribution.
    kl = torch.nn.functional.kl_div(tags.log_softmax(-1), teacher_tags.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1)
    tokens = mask.to(kl.dtype)
    return loss + config.tag_distill_weight * (kl * tokens).sum() / tokens.sum().clamp(min=1.0)


def paired(items: list, before: np.ndarray, after: np.ndarray) -> dict[str, int]:
    """On the polar ``items``: how many only ``after``'s probabilities call right
    (``after_right``), how many only ``before``'s (``before_right``), and how many there were."""
    pos, neg = SENTIMENT_LABELS.index("positive"), SENTIMENT_LABELS.index("negative")
    counts = {"after_right": 0, "before_right": 0, "polar": 0}
    for item, b, a in zip(items, before, after, strict=True):
        if item.label == "neutral":
            continue
        truth = item.label == "positive"
        b_right, a_right = (b[pos] > b[neg]) == truth, (a[pos] > a[neg]) == truth
        counts["polar"] += 1
        counts["after_right"] += int(a_right and not b_right)
        counts["before_right"] += int(b_right and not a_right)
    return counts


def predict(model, tokenizer, texts: list[str], *, max_length: int = FinetuneConfig.max_length) -> np.ndarray:
    """Sentiment probabilities (texts x labels) of a model :func:`models.bert.train.load` read."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = np.zeros((len(texts), len(SENTIMENT_LABELS)), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            (sentiment, _), _ = _forward(model, tokenizer, [texts[i] for i in idx], max_length)
            probs[idx] = sentiment.softmax(-1).numpy()
    return probs


def _scores(model, tokenizer, sets: dict[str, list], config: FinetuneConfig, *,
            offsets: np.ndarray | None = None) -> tuple[dict[str, dict], np.ndarray]:
    """Scores per set as served (``offsets`` on the review sets), and the user's held-out
    probabilities (the first set; the polar calls ``paired`` counts do not move with them)."""
    probs = {name: predict(model, tokenizer, [t.text for t in items], max_length=config.max_length)
             for name, items in sets.items()}
    return scores_as_served(sets, probs, offsets), next(iter(probs.values()))


def scores_as_served(sets: dict[str, list], probs: dict[str, np.ndarray], offsets: np.ndarray | None
                     ) -> dict[str, dict]:
    """:func:`~models.bert.evaluate.sentiment_scores` of each set's probabilities, with the
    version's log ``offsets`` added on the :data:`REVIEW_SETS` (what the reviews agent serves)."""
    return {name: sentiment_scores([t.label for t in items],
                                   shift_probs(probs[name], offsets) if name in REVIEW_SETS else probs[name],
                                   [t.group for t in items])
            for name, items in sets.items()}


def _brief(scores: dict[str, dict]) -> str:
    return "; ".join(f"{name} polar {s['polar_accuracy']:.3f}, 3-class {s['accuracy']:.3f}"
                     for name, s in scores.items())


def _save(model, base: Path, out: Path, meta: dict, labels: list, config: FinetuneConfig) -> None:
    import torch

    digest = hashlib.sha256(json.dumps([meta["key"], asdict(config), [(t.text, t.label) for t in labels]])
                            .encode()).hexdigest()[:12]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "weights.pt")
    for name in ("tokenizer.json", "encoder_config.json"):
        shutil.copy2(base / name, tmp / name)
    (tmp / "complete.json").write_text(json.dumps({
        **meta, "key": f"{meta['key']}-ft-{digest}", "base": str(base), "finetune": asdict(config),
        "tags": list(TAGS), "sentiment_labels": list(SENTIMENT_LABELS)}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
