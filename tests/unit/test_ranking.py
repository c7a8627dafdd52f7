"""Candidates scores a pool without a feature dict per item: it must give River's numbers exactly."""

from __future__ import annotations

import math
import random

import numpy as np
from river import linear_model, optim

from models.online.ranking import BUCKETS, LAST, Candidates, probability


def _trained(rng: random.Random, names: list[str]) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=1e-6)
    for _ in range(3000):
        x = {name: rng.choice([1.0, rng.uniform(-2, 3)]) for name in rng.sample(names, 9)}
        model.learn_one(x, rng.random() < 0.3)
    return model


def _plain(item, covis, *, segment, recent, same, edges, share, signals):
    """The features as the recommender's feature dicts have them, built the plain way."""
    numbers = [segment, round(math.log1p(covis), 4), round(share(item), 4),
               round(math.log1p(edges.get(item, 0.0)), 4), int(same), int(item in recent)]
    x = {"covisitation": numbers[1], "popularity": numbers[2], LAST[same]: numbers[3],
         BUCKETS[min(6, int(2 * numbers[1]))]: 1.0, "recently_engaged": float(numbers[5])}
    signal = signals.get(item)
    if signal:
        if signal.get("sentiment") is not None:
            x["sentiment"] = float(signal["sentiment"])
        for entity in signal.get("entities", ())[:3]:
            x[f"entity={entity}"] = 1.0
    return numbers, x


def test_candidate_scores_are_rivers_to_the_last_bit():
    rng = random.Random(7)
    items = [f"i{n}" for n in range(60)]
    entities = ["Acme", "Globex", "Initech", "Umbrella"]
    names = ["covisitation", "popularity", *LAST.values(), *BUCKETS, "recently_engaged", "sentiment",
             *(f"entity={e}" for e in entities), *(f"item={i}" for i in items),
             *(f"segment={s}|item={i}" for s in (-1, 0, 1, 2) for i in items)]
    ctr = _trained(rng, names)
    ranker = _trained(rng, [n for n in names if not n.startswith(("item=", "segment="))]
                      + ["click_through_logit"])
    checked = 0
    for _ in range(40):
        segment = rng.choice([None, 0, 1, 2])
        recent = rng.sample(items, 5)
        same = rng.random() < 0.5
        edges = {i: rng.expovariate(1.0) for i in rng.sample(items, 20)}
        counts = {i: rng.uniform(0, 10) for i in items}
        share = lambda item, c=counts: min(1.0, c.get(item, 0.0) / 10.0)  # noqa: E731
        signals = {i: {"sentiment": rng.choice([None, rng.uniform(-1, 1)]),
                       "entities": rng.choices(entities, k=rng.randint(0, 5))}  # repeats included
                   for i in rng.sample(items, 30)}
        candidates = Candidates(ctr=ctr, ranker=ranker, segment=segment, recent=recent, same_session=same,
                                last_edges=edges, share=share, signals=signals)
        pool, covis_of, expected_ranks = rng.sample(items, 15), [], []
        for item in pool:
            covis = rng.choice([0.0, rng.expovariate(0.5)])
            numbers, x = _plain(item, covis, segment=-1 if segment is None else segment, recent=recent,
                                same=same, edges=edges, share=share, signals=signals)
            seg = -1 if segment is None else segment
            with_item = {**x, f"item={item}": 1.0, f"segment={seg}|item={item}": 1.0}
            p = min(1 - 1e-7, max(1e-7, ctr.predict_proba_one(with_item)[True]))
            logit, got_numbers, _, _ = candidates.click_through(item, covis)
            assert got_numbers == numbers
            assert logit == math.log(p / (1 - p))
            covis_of.append(covis)
            expected_ranks.append(min(1 - 1e-7, max(1e-7, ranker.predict_proba_one(
                {**x, "click_through_logit": logit})[True])))
            checked += 1
        # The pool at once, with numpy (its exp and log: within an ulp of River's).
        np.testing.assert_allclose(candidates.scores(pool, covis_of), expected_ranks, rtol=1e-12, atol=0)
    assert checked == 600
    assert candidates.scores([], []).shape == (0,)


def test_probability_matches_rivers_sigmoid_and_the_clamp():
    assert probability(-31.0) == 1e-7
    assert probability(31.0) == 1 - 1e-7
    assert probability(0.0) == 0.5
