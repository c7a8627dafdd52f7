"""Words that label a theme: content words of a text, and the ones most characteristic of a
group of texts against the rest (Monroe, Colaresi & Quinn 2008, *Fightin' Words*).

>>> words_of("Great kettle, but the lid leaks!")
('great', 'kettle', 'lid', 'leaks')
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Protocol

__all__ = ["WordPrior", "characteristic_words", "words_of"]


class WordPrior(Protocol):
    def share(self, word: str) -> float: ...


_WORD = re.compile(r"[a-z][a-z'-]*[a-z]")
# Function words and the review words every theme shares (they label nothing).
_STOPWORDS_TEXT = (
    "a about above after again against all also am an and any are aren't as at be because been before "
    "being below between both but by can can't cannot could couldn't did didn't do does doesn't doing "
    "don't down during each even ever every few for from further get gets got had hadn't has hasn't "
    "have haven't having he her here hers herself him himself his how i i'd i'll i'm i've if in into "
    "is isn't it it's its itself just let's like me more most much my myself no nor not now of off on "
    "once one only or other ought our ours ourselves out over own really same she should shouldn't so "
    "some still such than that that's the their theirs them themselves then there there's these they "
    "they'd they'll they're they've this those through to too under until up upon us very was wasn't "
    "we we'd we'll we're we've were weren't what what's when where which while who whom why will with "
    "won't would wouldn't you you'd you'll you're you've your yours yourself yourselves product item "
    "thing things bought buy use used using one two three back well made make makes going gone way "
    "lot bit"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split(" "))


def words_of(text: str, *, limit: int = 64) -> tuple[str, ...]:
    """The distinct content words of ``text`` (lower case, no stopwords), in order. Cached for
    texts of review size: a review's words are read for the worker's background, its product's
    themes and each entity's (a long text is not kept: the cache would hold the texts).

    >>> words_of("The battery DIES after an hour; the battery's dead.")
    ('battery', 'dies', 'hour', 'dead')
    """
    return _cached_words(text, limit) if len(text) <= _CACHED_CHARS else _words(text, limit)


_CACHED_CHARS = 4_000  # at most 1,024 cached texts of this size: 4 MB


@lru_cache(maxsize=1024)
def _cached_words(text: str, limit: int) -> tuple[str, ...]:
    return _words(text, limit)


def _words(text: str, limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        word = match.group().removesuffix("'s")
        if word not in _STOPWORDS and len(word) <= 30:
            seen.setdefault(word)
            if len(seen) >= limit:
                break
    return tuple(seen)


def characteristic_words(theme: dict[str, float], rest: dict[str, float], *,
                         background: WordPrior | None = None, k: int = 3,
                         prior_strength: float = 20.0) -> list[str]:
    """The ``k`` words of ``theme`` most over-represented against ``rest``: the z-scored
    log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, eq. 22),
    the prior's shares from ``background`` (or from theme and rest together).

    >>> characteristic_words({"battery": 9, "dies": 6, "great": 2}, {"great": 30, "price": 12, "dies": 1})
    ['battery', 'dies']
    """
    vocabulary = set(theme) | set(rest)
    if not vocabulary:
        return []
    if background is not None:
        prior = {w: background.share(w) for w in vocabulary}
    else:
        prior = {w: theme.get(w, 0.0) + rest.get(w, 0.0) + 0.5 for w in vocabulary}
    scale = prior_strength / sum(prior.values())
    n_i, n_j, a0 = sum(theme.values()), sum(rest.values()), prior_strength
    scored = []
    for word, y_i in theme.items():
        # At least half a count: a word the background never saw would otherwise get a prior so
        # thin that its variance drowns it, however exclusive to the theme it is.
        a = max(prior[word] * scale, 0.5)
        y_j = rest.get(word, 0.0)
        delta = (math.log((y_i + a) / max(n_i + a0 - y_i - a, 1e-9))
                 - math.log((y_j + a) / max(n_j + a0 - y_j - a, 1e-9)))
        z = delta / math.sqrt(1.0 / (y_i + a) + 1.0 / (y_j + a))
        if z > 0 and y_i >= 1.0:
            scored.append((-z, word))
    return [w for _, w in sorted(scored)[:k]]
