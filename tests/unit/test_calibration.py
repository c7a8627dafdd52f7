"""The served model's neutral offset (models/bert/calibration.py): the maximum-likelihood prior
correction, checked on seeded simulations of a class-balance shift, and the calibration reviews
kept apart from the evaluation fixture."""

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bert.calibration import (
    CALIBRATION_REVIEWS,
    LIMIT,
    calibration_reviews,
    fit_neutral_offset,
    served_log_offsets,
    shift,
)
from models.bert.pipeline import SENTIMENT_LABELS

FIXTURE = Path(__file__).parents[1] / "fixtures" / "product_reviews.tsv"


def log_likelihood(probs, labels, delta):
    shifted = shift(probs, delta)
    return float(np.log(shifted[np.arange(len(labels)), [SENTIMENT_LABELS.index(x) for x in labels]]).sum())


def shifted_population(n, neutral_weight, seed):
    """Posteriors of a model calibrated to its training balance, and labels drawn from a domain
    whose neutral odds are ``neutral_weight`` times the training ones (a pure prior shift)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.6, 0.6, 0.6], size=n)
    target = probs * np.array([1.0, neutral_weight, 1.0])
    target /= target.sum(axis=1, keepdims=True)
    labels = [SENTIMENT_LABELS[rng.choice(3, p=p)] for p in target]
    return probs, labels


@pytest.mark.parametrize("weight", [0.3, 0.6, 1.0, 1.8])
def test_the_fit_recovers_a_simulated_prior_shift(weight):
    probs, labels = shifted_population(6000, weight, seed=7)
    delta = fit_neutral_offset(probs, labels)
    assert delta == pytest.approx(np.log(weight), abs=0.12)
    # ... and it labels fresh texts from the same domain better than no offset does
    fresh, fresh_labels = shifted_population(6000, weight, seed=8)
    gold = np.array([SENTIMENT_LABELS.index(x) for x in fresh_labels])
    before = np.mean(fresh.argmax(axis=1) == gold)
    after = np.mean(shift(fresh, delta).argmax(axis=1) == gold)
    assert after >= before - 0.005
    if abs(np.log(weight)) > 0.4:
        assert after > before


def test_the_fit_is_the_maximum_likelihood_offset():
    probs, labels = shifted_population(400, 0.5, seed=3)
    delta = fit_neutral_offset(probs, labels)
    assert shift(probs, delta)[:, 1].sum() == pytest.approx(labels.count("neutral"), rel=1e-6)
    best = log_likelihood(probs, labels, delta)
    for step in (-0.05, 0.05):
        assert log_likelihood(probs, labels, delta + step) < best


def test_without_neutral_labels_the_offset_stops_at_its_bound():
    probs, labels = shifted_population(200, 0.0, seed=4)
    assert "neutral" not in labels
    assert fit_neutral_offset(probs, labels) == -LIMIT


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0.001, 1.0)] * 3), min_size=1, max_size=20),
       st.floats(-LIMIT, LIMIT))
def test_the_offset_never_changes_negative_against_positive(rows, delta):
    probs = np.array(rows)
    probs /= probs.sum(axis=1, keepdims=True)
    shifted = shift(probs, delta)
    assert np.allclose(shifted.sum(axis=1), 1.0)
    assert np.allclose(shifted[:, 0] * probs[:, 2], shifted[:, 2] * probs[:, 0])
    polar = shifted.argmax(axis=1) != 1
    assert ((shifted[polar, 0] > shifted[polar, 2]) == (probs[polar, 0] > probs[polar, 2])).all()


def words(text):
    return tuple(re.findall(r"[a-z]+", text.lower()))


def test_the_calibration_reviews_are_not_the_evaluation_fixture():
    items = calibration_reviews()
    counts = {label: sum(t.label == label for t in items) for label in SENTIMENT_LABELS}
    assert counts == {"negative": 50, "neutral": 25, "positive": 50}
    fixture = [line.partition("\t")[2] for line in FIXTURE.read_text().splitlines()
               if line and not line.startswith("#")]
    # no review shared, and no run of six words shared either
    runs = {w[i:i + 6] for w in map(words, fixture) for i in range(len(w) - 5)}
    for item in items:
        w = words(item.text)
        assert not {w[i:i + 6] for i in range(len(w) - 5)} & runs, item.text


def test_a_bad_calibration_line_is_refused(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("# comment\npositive\tfine\ngreat\tno label\n")
    with pytest.raises(ValueError, match=r"reviews\.tsv:3"):
        calibration_reviews(path)
    assert CALIBRATION_REVIEWS.exists()


def test_a_fine_tune_report_scores_the_base_version_on_reviews_as_it_serves_them(tmp_path):
    # Version 1 serves reviews with its neutral offset; `streamsense train --labels` printed its
    # "before" 3-class accuracy of the raw probabilities, not of what the reviews agent served.
    from models.bert.data import LabelledText
    from models.bert.finetune import scores_as_served

    version = tmp_path / "1"
    version.mkdir()
    (version / "model_info.json").write_text('{"sentiment_log_offsets": {"reviews": {"neutral": -2.0}}}')
    offsets = served_log_offsets(version)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "model_info.json").write_text("{}")
    assert served_log_offsets(tmp_path / "2") is None
    # Texts the raw model calls neutral at 0.5 against 0.3: positive once neutral is shifted down.
    items = [LabelledText(text=f"t{i}", label="positive", group="g") for i in range(4)]
    row = {"negative": 0.2, "neutral": 0.5, "positive": 0.3}
    probs = np.array([[row[label] for label in SENTIMENT_LABELS]] * 4)
    sets = {"yours (held out)": items, "our tweets (held out)": items}
    served = scores_as_served(sets, {name: probs for name in sets}, offsets)
    assert served["yours (held out)"]["accuracy"] == 1.0  # as the reviews agent serves them
    assert served["our tweets (held out)"]["accuracy"] == 0.0  # tweets are served without offsets
    raw = scores_as_served(sets, {name: probs for name in sets}, None)
    assert raw["yours (held out)"]["accuracy"] == 0.0
