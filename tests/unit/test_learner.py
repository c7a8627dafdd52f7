"""The background learner's decisions, by seeded simulation, and its bookkeeping."""

import json
import math
import random

from streams.learner import decide, pending, split
from streams.local.settings import LocalStackSettings


def test_a_version_no_better_is_served_at_most_alpha_of_the_time_over_all_rounds():
    """Null: in every round the new version is right on half of the disagreements. 2,000 learners
    of 10 rounds each (30-300 disagreements a round): how many ever served a new version."""
    alpha, runs, ever = 0.05, 2000, 0
    for seed in range(runs):
        rng = random.Random(seed)
        for k in range(1, 11):
            n = rng.randint(30, 300)
            wins = sum(rng.random() < 0.5 for _ in range(n))
            if decide({"after_right": wins, "before_right": n - wins}, alpha=alpha, round_number=k)[0]:
                ever += 1
                break
    assert ever / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_a_clearly_better_version_is_served():
    assert decide({"after_right": 60, "before_right": 20}, alpha=0.05, round_number=3)[0]


def test_the_held_out_reviews_never_change_between_rounds(tmp_path):
    settings = LocalStackSettings(home=tmp_path)
    rows = [{"review_id": f"r{i}", "text": f"review number {i}", "rating": 1 + i % 5} for i in range(500)]
    _, heldout = split(rows[:200], settings)
    _, later = split(rows, settings)
    assert 0.1 < len(later) / 500 < 0.3
    assert {t.text for t in heldout} <= {t.text for t in later}
    assert {t.label for t in later} == {"negative", "neutral", "positive"}


def test_pending_counts_what_came_since_the_last_round(tmp_path):
    settings = LocalStackSettings(home=tmp_path)
    folder = tmp_path / "learner"
    folder.mkdir()
    (folder / "rated.jsonl").write_text("".join(json.dumps({"review_id": f"r{i}"}) + "\n" for i in range(30)))
    assert pending(settings) == 30
    (folder / "rounds.jsonl").write_text(json.dumps({"rated": 25}) + "\n")
    assert pending(settings) == 5


def test_rounds_go_on_once_the_kept_reviews_are_trimmed(tmp_path):
    """rated.jsonl keeps the newest 50,000; counting its lines, a store at the cap had 0 pending
    after every round, for good. The count of all gathered reviews goes on."""
    settings = LocalStackSettings(home=tmp_path)
    folder = tmp_path / "learner"
    folder.mkdir()
    (folder / "rated.jsonl").write_text("".join(json.dumps({"review_id": f"r{i}"}) + "\n" for i in range(30)))
    (folder / "gathered").write_text("5030")
    (folder / "rounds.jsonl").write_text(json.dumps({"rated": 30, "gathered": 5000}) + "\n")
    assert pending(settings) == 30


def test_a_candidate_checked_after_every_batch_of_new_reviews_is_served_at_most_alpha_of_the_time():
    """Null: a candidate right on half of the disagreements, checked (the round's test on the
    running totals) after every 1-20 new disagreements, up to 400: repeated looks at the
    time-uniform sequence keep the round's level, alpha / 2 in round 1."""
    alpha, runs, ever = 0.05, 1000, 0
    for seed in range(runs):
        rng = random.Random(seed)
        paired = {"after_right": 0, "before_right": 0}
        while paired["after_right"] + paired["before_right"] < 400:
            for _ in range(rng.randint(1, 20)):
                paired["after_right" if rng.random() < 0.5 else "before_right"] += 1
            if decide(paired, alpha=alpha, round_number=1)[0]:
                ever += 1
                break
    level = alpha / 2
    assert ever / runs <= level + 3 * math.sqrt(level * (1 - level) / runs)


def test_a_candidate_right_on_four_in_five_disagreements_is_served_within_about_forty():
    """What the drugs.com bench needs: a fine-tune that wins 78-80% of disagreements is served
    once about 30-45 of them have been seen, well before the stream ends."""
    served_at = []
    for seed in range(200):
        rng = random.Random(seed)
        paired = {"after_right": 0, "before_right": 0}
        for n in range(1, 201):
            paired["after_right" if rng.random() < 0.8 else "before_right"] += 1
            if decide(paired, alpha=0.05, round_number=1)[0]:
                served_at.append(n)
                break
    assert len(served_at) >= 190 and sorted(served_at)[len(served_at) // 2] <= 45
