"""Accuracy of the served model on held-out data, next to the baselines.

The model is evaluated as Triton serves version 1: the exported ONNX graph run by onnxruntime with
``pipeline.py``'s pre- and post-processing, reviews with its neutral offset (``calibration.py``).
Sentiment: held-out tweets (split by tweet id), held-out customer tweets (split by text), drugs.com
reviews (out of domain) and the hand-written product reviews in
``tests/fixtures/product_reviews.tsv`` (never trained on or calibrated on), each against VADER,
with how often positives and negatives are called neutral. Entities: entity-level F1 (exact span and
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

from models.bert import calibration, data, train
from models.bert.corpus import Span, generated_sentences
from models.bert.export import export_onnx
from models.bert.pipeline import SENTIMENT_LABELS, decode_entities, encode, shift_probs

__all__ = ["OnnxAnalyzer", "entity_f1", "evaluate", "parse_gold", "product_reviews", "sentiment_scores",
           "sentiment_sets"]

GOLD = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ner_gold.txt"
REVIEWS = GOLD.with_name("product_reviews.tsv")
REVIEW_SETS = ("product_reviews", "drug_reviews")  # served with the reviews' neutral offset


class OnnxAnalyzer:
    """Sentiment probabilities and entity spans for texts, exactly as the Triton model computes them."""

    def __init__(self, folder: Path, *, max_tokens: int = 256, log_offsets: np.ndarray | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(export_onnx(folder)), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.max_tokens = max_tokens
        self.log_offsets = log_offsets  # the served version's prior correction (calibration.py)

    def __call__(self, texts: list[str], batch: int = 64) -> tuple[np.ndarray, list[list[dict]]]:
        probs = np.zeros((len(texts), len(SENTIMENT_LABELS)), dtype=np.float32)
        entities: list[list[dict]] = [[] for _ in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = encode(self.tokenizer, [texts[i] for i in idx], max_length=self.max_tokens)
            sent, tags = self.session.run(["sentiment_probs", "tag_probs"], {
                "input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "casing": enc.casing})
            sent = shift_probs(sent, self.log_offsets)
            for k, i in enumerate(idx):
                probs[i] = sent[k]
                entities[i] = decode_entities(texts[i], tags[k], enc.offsets[k])
        return probs, entities


def sentiment_scores(gold: list[str], probs: np.ndarray, groups: list[str] | None = None) -> dict[str, float]:
    """3-class accuracy and macro-F1, accuracy on polar texts (negative vs positive), and the
    share of positives and of negatives called neutral.

    ``polar_se`` is the standard error of the polar accuracy by a bootstrap over ``groups``
    (augmented copies of one tweet are correlated: resampling single texts would understate it).

    >>> r = sentiment_scores(["positive", "negative", "neutral"], np.eye(3)[[2, 2, 1]], ["a", "b", "c"])
    >>> r["accuracy"], r["polar_accuracy"], r["polar_se"] > 0, r["positive_as_neutral"]
    (0.6666666666666666, 0.5, True, 0.0)
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
    pairs = list(zip(gold, pred, strict=True))
    as_neutral = {f"{label}_as_neutral": float(np.mean([p == "neutral" for g, p in pairs if g == label]
                                                       or [0.0])) for label in ("positive", "negative")}
    return {"n": len(gold), "accuracy": float(np.mean([g == p for g, p in zip(gold, pred, strict=True)])),
            "macro_f1": float(np.mean(f1s)), **as_neutral,
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


def product_reviews(path: Path = REVIEWS) -> list[data.LabelledText]:
    """The hand-written product reviews: ``label<TAB>text`` lines, ``#`` comments."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            label, text = line.split("\t", 1)
            if label not in data.LABELS:
                raise ValueError(f"{path}:{n}: label {label!r} is not one of {data.LABELS}")
            out.append(data.LabelledText(group=f"review-{n}", text=text.strip(), label=label))
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


def sentiment_sets(config: train.TrainConfig, *, tweets_limit: int = 4000
                   ) -> dict[str, list[data.LabelledText]]:
    """Every sentiment set ``make eval`` reports, by name: the held-out parts of both training
    corpora (tweets sampled down to ``tweets_limit``), and two sets never trained on."""
    rng = np.random.default_rng(config.seed)
    out = {}
    splits = train.corpus_splits(config)
    for name, heldout in (("tweets_heldout", splits.heldout_tweets),
                          ("customer_tweets_heldout", splits.heldout_customers)):
        out[name] = [heldout[i] for i in rng.permutation(len(heldout))[:tweets_limit]]
    out["product_reviews"] = product_reviews()
    out["drug_reviews"] = data.drug_reviews()
    return out


def evaluate(config: train.TrainConfig = train.TrainConfig(), *, tweets_limit: int = 4000) -> dict:
    folder = train.ensure_trained(config)
    analyzer = OnnxAnalyzer(folder)
    # As version 1 serves them: reviews with the neutral offset fitted on the calibration
    # reviews (what the worker's reviews agent asks Triton for), tweets without.
    neutral_offset = calibration.neutral_offset(folder, analyzer)
    sentiment, texts_of = {}, {}
    for name, items in sentiment_sets(config, tweets_limit=tweets_limit).items():
        texts, gold, groups = [t.text for t in items], [t.label for t in items], [t.group for t in items]
        analyzer.log_offsets = calibration.log_offsets(neutral_offset) if name in REVIEW_SETS else None
        probs, ents = analyzer(texts)
        analyzer.log_offsets = None
        texts_of[name] = (texts, ents)
        sentiment[name] = sentiment_scores(gold, probs, groups)
        sentiment[f"vader_{name}"] = sentiment_scores(gold, _vader(texts), groups)
    tweet_texts, tweet_ents = texts_of["tweets_heldout"]
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
        "neutral_offset": neutral_offset,
        "sentiment": sentiment,
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
                  "positive -> neutral", "negative -> neutral",
                  title=f"sentiment ({results['model']}; reviews with neutral offset "
                        f"{results['neutral_offset']:+.2f})")
    for name, r in results["sentiment"].items():
        table.add_row(name, str(r["n"]), f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      str(r["polar_n"]), f"{r['polar_accuracy']:.3f} ({r['polar_se']:.3f})",
                      f"{r['positive_as_neutral']:.3f}", f"{r['negative_as_neutral']:.3f}")
    console.print(table)
    table = Table("entity set", "gold entities", "precision", "recall", "F1", title="entities")
    for name, r in results["entities"].items():
        table.add_row(name, str(r["gold_entities"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                      f"{r['f1']:.3f}")
    console.print(table)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
