"""Accuracy of the served model on held-out data, next to the baselines.

The model is evaluated as Triton serves it: the exported ONNX graph run by onnxruntime with
``pipeline.py``'s pre- and post-processing. Sentiment: held-out tweets (split by tweet id) and
drugs.com reviews (out of domain), against VADER. Entities: entity-level F1 (exact span and
type) against the spaCy teacher on held-out prose (Wikipedia and news articles neither training
stage saw), on held-out tweets and on generated sentences from held-out templates and names
(also scored against their construction), and against the hand-labelled gold set in
``tests/fixtures/ner_gold.txt`` (spaCy itself is the baseline there).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from models.bert import data, train
from models.bert.corpus import Span, generated_sentences
from models.bert.export import export_onnx
from models.bert.pipeline import SENTIMENT_LABELS, decode_entities, encode

__all__ = ["OnnxAnalyzer", "entity_f1", "evaluate", "parse_gold", "sentiment_scores"]

GOLD = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ner_gold.txt"


class OnnxAnalyzer:
    """Sentiment probabilities and entity spans for texts, exactly as the Triton model computes them."""

    def __init__(self, folder: Path, *, max_tokens: int = 256) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(export_onnx(folder)), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.max_tokens = max_tokens

    def __call__(self, texts: list[str], batch: int = 64) -> tuple[np.ndarray, list[list[dict]]]:
        probs = np.zeros((len(texts), len(SENTIMENT_LABELS)), dtype=np.float32)
        entities: list[list[dict]] = [[] for _ in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = encode(self.tokenizer, [texts[i] for i in idx], max_length=self.max_tokens)
            sent, tags = self.session.run(None, {"input_ids": enc.input_ids,
                                                 "attention_mask": enc.attention_mask,
                                                 "casing": enc.casing})
            for k, i in enumerate(idx):
                probs[i] = sent[k]
                entities[i] = decode_entities(texts[i], tags[k], enc.offsets[k])
        return probs, entities


def sentiment_scores(gold: list[str], probs: np.ndarray, groups: list[str] | None = None) -> dict[str, float]:
    """3-class accuracy and macro-F1, and accuracy on polar texts (negative vs positive).

    ``polar_se`` is the standard error of the polar accuracy by a bootstrap over ``groups``
    (augmented copies of one tweet are correlated: resampling single texts would understate it).

    >>> r = sentiment_scores(["positive", "negative", "neutral"], np.eye(3)[[2, 2, 1]], ["a", "b", "c"])
    >>> r["accuracy"], r["polar_accuracy"], r["polar_se"] > 0
    (0.6666666666666666, 0.5, True)
    """
    pred = [SENTIMENT_LABELS[i] for i in probs.argmax(1)]
    f1s = []
    for label in SENTIMENT_LABELS:
        tp = sum(g == p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, pred, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    neg, pos = SENTIMENT_LABELS.index("negative"), SENTIMENT_LABELS.index("positive")
    polar = [(g, "positive" if p[pos] > p[neg] else "negative")
             for g, p in zip(gold, probs, strict=True) if g != "neutral"]
    hits = np.array([g == p for g, p in polar])
    polar_groups = [k for k, g in zip(groups or range(len(gold)), gold, strict=True) if g != "neutral"]
    return {"n": len(gold), "accuracy": float(np.mean([g == p for g, p in zip(gold, pred, strict=True)])),
            "macro_f1": float(np.mean(f1s)),
            "polar_n": len(polar), "polar_accuracy": float(hits.mean()),
            "polar_se": _group_bootstrap_se(hits, polar_groups)}


def _group_bootstrap_se(hits: np.ndarray, groups: list, rounds: int = 1000, seed: int = 0) -> float:
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    blocks = list(members.values())
    rng = np.random.default_rng(seed)
    means = [hits[np.concatenate([blocks[k] for k in rng.integers(0, len(blocks), len(blocks))])].mean()
             for _ in range(rounds)]
    return float(np.std(means))


def entity_f1(gold: list[tuple[Span, ...]], pred: list[list[dict]]) -> dict[str, float]:
    """Entity-level precision, recall and F1: a hit needs the exact span and type."""
    g = Counter((i, s.start, s.end, s.type) for i, spans in enumerate(gold) for s in spans)
    p = Counter((i, e["start"], e["end"], e["type"]) for i, ents in enumerate(pred) for e in ents)
    tp = sum((g & p).values())
    precision = tp / max(1, sum(p.values()))
    recall = tp / max(1, sum(g.values()))
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"gold_entities": sum(g.values()), "precision": precision, "recall": recall, "f1": f1}


def parse_gold(path: Path = GOLD) -> list[tuple[str, tuple[Span, ...]]]:
    """``[Apple](ORG) is ...`` lines -> (text, spans)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, spans, pos = "", [], 0
        for m in re.finditer(r"\[([^\]]+)\]\((PER|ORG|LOC|PRODUCT)\)", line):
            text += line[pos:m.start()]
            spans.append(Span(len(text), len(text) + len(m.group(1)), m.group(2), m.group(1)))
            text += m.group(1)
            pos = m.end()
        out.append((text + line[pos:], tuple(spans)))
    return out


