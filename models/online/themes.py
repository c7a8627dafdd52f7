"""What one subject's texts are about: online themes with words, shares and their change.

A :class:`ThemeTracker` follows one subject (a product, a news source, an entity). Each text's
sentence embedding (the ``EMBEDDING`` output of ``text_analysis``) is projected to ``dim``
dimensions (a fixed seeded Gaussian map: cosines survive, state shrinks six-fold) and compared,
in a :class:`~models.online.background.Frame` (centred, the sentiment labels' directions taken
out: the fine-tuned encoder puts every complaint near every other), with at most
``max_themes`` themes, each the mean of its texts: an online spherical k-means with decay. A
text no theme is close to (cosine ``similarity``) starts a theme; when all slots are taken it
recycles the least active one (fewest texts for its age), and two themes that drift together
merge, so memory per subject is fixed however long it runs.

Each theme keeps decayed counts of its words, and the subject the counts of all its words, so a
theme is labelled by the words most characteristic of it against the rest of the subject,
with an informative Dirichlet prior from a background (all subjects' words: a
:class:`~models.online.background.TextBackground`): the weighted log-odds of Monroe, Colaresi
and Quinn (2008), *Fightin' Words*.

The tracker also remembers the theme of each of its last ``memory`` negative texts, so
:meth:`ThemeTracker.explain` says which themes grew among the negatives over the last ``n``
texts against the texts before: the "why" of a sentiment alert.

Why not River's clustering (``river.cluster``): its models work on dicts (slow for 64-d
vectors), grow without a bound (DBSTREAM, CluStream) or never forget (KMeans), and their state
is not plain data, which every detector's checkpoint must be (``streams.core.plainstate``).
The contract is River's: hyperparameters in the constructor, ``learn_one``, ``predict_one``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> tracker = ThemeTracker(seed=1)
>>> battery = rng.standard_normal(384)
>>> for i in range(300):
...     planted = i >= 200 and i % 2 == 0
...     x = battery + 0.5 * rng.standard_normal(384) if planted else rng.standard_normal(384)
...     text = "the battery dies after an hour" if planted else f"it is fine number{i % 37}"
...     _ = tracker.learn_one(x / np.linalg.norm(x), text,
...                           label="negative" if planted or i % 10 == 5 else "positive")
>>> top = tracker.explain(100)[0]
>>> top.words[0], top.new, top.share_before, top.count >= 25  # of 50 planted, 60 negatives
('battery', True, 0.0, True)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.online.background import Frame, TextBackground, decay, projected, prune
from models.online.keywords import characteristic_words, words_of
from models.sequential.cusum import BernoulliCUSUM

__all__ = ["ThemeShare", "ThemeTracker"]

@dataclass(frozen=True, slots=True)
class ThemeShare:
    """One theme's part in a subject's negative texts: now (the last ``n`` texts) and before."""

    theme_id: int
    words: list[str]
    share_now: float
    share_before: float
    interval: tuple[float, float]  # 95% Wilson interval of share_now
    count: int  # negative texts of this theme now
    count_before: int
    new: bool  # at most one negative text of this theme before the last n texts


class ThemeTracker:
    """Bounded online themes of one subject's texts (see the module docstring)."""

    def __init__(self, *, max_themes: int = 8, dim: int = 64, similarity: float = 0.35,
                 halflife: float = 200.0, words_per_theme: int = 20, subject_words: int = 100,
                 memory: int = 96, emerging_share: float = 0.3, warmup: int = 100, arl0: float = 10_000,
                 seed: int = 0) -> None:
        self.max_themes = max_themes
        self.dim = dim
        self.similarity = similarity  # the cosine (in the Frame) a text needs to join a theme
        self.halflife = halflife
        self.words_per_theme = words_per_theme
        self.subject_words = subject_words
        self.memory = memory
        # Emerging themes: a theme born after the subject's first `warmup` texts is new to it; a
        # CUSUM bank per new theme tests its share of the negative texts against emerging_share.
        self.emerging_share = emerging_share
        self.warmup = warmup
        self.arl0 = arl0
        self.seed = seed
        self.emerged: int | None = None  # set by the learn_one whose text made a theme emerge
        self.last_theme: int | None = None  # the theme of the last text learned
        self._emerging: dict[str, BernoulliCUSUM] = {}  # theme id -> its bank
        self._seq = 0  # texts seen
        self._next_id = 1
        # Per sentiment label: the running mean of its texts (projected, float16 base64) and their
        # count: this subject's own Frame, for when there is no background.
        self._means: dict[str, str] = {}
        self._label_counts: dict[str, int] = {}
        self._ids: list[int] = []  # per slot: its theme's id (ids are never reused)
        self._centroids: list[str] = []  # per slot: mean projected embedding, float16 base64
        self._weights: list[float] = []  # per slot: decayed count of texts, as of _touched
        self._touched: list[int] = []  # per slot: the _seq its weight and words were last decayed to
        self._born: list[int] = []  # per slot: the _seq its theme started at
        self._words: list[dict[str, float]] = []  # per slot: decayed word counts
        self._all_words: dict[str, float] = {}  # the subject's decayed word counts, as of _all_touched
        self._all_touched = 0
        # The last `memory` negative texts: their _seq and their theme id (plain lists store compactly).
        self._negative_seqs: list[int] = []
        self._negative_themes: list[int] = []

    def learn_one(self, embedding: np.ndarray, text: str, *, label: str,
                  background: TextBackground | None = None) -> tuple[int, float]:
        """Assign one text (its sentiment ``label`` too) to a theme and learn from it; returns
        (theme id, cosine to the theme). Texts and themes are compared in a :class:`Frame`: the
        ``background``'s (all subjects' texts), else this subject's own."""
        self._seq += 1
        p = projected(embedding, self.dim, self.seed)
        frame = self._frame_of(background)
        self._learn_mean(label, p)
        raw = [_unpack(c) for c in self._centroids]
        framed = frame(np.vstack([p, *raw]))  # the text and every theme, in one call
        x, themes = framed[0], framed[1:]
        sims = themes @ x
        best = int(np.argmax(sims)) if len(sims) else -1
        if best < 0 or sims[best] < self.similarity:
            best, fit = self._new_theme(p), 1.0
        else:
            fit = float(sims[best])
            self._age(best, every=8)
            rate = max(1.0 / (self._weights[best] + 1.0), 1.0 / self.halflife)
            moved = (1.0 - rate) * raw[best] + rate * p
            self._centroids[best], themes[best] = _pack(moved), frame(moved)
            best = self._merge_into_neighbour(best, themes)
        self._weights[best] += 1.0
        words = words_of(text)
        theme_words = self._words[best]
        for word in words:
            theme_words[word] = theme_words.get(word, 0.0) + 1.0
        if len(theme_words) > 1.25 * self.words_per_theme:
            prune(theme_words, self.words_per_theme)
        self._learn_words(words)
        theme_id = self.last_theme = self._ids[best]
        self.emerged = None
        if label == "negative":
            self._negative_seqs = [*self._negative_seqs[-(self.memory - 1):], self._seq]
            self._negative_themes = [*self._negative_themes[-(self.memory - 1):], theme_id]
            self._test_emerging(theme_id)
        return theme_id, round(fit, 4)

    def _test_emerging(self, theme_id: int) -> None:
        """Each new theme's bank sees whether this negative text is of that theme. Guarantee, per
        theme: ARL0 >= ``arl0`` negative texts while its share of them is at most
        ``emerging_share`` (:class:`~models.sequential.BernoulliCUSUM`); at most ``max_themes``
        banks run at once."""
        for key, bank in list(self._emerging.items()):
            bank.update(int(key) == theme_id)
            if bank.drift_detected:
                self.emerged = int(key)
                del self._emerging[key]  # it has emerged: no longer new, one alarm per theme

    def share_of(self, theme_id: int, *, background: TextBackground | None = None) -> ThemeShare | None:
        """A theme's share of the remembered negative texts since it was born (for an emerged one)."""
        if theme_id not in self._ids:
            return None
        slot = self._ids.index(theme_id)
        pairs = zip(self._negative_seqs, self._negative_themes, strict=True)
        since = [t for s, t in pairs if s >= self._born[slot]]
        count = since.count(theme_id)
        return ThemeShare(theme_id, self.theme_words(slot, background=background), count / max(len(since), 1),
                          0.0, _wilson(count, len(since)), count, 0, new=True)

    def predict_one(self, embedding: np.ndarray, *, label: str, background: TextBackground | None = None
                    ) -> int | None:
        """The id of the theme nearest to a text (without learning), or None if none is near."""
        if not self._centroids:
            return None
        frame = self._frame_of(background)
        x = frame(projected(embedding, self.dim, self.seed))
        sims = (frame(np.array([_unpack(c) for c in self._centroids])) @ x).tolist()
        best = int(np.argmax(sims))
        return self._ids[best] if sims[best] >= self.similarity else None

    def explain(self, n: int, *, background: TextBackground | None = None, top: int = 3,
                min_count: int = 2) -> list[ThemeShare]:
        """The themes whose share of the negative texts grew most over the last ``n`` texts
        against the remembered texts before them, largest growth first (at most ``top``, each
        with at least ``min_count`` negative texts now)."""
        start = self._seq - n
        pairs = list(zip(self._negative_seqs, self._negative_themes, strict=True))
        now = [t for s, t in pairs if s > start]
        before = [t for s, t in pairs if s <= start]
        if not now:
            return []
        out = []
        for slot, theme_id in enumerate(self._ids):
            count, count_before = now.count(theme_id), before.count(theme_id)
            if count < min_count:
                continue
            share, share_before = count / len(now), (count_before / len(before) if before else 0.0)
            out.append(ThemeShare(theme_id, self.theme_words(slot, background=background), share,
                                  share_before, _wilson(count, len(now)), count, count_before,
                                  new=count_before <= 1))
        out.sort(key=lambda t: (-(t.share_now - t.share_before), -t.count))
        return [t for t in out if t.share_now > t.share_before][:top]

    def words_of_theme(self, theme_id: int, *, background: TextBackground | None = None) -> list[str]:
        """The words of a live theme (by id); [] for one recycled since."""
        live = theme_id in self._ids
        return self.theme_words(self._ids.index(theme_id), background=background) if live else []

    def theme_words(self, slot: int, *, background: TextBackground | None = None, k: int = 3) -> list[str]:
        """The ``k`` words most characteristic of the theme in ``slot``."""
        self._age(slot)
        self._age_all()
        rest = {w: max(0.0, c - self._words[slot].get(w, 0.0)) for w, c in self._all_words.items()}
        return characteristic_words(self._words[slot], rest, background=background, k=k)

    @property
    def n_themes(self) -> int:
        return len(self._ids)

    def _frame_of(self, background: TextBackground | None) -> Frame:
        frame = background.frame(dim=self.dim, seed=self.seed) if background is not None else None
        if frame is None:
            means = {label: _unpack(m) for label, m in self._means.items()}
            frame = Frame.of(means, self._label_counts, min_texts=10)
        return frame or Frame(np.zeros(self.dim, dtype=np.float32), np.zeros((0, self.dim), dtype=np.float32))

    def _learn_mean(self, label: str, p: np.ndarray) -> None:
        own = _unpack(self._means[label]) if self._means.get(label) else np.zeros(self.dim, dtype=np.float32)
        seen = self._label_counts[label] = self._label_counts.get(label, 0) + 1
        rate = max(1.0 / seen, 1.0 / (4 * self.halflife))
        self._means[label] = _pack((1.0 - rate) * own + rate * p)

    def _new_theme(self, p: np.ndarray) -> int:
        if len(self._ids) < self.max_themes:
            for column in (self._ids, self._centroids, self._weights, self._touched, self._born, self._words):
                column.append(None)  # type: ignore[arg-type]
            slot = len(self._ids) - 1
        else:
            # Recycle the least active theme: the fewest texts (decayed to now) for the texts
            # since it was born. A theme just born is light by nature, and measuring it by its
            # weight alone would recycle a new complaint before it could form.
            window = self.halflife / math.log(2)  # the decayed weight of a theme given every text
            step = decay(self.halflife)
            slot = min(range(len(self._ids)), key=lambda s: self._weights[s] * step ** (
                self._seq - self._touched[s]) / (min(self._seq - self._born[s], window) + self.max_themes))
        self._emerging.pop(str(self._ids[slot]), None)  # a recycled theme's test ends with it
        self._ids[slot], self._next_id = self._next_id, self._next_id + 1
        if self._seq > self.warmup:  # a theme new to the subject: watch whether it takes over
            self._emerging[str(self._ids[slot])] = BernoulliCUSUM(p0=self.emerging_share, arl0=self.arl0,
                                                                   ratios=(1.5, 2.0, 2.8))
        self._centroids[slot] = _pack(p)
        self._weights[slot], self._words[slot] = 0.0, {}
        self._touched[slot] = self._born[slot] = self._seq
        return slot

    def _merge_into_neighbour(self, slot: int, themes: np.ndarray) -> int:
        """Two themes that drifted together become one (the heavier keeps its id); returns the
        slot of the theme the text belongs to now. ``themes``: the centroids in the frame (rows)."""
        sims = themes @ themes[slot]
        sims[slot] = -1.0
        other = int(np.argmax(sims))
        if sims[other] < self.similarity:
            return slot
        self._age(other)
        keep, gone = (slot, other) if self._weights[slot] >= self._weights[other] else (other, slot)
        w_keep, w_gone = self._weights[keep], self._weights[gone]
        merged = w_keep * _unpack(self._centroids[keep]) + w_gone * _unpack(self._centroids[gone])
        self._centroids[keep] = _pack(merged / (w_keep + w_gone))
        self._weights[keep] = w_keep + w_gone
        words = self._words[keep]
        for word, count in self._words[gone].items():
            words[word] = round(words.get(word, 0.0) + count, 2)
        if len(words) > self.words_per_theme:
            prune(words, self.words_per_theme)
        kept_id, gone_id = self._ids[keep], self._ids[gone]
        self._emerging.pop(str(gone_id), None)
        self._negative_themes = [kept_id if t == gone_id else t for t in self._negative_themes]
        for column in (self._ids, self._centroids, self._weights, self._touched, self._born, self._words):
            del column[gone]
        return keep if keep < gone else keep - 1

    def _age(self, slot: int, *, every: int = 1) -> None:
        """Decay a theme's weight and words to now (lazily: only the themes a text touches, and
        with ``every`` > 1 only that often: counts added in between are off by at most
        ``every`` steps of decay, under 3% at the default half-life)."""
        gap = self._seq - self._touched[slot]
        if gap >= every:
            factor = decay(self.halflife) ** gap
            self._weights[slot] *= factor
            self._words[slot] = _scaled(self._words[slot], factor)
            self._touched[slot] = self._seq

    def _age_all(self) -> None:
        gap = self._seq - self._all_touched
        if gap > 0:
            factor = decay(self.halflife) ** gap
            self._all_words = _scaled(self._all_words, factor)
            self._all_touched = self._seq

    def _learn_words(self, words: Sequence[str]) -> None:
        if self._seq - self._all_touched > 20 or len(self._all_words) > 1.25 * self.subject_words:
            self._age_all()  # every 20 texts, not every text: the subject's words are many
            if len(self._all_words) > self.subject_words:
                prune(self._all_words, self.subject_words)
        # Counts are kept as of _all_touched: a count added now is worth more then.
        unit = decay(self.halflife) ** -(self._seq - self._all_touched)
        for word in words:
            self._all_words[word] = round(self._all_words.get(word, 0.0) + unit, 2)


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a share ``k / n``.

    >>> _wilson(8, 10)
    (0.49, 0.94)
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 2), round(min(1.0, centre + half), 2)


def _scaled(counts: dict[str, float], factor: float) -> dict[str, float]:
    # Two decimals: the counts are stored as JSON with every detector's state.
    return {w: round(c * factor, 2) for w, c in counts.items() if c * factor >= 0.05}


def _pack(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, dtype="<f2").tobytes()).decode("ascii")


@lru_cache(maxsize=8192)
def _unpack(s: str) -> np.ndarray:
    """A packed vector (read-only: the cache hands the same array to every caller). Cached:
    every text compares itself with each of its subject's themes, which change one at a time
    (the cache holds the themes of about a thousand subjects)."""
    v = np.frombuffer(base64.b64decode(s), dtype="<f2").astype(np.float32)
    v.flags.writeable = False
    return v
