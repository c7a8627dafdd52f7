"""Stage 2 of training: the served entity tagger, on the frozen encoder of stage 1.

The stage-1 model (:func:`models.bert.train.ensure_encoder`) is loaded, its encoder frozen, its
vectors computed once for ``tagger_tweets`` tweets, ``tagger_prose`` prose sentences and
``tagger_generated`` generated ones, and a :class:`~models.bert.network.ContextTagger`
(convolutions over the vectors, casing and neighbours) trained on them for ``tagger_epochs``
epochs: many more teacher-tagged texts and passes for the time than stage 1 affords.

This module is hashed into stage 2's cache key only: a change here (or to a ``tagger_*`` field of
:class:`~models.bert.train.TrainConfig`) retrains the tagger (about 8 minutes on 2 CPU cores),
never the encoder. Stage 2 seeds itself, so it gives the same tagger whether stage 1 ran in the
same process or came from the cache.
"""

from __future__ import annotations

import random
import time

import numpy as np

from models.bert import train
from models.bert.corpus import generated_sentences
from models.bert.pipeline import TAGS, encode

__all__ = ["tagger_examples", "train_tagger"]


def tagger_examples(config: train.TrainConfig, spans_of: dict, *, log=print) -> list[train.Example]:
    """Stage 2's texts: ``tagger_tweets`` training tweets, ``tagger_prose`` training prose
    sentences and ``tagger_generated`` sentences. ``spans_of``: the teacher's spans of texts
    stage 1 tagged already (text -> spans); the rest are tagged here."""
    splits = train.corpus_splits(config)
    rng = random.Random(config.seed + 1)
    tweets, prose = splits.train_tweets, splits.train_prose
    texts = [t.text for t in rng.sample(tweets, min(config.tagger_tweets, len(tweets)))]
    texts += [p.text for p in rng.sample(prose, min(config.tagger_prose, len(prose)))]
    spans_of = dict(spans_of)
    todo = sorted({t for t in texts if t not in spans_of})
    log(f"teacher-tagging {len(todo)} more tweets and prose sentences with spaCy")
    spans_of.update(zip(todo, train.teacher_spans(todo), strict=True))
    examples = [train.Example(t, None, spans_of[t]) for t in texts]
    examples += [train.Example(g.text, None, g.entities, teacher=False)
                 for g in generated_sentences(config.tagger_generated, seed=config.seed + 1, part="train")]
    return examples


def train_tagger(config: train.TrainConfig, tuned, tokenizer, spans_of: dict, *, log=print):
    """A copy of the stage-1 model ``tuned`` (encoder and sentiment head frozen) with a trained
    :class:`ContextTagger` in place of its per-token tagger."""
    import torch

    started = time.monotonic()
    random.seed(config.seed + 3)
    np.random.seed(config.seed + 3)
    torch.manual_seed(config.seed + 3)
    examples = tagger_examples(config, spans_of, log=log)
    model = train.network(tuned.encoder, config, tagger="context")
    # The sentiment head stays as stage 1 trained it with the encoder: refitting it on stage 2's
    # tweets (mean vectors) made plain statements ("The package arrived on Tuesday.") positive.
    model.sentiment.load_state_dict(tuned.sentiment.state_dict())
    for p in [*model.encoder.parameters(), *model.sentiment.parameters()]:
        p.requires_grad_(False)
    vectors, casings, tags, cached = _encoder_vectors(config, model, tokenizer, examples, started, log=log)
    params = list(model.tagger.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.tagger_learning_rate, weight_decay=0.01)
    rng = random.Random(config.seed + 2)
    batches = [train.length_batches(cached, rng, size=config.tagger_batch_size, length=lambda c: c[1])
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


def _encoder_vectors(config: train.TrainConfig, model, tokenizer, examples: list[train.Example],
                     started: float, *, log=print):
    """The frozen encoder's vectors, once per text, in one flat float16 tensor (token rows of all
    texts back to back; ``cached`` holds each text's first row and length): 60k texts take
    ~1.5 GB. Also each token's casing class and BIO tag."""
    import torch

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
                tags.append(torch.tensor(train.tag_ids(enc.offsets[k][:n], e.spans)))
                cached.append((rows, n))
                rows += n
            if (i // 64) % 100 == 0:
                log(f"tagger: encoder vectors {i + len(batch)}/{len(order)} "
                    f"({time.monotonic() - started:.0f}s)")
    return torch.cat(vectors), torch.cat(casings), torch.cat(tags), cached
