"""The served BERT model (triton_repo/text_analysis) on the real Triton server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.testing.stack import infer_texts

pytestmark = pytest.mark.integration


def analyse(settings: Settings, texts: list[str], domain: str | None = None) -> list[dict]:
    parameters = None if domain is None else {"domain": domain}
    return [json.loads(v[0]) for v in infer_texts(settings.triton_url, "text_analysis", texts, "ANALYSIS",
                                                  parameters=parameters)]


POSITIVE = ["Absolutely love this blender, it works perfectly and was worth every penny.",
            "Great quality, fast delivery, I would happily buy it again.",
            "Best headphones I have ever owned, the sound is amazing."]
NEGATIVE = ["Terrible product, it broke after two days and support ignored me.",
            "Complete waste of money, the worst purchase I have made this year.",
            "Awful. The screen cracked on the first day and the refund never came."]
NEUTRAL = ["The package arrived on Tuesday.", "It comes in a blue box with a manual."]


def test_clear_reviews_get_the_right_sentiment(triton: Settings):
    results = analyse(triton, POSITIVE + NEGATIVE + NEUTRAL)
    labels = [r["sentiment"]["label"] for r in results]
    assert labels[:3] == ["positive"] * 3, results[:3]
    assert labels[3:6] == ["negative"] * 3, results[3:6]
    assert labels[6:] == ["neutral"] * 2, results[6:]
    for r in results:
        probs = r["sentiment"]["probs"]
        assert set(probs) == {"negative", "neutral", "positive"}
        assert abs(sum(probs.values()) - 1) < 1e-3 and r["sentiment"]["score"] == max(probs.values())
        assert r["model"].startswith("minilm-l6-multitask-")


def test_entities_come_back_as_typed_spans_with_offsets(triton: Settings):
    text = "Apple is opening a new store in Berlin, said Tim Cook."
    [result] = analyse(triton, [text])
    found = {(e["text"], e["type"]) for e in result["entities"]}
    assert {("Apple", "ORG"), ("Berlin", "LOC"), ("Tim Cook", "PER")} <= found, result["entities"]
    for e in result["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1


def test_a_batch_of_64_returns_64_results_in_order(triton: Settings):
    texts = [f"Review {i}: " + (POSITIVE + NEGATIVE)[i % 6] for i in range(64)]
    results = analyse(triton, texts)
    assert len(results) == 64
    for i, r in enumerate(results):
        assert r["sentiment"]["label"] == ("positive" if i % 6 < 3 else "negative")


def test_empty_and_very_long_texts_have_defined_results(triton: Settings):
    from tokenizers import Tokenizer

    from models.bert.export import MODEL_NAME

    sentence = "The battery lasts two days and the screen is bright in sunlight. "
    long_text = sentence * 2000
    # What the model keeps of a long text: its first 256 tokens (254 plus [CLS] and [SEP]).
    tokenizer = Tokenizer.from_file(str(triton.triton_model_repository / MODEL_NAME / "1" / "tokenizer.json"))
    tokenizer.no_truncation()
    kept_end = tokenizer.encode(long_text).offsets[254][1]
    empty, long, head = analyse(triton, ["", long_text, long_text[:kept_end]])
    assert empty["entities"] == [] and empty["truncated"] is False
    assert empty["sentiment"]["label"] in ("negative", "neutral", "positive")
    assert long["truncated"] is True and long["max_tokens"] == 256 and head["truncated"] is False
    assert long["sentiment"] == head["sentiment"]


def test_the_unknown_token_share_tells_vocabulary_text_from_unknown_scripts(triton: Settings):
    english, unknown = analyse(triton, ["The package arrived on Tuesday.", "𓀀𓀁𓀂 𓃰𓃱 ☃☃ 𐎀𐎁𐎂"])
    assert english["unknown_token_share"] == 0.0
    assert unknown["unknown_token_share"] > 0.5, unknown


def test_reviews_get_the_neutral_offset_fitted_on_the_calibration_reviews(triton: Settings):
    """Asked as reviews, Triton's labels are the ONNX model's probabilities with the offset
    ``make setup`` fitted (models/bert/calibration.py) added to log P(neutral), the numbers
    ``make eval`` reports for reviews; asked as news, or as nothing, they are not shifted."""
    import numpy as np

    from models.bert import calibration
    from models.bert.evaluate import OnnxAnalyzer

    info = json.loads((triton.triton_model_repository / "text_analysis" / "1" / "model_info.json").read_text())
    folder = Path(info["weights"])
    delta = info["sentiment_log_offsets"]["reviews"]["neutral"]
    assert delta == calibration.neutral_offset(folder) and -calibration.LIMIT <= delta < 0
    texts = [t.text for t in calibration.calibration_reviews()]
    raw = OnnxAnalyzer(folder)(texts)[0]
    for domain, expected in (("reviews", calibration.shift(raw, delta)), ("news", raw), (None, raw)):
        served = analyse(triton, texts, domain)
        got = np.array([[r["sentiment"]["probs"][label] for label in ("negative", "neutral", "positive")]
                        for r in served])
        assert np.abs(got - expected).max() < 2e-3, domain
        labels = [r["sentiment"]["label"] for r in served]
        wrong = sum(a != ("negative", "neutral", "positive")[b]
                    for a, b in zip(labels, expected.argmax(axis=1), strict=True))
        assert wrong <= 1, domain
    # The offset did move labels: fewer of these reviews are called neutral as reviews.
    assert (calibration.shift(raw, delta).argmax(axis=1) == 1).sum() < (raw.argmax(axis=1) == 1).sum()