def _vader(texts: list[str]) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    out = np.zeros((len(texts), 3), dtype=np.float32)
    for i, text in enumerate(texts):
        c = analyzer.polarity_scores(text)["compound"]
        # VADER's documented thresholds: >= 0.05 positive, <= -0.05 negative.
        out[i, 0 if c <= -0.05 else 2 if c >= 0.05 else 1] = 1.0
        # Polar accuracy compares the negative and positive columns: the sign of c breaks ties.
        out[i, 0] += max(0.0, -c) * 1e-3
        out[i, 2] += max(0.0, c) * 1e-3
    return out


def evaluate(config: train.TrainConfig = train.TrainConfig(), *, tweets_limit: int = 4000) -> dict:
    folder = train.ensure_trained(config)
    analyzer = OnnxAnalyzer(folder)
    _, heldout = train.split_corpus(data.tweets(), heldout_fraction=config.heldout_fraction,
                                    seed=config.seed)
    rng = np.random.default_rng(config.seed)
    heldout = [heldout[i] for i in rng.permutation(len(heldout))[:tweets_limit]]
    drugs = data.drug_reviews()
    tweet_texts, drug_texts = [t.text for t in heldout], [t.text for t in drugs]
    tweet_gold, tweet_groups = [t.label for t in heldout], [t.group for t in heldout]
    drug_gold = [t.label for t in drugs]
    tweet_probs, tweet_ents = analyzer(tweet_texts)
    drug_probs, _ = analyzer(drug_texts)
    prose_texts = [p.text for p in train.heldout_prose(config)]
    _, prose_ents = analyzer(prose_texts)
    # Templates and names the tagger never saw (corpus.py holds every fifth one out).
    generated = generated_sentences(500, seed=config.seed + 1000, part="heldout")
    _, gen_ents = analyzer([g.text for g in generated])
    gold = parse_gold()
    _, gold_ents = analyzer([t for t, _ in gold])
    teacher_gold = [[{"start": s.start, "end": s.end, "type": s.type} for s in spans]
                    for spans in train.teacher_spans([t for t, _ in gold])]
    results = {
        "model": folder.name,
        "sentiment": {
            "tweets_heldout": sentiment_scores(tweet_gold, tweet_probs, tweet_groups),
            "drug_reviews": sentiment_scores(drug_gold, drug_probs),
            "vader_tweets_heldout": sentiment_scores(tweet_gold, _vader(tweet_texts), tweet_groups),
            "vader_drug_reviews": sentiment_scores(drug_gold, _vader(drug_texts)),
        },
        "entities": {
            "vs_teacher_prose_heldout": entity_f1(train.teacher_spans(prose_texts), prose_ents),
            "vs_teacher_tweets_heldout": entity_f1(train.teacher_spans(tweet_texts), tweet_ents),
            "vs_teacher_generated_heldout": entity_f1(
                train.teacher_spans([g.text for g in generated]), gen_ents),
            "vs_construction_generated_heldout": entity_f1([g.entities for g in generated], gen_ents),
            "gold_set": entity_f1([s for _, s in gold], gold_ents),
            "spacy_on_gold_set": entity_f1([s for _, s in gold], teacher_gold),
        },
    }
    (folder / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    results = evaluate()
    console = Console()
    table = Table("sentiment set", "n", "accuracy", "macro-F1", "polar n", "polar accuracy (SE)",
                  title=f"sentiment ({results['model']})")
    for name, r in results["sentiment"].items():
        table.add_row(name, str(r["n"]), f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      str(r["polar_n"]), f"{r['polar_accuracy']:.3f} ({r['polar_se']:.3f})")
    console.print(table)
    table = Table("entity set", "gold entities", "precision", "recall", "F1", title="entities")
    for name, r in results["entities"].items():
        table.add_row(name, str(r["gold_entities"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                      f"{r['f1']:.3f}")
    console.print(table)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
