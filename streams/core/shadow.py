"""Shadowing a candidate model version: which texts go to it, and how its answers compare with
the served version's on the same texts. No faust, no I/O (``streams.agents.shadow`` sends).

The sample is chosen by a hash of the text, so a text is either always or never shadowed (replays
and retries compare the same texts) and the share holds over any large batch mix. Agreement is
counted on the sentiment label and on the set of entity spans; on rated reviews both versions'
polar calls (positive or negative, whichever is likelier, as ``models.online.sentiment`` scores
the adapter) are scored against the rating.

>>> def analysis(label, probs, model="v1", entities=()):
...     probs = dict(zip(("negative", "neutral", "positive"), probs))
...     return Analysis(sentiment={"label": label, "probs": probs},
...                     entities=[{"start": s, "end": e, "type": t} for s, e, t in entities],
...                     truncated=False, model=model)
>>> served = [analysis("positive", (.1, .2, .7)), analysis("neutral", (.2, .5, .3))]
>>> candidate = [analysis("positive", (.2, .1, .7), "v2"), analysis("negative", (.6, .3, .1), "v2")]
>>> t = compare(served, candidate, [None, 0])
>>> t.texts, t.sentiment_agreed, t.entities_agreed, t.rated, t.served_right, t.shadow_right
(2, 1, 2, 1, 0, 1)
>>> sample(["a", "b", "c"], 1.0), sample(["a", "b", "c"], 0.0)
([0, 1, 2], [])
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from streams.core.text import Analysis

__all__ = ["ShadowTally", "compare", "polar_call", "sample"]

_SCALE = 1 << 32


def sample(texts: Sequence[str], share: float) -> list[int]:
    """Indexes of the texts to shadow: about ``share`` of them, the same ones every time."""
    if share <= 0.0:
        return []
    cut = share * _SCALE
    return [i for i, text in enumerate(texts) if zlib.crc32(text.encode("utf-8", "replace")) < cut]


def polar_call(analysis: Analysis) -> int:
    """0 (negative) or 2 (positive), whichever the model finds likelier; ties are negative."""
    probs = analysis.sentiment.get("probs") or {}
    return 2 if float(probs.get("positive", 0.0)) > float(probs.get("negative", 0.0)) else 0


@dataclass(frozen=True)
class ShadowTally:
    texts: int = 0
    sentiment_agreed: int = 0
    entities_agreed: int = 0
    rated: int = 0  # polar rated reviews among the texts
    served_right: int = 0
    shadow_right: int = 0


def _spans(analysis: Analysis) -> set[tuple]:
    return {(e.get("start"), e.get("end"), e.get("type")) for e in analysis.entities}


def compare(served: Sequence[Analysis], shadow: Sequence[Analysis],
            labels: Sequence[int | None]) -> ShadowTally:
    """Counts over texts answered by both versions; ``labels``: each text's rating label (0
    negative, 1 neutral, 2 positive, None unrated); only polar ones are scored."""
    if not len(served) == len(shadow) == len(labels):
        raise ValueError(f"{len(served)} served, {len(shadow)} shadow answers and {len(labels)} labels")
    agreed = entities = rated = served_right = shadow_right = 0
    for a, b, label in zip(served, shadow, labels, strict=True):
        agreed += a.sentiment.get("label") == b.sentiment.get("label")
        entities += _spans(a) == _spans(b)
        if label in (0, 2):
            rated += 1
            served_right += polar_call(a) == label
            shadow_right += polar_call(b) == label
    return ShadowTally(len(served), agreed, entities, rated, served_right, shadow_right)
