"""The served model's neutral offset for reviews: a prior correction fitted on hand-labelled reviews.

The model learned how often text is neutral from its training corpora, tweets and customer
tweets, where about a third of the texts are neutral. Product reviews are mostly polar, and calm,
well-formed complaints or praise then come out neutral more often than they should (the
hand-written fixture: 14% of its negatives; the calibration reviews below: 36% of negatives and
22% of positives). The correction is one number: ``delta`` added to log P(neutral) before the
label is chosen (then renormalised, :func:`pipeline.shift_probs`). Negative against positive
never changes, so polar accuracy is untouched by construction.

``delta`` is the maximum-likelihood value on ``calibration_reviews.tsv`` (hand-written reviews of
other products than the evaluation fixture, never trained on): the one at which the model's
expected number of neutral texts there equals the number labelled neutral, found by bisection
(the log-likelihood is concave in ``delta``). It is a prior correction, not an accuracy tuning:
it trades neutral recall for fewer polar reviews called neutral (BENCHMARKS.md, "Sentiment on
your domain", has both on every set).

It applies to reviews only (``DOMAIN``): ``make setup`` fits it once per trained model and
writes it into version 1's ``model_info.json`` under ``sentiment_log_offsets.reviews``; Triton
applies it to the requests whose ``domain`` parameter is ``reviews`` (the worker's reviews
agent sends it), never to news, whose share of neutral text is the corpora's kind, not the
reviews'. ``make eval`` reports the review sets with it. Versions fine-tuned on a user's own
labels learn that domain's balance and carry no offset.

>>> probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7]])
>>> delta = fit_neutral_offset(probs, ["negative", "positive", "positive"])
>>> round(delta, 2), shift(probs, delta).argmax(axis=1).tolist()
(-2.0, [0, 2, 2])
>>> delta = fit_neutral_offset(probs, ["negative", "neutral", "neutral"])  # two neutral: expect two
>>> round(delta, 3), round(float(shift(probs, delta)[:, 1].sum()), 6)
(1.494, 2.0)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.bert import data
from models.bert.pipeline import SENTIMENT_LABELS, shift_probs

__all__ = ["CALIBRATION_REVIEWS", "DOMAIN", "LIMIT", "calibration_reviews", "fit_neutral_offset",
           "log_offsets", "neutral_offset", "served_log_offsets", "shift"]

CALIBRATION_REVIEWS = Path(__file__).with_name("calibration_reviews.tsv")
DOMAIN = "reviews"  # the texts the offset is for: the worker's reviews agent names its requests so
LIMIT = 2.0  # |delta| at most: a factor of e^2 ~ 7.4 on the neutral odds
_NEUTRAL = SENTIMENT_LABELS.index("neutral")
_FILE = "calibration.json"


def calibration_reviews(path: Path = CALIBRATION_REVIEWS) -> list[data.LabelledText]:
    """``label<TAB>text`` lines, ``#`` comments (the format of the evaluation fixture)."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, _, text = line.partition("\t")
        if label not in SENTIMENT_LABELS or not text.strip():
            raise ValueError(f"{path}:{number}: expected 'label<TAB>text' with a label of {SENTIMENT_LABELS}")
        items.append(data.LabelledText(text=text.strip(), label=label, group="calibration"))
    return items


def shift(probs: np.ndarray, delta: float) -> np.ndarray:
    """``probs`` (texts x classes) with ``delta`` added to log P(neutral)."""
    return shift_probs(probs, log_offsets(delta))


def log_offsets(delta: float) -> np.ndarray:
    offsets = np.zeros(len(SENTIMENT_LABELS))
    offsets[_NEUTRAL] = delta
    return offsets


def served_log_offsets(version_dir: Path) -> np.ndarray | None:
    """The log offsets an installed model version serves reviews with (its ``model_info.json``;
    version 1 has the fitted neutral offset), None when it has none."""
    info = json.loads((version_dir / "model_info.json").read_text())
    neutral = info.get("sentiment_log_offsets", {}).get(DOMAIN, {}).get("neutral")
    return None if neutral is None else log_offsets(float(neutral))


def fit_neutral_offset(probs: np.ndarray, labels: Sequence[str], *, limit: float = LIMIT) -> float:
    """The ``delta`` in [-limit, limit] that maximises the log-likelihood of ``labels``.

    Its derivative is (texts labelled neutral) - (sum of shifted P(neutral)), decreasing in
    ``delta``: bisection finds the zero, or the bound it lies beyond."""
    if len(labels) != len(probs) or not len(labels):
        raise ValueError(f"{len(probs)} probability rows for {len(labels)} labels")
    target = sum(label == "neutral" for label in labels)

    def excess(delta: float) -> float:
        return float(shift(probs, delta)[:, _NEUTRAL].sum()) - target

    low, high = -limit, limit
    if excess(low) >= 0:
        return low
    if excess(high) <= 0:
        return high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return (low + high) / 2


def neutral_offset(folder: Path, analyzer=None) -> float:
    """The fitted ``delta`` of the trained model in ``folder``, computed once and kept there
    (``calibration.json``, keyed by the calibration file's digest, with the accuracy on it
    before and after). ``analyzer``: texts -> (probs, entities), e.g. ``evaluate.OnnxAnalyzer``."""
    cached = folder / _FILE
    digest = hashlib.sha256(CALIBRATION_REVIEWS.read_bytes()).hexdigest()[:12]
    if cached.exists():
        stored = json.loads(cached.read_text())
        if stored.get("calibration_set") == digest:
            return float(stored["neutral_offset"])
    items = calibration_reviews()
    if analyzer is None:
        from models.bert.evaluate import OnnxAnalyzer

        analyzer = OnnxAnalyzer(folder)
    probs, _ = analyzer([t.text for t in items])
    labels = [t.label for t in items]
    delta = fit_neutral_offset(probs, labels)
    gold = [SENTIMENT_LABELS.index(x) for x in labels]
    accuracy = {f"accuracy_{when}": round(float(np.mean(p.argmax(axis=1) == gold)), 4)
                for when, p in (("before", probs), ("after", shift(probs, delta)))}
    cached.write_text(json.dumps({"neutral_offset": round(delta, 4), "calibration_set": digest,
                                  "texts": len(items), "labelled_neutral": labels.count("neutral"),
                                  **accuracy}, indent=2) + "\n")
    return round(delta, 4)
