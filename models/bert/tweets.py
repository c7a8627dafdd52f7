"""The packaged tweets with the brand or game each one is about (for replays such as the demo).

:func:`models.bert.data.tweets` gives the training view (text and label); this gives the same
file's rows with their ``entity`` column (``Microsoft``, ``Borderlands``, ``Xbox(Xseries)`` ...),
so a replay can draw real texts about one product or company with a chosen label mix. Kept apart
from ``data.py`` on purpose: that file is part of the trained models' cache key.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from models.bert import data

__all__ = ["EntityTweet", "entity_tweets"]

# "Irrelevant" rows (off-topic for their entity) are left out, as in training (models.bert.data):
# they are not neutral, and the model was not taught to call them so.
_LABELS = {"Positive": "positive", "Negative": "negative", "Neutral": "neutral"}


@dataclass(frozen=True, slots=True)
class EntityTweet:
    tweet_id: str  # rows sharing an id are augmented near-duplicates of one tweet
    entity: str  # the dataset's topic column: the brand or game the tweet is about
    label: str  # negative / neutral / positive
    text: str


def entity_tweets() -> list[EntityTweet]:
    """Every row of ``twitter_training.csv`` labelled positive, neutral or negative (32 entities),
    in file order."""
    path = data._extract("tweets", "sentiment_model/datasets/twitter_training.csv")
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        return [EntityTweet(row[0], row[1], _LABELS[row[2]], row[3].strip())
                for row in csv.reader(fh) if len(row) == 4 and row[2] in _LABELS and row[3].strip()]
