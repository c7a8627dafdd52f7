"""What all of a worker's texts look like: how common each word is, and the frame texts are
compared in (:class:`Frame`). Shared by every subject's :class:`~models.online.themes.ThemeTracker`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import numpy as np

__all__ = ["Frame", "TextBackground", "decay", "projected", "prune"]


class TextBackground:
    """What all subjects' texts look like, in this worker's memory: how common each word is (the
    prior a theme's words are weighed against) and the mean embedding of each sentiment label,
    which make the :class:`Frame` texts are measured in. Shared by every subject's tracker, so
    that one subject's complaint barely moves it (with few subjects, a complaint that makes up
    most negative texts is partly taken for the negative mood itself). Bounded: the
    ``capacity`` heaviest words, one vector per label; all forget with ``halflife`` texts.

    (Regressing the model's log-odds on the embedding was tried instead: it finds only the two
    directions the sentiment head reads, and on the real encoder it left negative texts about
    different things at a median cosine of 0.5 to each other, against 0.0 with the labels'
    means.)"""

    def __init__(self, *, capacity: int = 20_000, halflife: float = 100_000, dim: int = 64, seed: int = 0,
                 min_texts: int = 20) -> None:
        self.capacity = capacity
        self.halflife = halflife
        self.dim = dim
        self.seed = seed
        self.min_texts = min_texts
        self._counts: dict[str, float] = {}
        self._texts = 0.0
        self._means: dict[str, np.ndarray] = {}
        self._label_texts: dict[str, int] = {}
        self._frame: Frame | None = None
        self._frame_at = 0

    def learn_one(self, words: Iterable[str], embedding: np.ndarray | None = None,
                  label: str | None = None) -> None:
        """One text: its words, and its embedding with its sentiment label."""
        self._texts = self._texts * decay(self.halflife) + 1.0
        counts = self._counts
        for word in words:
            counts[word] = counts.get(word, 0.0) + 1.0
        if len(counts) > 1.25 * self.capacity:
            prune(counts, self.capacity)
        if embedding is not None and label is not None:
            p = projected(embedding, self.dim, self.seed)
            seen = self._label_texts[label] = self._label_texts.get(label, 0) + 1
            rate = max(1.0 / seen, 1.0 / self.halflife)
            mean = self._means.get(label)
            self._means[label] = p if mean is None else (1.0 - rate) * mean + rate * p

    def share(self, word: str) -> float:
        """The share of texts with ``word`` (a small floor for unseen words)."""
        return (self._counts.get(word, 0.0) + 0.5) / (self._texts + 1.0)

    def frame(self, *, dim: int, seed: int) -> Frame | None:
        """Where texts are measured from (:class:`Frame`); None for another projection or before
        ``min_texts`` texts of some label."""
        if (dim, seed) != (self.dim, self.seed):
            return None
        seen = sum(self._label_texts.values())
        if self._frame is None or seen - self._frame_at >= 50:  # it moves slowly: not every text
            self._frame, self._frame_at = Frame.of(self._means, self._label_texts, self.min_texts), seen
        return self._frame


class Frame:
    """Centred on the mean of all texts, with the directions that separate the sentiment labels
    projected out: the fine-tuned encoder puts every complaint near every other, and what is
    left once the mood is gone is what a text is about.

    >>> import numpy as np
    >>> frame = Frame.of({"negative": np.array([1.0, 0, 0]), "positive": np.array([-1.0, 0, 0])},
    ...                  {"negative": 50, "positive": 50}, min_texts=10)
    >>> frame(np.array([3.0, 4.0, 0.0])).tolist()
    [0.0, 1.0, 0.0]
    """

    def __init__(self, mean: np.ndarray, axes: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.axes = np.asarray(axes, dtype=np.float32)  # orthonormal rows
        # Centring and projecting out the axes in one product: (v - mean) P = v P - mean P, with
        # P = I - axes^T axes (a third of the numpy calls per vector: themes call this per text).
        projector = np.eye(len(self.mean), dtype=np.float32)
        if len(self.axes):
            projector -= self.axes.T @ self.axes
        self._projector, self._shift = projector, self.mean @ projector

    @classmethod
    def of(cls, means: dict[str, np.ndarray], counts: dict[str, int], min_texts: int) -> Frame | None:
        usable = sorted(label for label, n in counts.items() if n >= min_texts and label in means)
        if not usable:
            return None
        total = sum(counts[label] for label in usable)
        mean = sum(counts[label] * means[label] for label in usable) / total
        return cls(mean, _orthonormal(np.array([means[label] - mean for label in usable])))

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """``v`` (one vector, or one per row) in this frame, unit length (float32)."""
        z = np.asarray(v, dtype=np.float32) @ self._projector
        z -= self._shift
        if z.ndim == 1:
            norm = float(np.sqrt(z @ z))
            return z / norm if norm > 0 else z
        norms = np.sqrt((z * z).sum(axis=1))
        norms[norms == 0] = 1.0
        z /= norms[:, None]
        return z


def _orthonormal(vectors: np.ndarray) -> np.ndarray:
    """An orthonormal basis (rows) of the span of ``vectors`` (rows), by Gram-Schmidt."""
    basis: list[np.ndarray] = []
    for v in np.asarray(vectors, dtype=np.float64):
        for b in basis:
            v = v - (b @ v) * b
        if np.linalg.norm(v) > 1e-6:
            basis.append(v / np.linalg.norm(v))
    return np.array(basis).reshape(len(basis), vectors.shape[1] if len(vectors) else 0)


def projected(embedding: np.ndarray, dim: int, seed: int) -> np.ndarray:
    p = np.asarray(embedding, dtype=np.float32) @ _projection(len(embedding), dim, seed)
    return p / (np.linalg.norm(p) or 1.0)


@cache
def _projection(rows: int, dim: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, dim)) / math.sqrt(dim)).astype(np.float32)


def prune(counts: dict[str, float], keep: int) -> None:
    for word, _ in sorted(counts.items(), key=lambda kv: kv[1])[: len(counts) - keep]:
        del counts[word]


@cache
def decay(halflife: float) -> float:
    return 0.5 ** (1.0 / halflife)
