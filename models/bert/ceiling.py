"""How well can any student imitate the spaCy teacher? A reference for the NER score.

``python -m models.bert.ceiling --corpus tweets|prose`` trains a fresh spaCy NER of the
teacher's own kind (the same case-sensitive hash-embedding CNN and transition parser, no
pretraining) on the teacher's entities for ``--texts`` training texts of that corpus, and
prints its entity F1 against the teacher on 1,500 texts of the held-out split ``make eval``
draws from (tweets split by tweet id, prose by article) after each epoch. It takes about 10
minutes on two cores and is not part of ``make eval``.

The teacher is erratic on tweets (all-caps words, hashtags, game titles) and, less so, on
encyclopaedia prose far from its OntoNotes training (mythology, chemistry, ASCII control
codes); what it learned from OntoNotes cannot be fully recovered from its outputs on tens of
thousands of texts, even by a student that sees exactly what it sees. This student's score is
an estimate of what imitation from this data reaches; our BERT tagger is read against it.
"""

from __future__ import annotations

import argparse
import random
import time

from models.bert import data, train
from models.bert.evaluate import entity_f1

__all__ = ["main", "spacy_student"]


def spacy_student(corpus: str, texts: int, epochs: int, *, heldout: int = 1500, seed: int = 13,
                  log=print) -> list[float]:
    """Entity F1 against the teacher on ``heldout`` held-out texts of ``corpus`` after each epoch."""
    import spacy
    from spacy.training import Example

    config = train.TrainConfig()
    source = {"tweets": data.tweets, "prose": data.prose}[corpus]()
    trained, held = train.split_corpus(source, heldout_fraction=config.heldout_fraction, seed=config.seed)
    rng = random.Random(seed)
    sample = [t.text for t in rng.sample(trained, min(texts, len(trained)))]
    held_texts = [t.text for t in random.Random(seed + 1).sample(held, min(heldout, len(held)))]
    started = time.monotonic()
    spans, gold = train.teacher_spans(sample), train.teacher_spans(held_texts)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for label in ("PER", "ORG", "LOC", "PRODUCT"):
        ner.add_label(label)
    examples = []
    for text, entities in zip(sample, spans, strict=True):
        doc = nlp.make_doc(text)
        try:
            examples.append(Example.from_dict(doc, {"entities": [(s.start, s.end, s.type)
                                                                 for s in entities]}))
        except ValueError:  # a teacher span that does not fall on this tokenizer's token boundaries
            continue
    optimizer = nlp.initialize(lambda: examples)
    scores = []
    for epoch in range(epochs):
        rng.shuffle(examples)
        for i in range(0, len(examples), 64):
            nlp.update(examples[i:i + 64], sgd=optimizer, drop=0.1)
        pred = [[{"start": e.start_char, "end": e.end_char, "type": e.label_} for e in doc.ents]
                for doc in nlp.pipe(held_texts)]
        scores.append(entity_f1(gold, pred)["f1"])
        log(f"epoch {epoch + 1}/{epochs}: F1 against the teacher on {len(held_texts)} held-out {corpus} "
            f"{scores[-1]:.3f} ({time.monotonic() - started:.0f}s)")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=("tweets", "prose"), default="tweets")
    parser.add_argument("--texts", type=int, default=20_000, help="training texts (prose has ~16,500)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    scores = spacy_student(args.corpus, args.texts, args.epochs)
    print(f"best {max(scores):.3f}")


if __name__ == "__main__":
    main()
