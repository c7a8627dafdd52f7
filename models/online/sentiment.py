"""Sentiment that adapts to the user's domain from the ratings in the stream.

The served model was trained on tweets; a deployment's reviews often carry a star ``rating``,
which is a label for free. :class:`SentimentAdapter` learns, prequentially (predict first, then
learn), a softmax regression from each review's sentence embedding and the base model's
log-probabilities to the label its rating implies (:func:`rating_label`). It starts out equal
to the base model (the log-probability weights are the identity, the rest zero) and is served
only while it beats the base model with confidence:

* while the base label is served, a :class:`~models.sequential.paired.PairedBettingTest` bets
  that the adapted label is right more often on polar rated reviews (1-2 vs 4-5 stars) where the
  two disagree; when it rejects, the adapted label is served (a switch when the adapter is no
  better happens with probability at most ``alpha``, over the whole stream);
* while the adapted label is served, a fresh test bets the other way, and the base label comes
  back when the adapter has become worse (again at most ``alpha`` false switches).

The adapter learns on one base model's outputs (its embeddings and probabilities): a new model
version (a fine-tune, a rollback) gives other embeddings, so :func:`following` starts a fresh
adapter for it, serving the new model's label until it in turn beats it with confidence.

Rolling polar accuracies of the base, adapted and served labels (last ``window`` rated polar
reviews) are reported for the metrics. The state is plain numbers (:meth:`to_dict`), so it can
be checkpointed as data, never as code.

Why not River's ``SoftmaxRegression``: its weights are dicts keyed by feature name, ~20x slower
for 387 dense features per review, and its state does not round-trip through plain JSON. This
class keeps River's contract (public hyperparameters, ``learn_one`` / ``predict_proba_one``,
``clone``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> adapter = SentimentAdapter(dim=4, alpha=0.01)
>>> base = np.array([0.2, 0.6, 0.2])  # the base model calls everything neutral
>>> for _ in range(600):
...     label = int(rng.integers(0, 2)) * 2  # 0 negative or 2 positive
...     x = rng.normal(size=4) * 0.1 + (1.0 if label == 2 else -1.0)
...     _ = adapter.observe(x / np.linalg.norm(x), base, label)
>>> adapter.serving, adapter.report()["adapted_accuracy"] > 0.9
('adapted', True)
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from models.sequential.paired import PairedBettingTest

__all__ = ["LABELS", "SentimentAdapter", "following", "rating_label"]

LABELS = ("negative", "neutral", "positive")
_NEG, _NEU, _POS = 0, 1, 2
_STATE_VERSION = 1


def rating_label(rating: float | None, *, negative_max: float = 2.0, positive_min: float = 4.0) -> int | None:
    """The label index a rating implies (1-2 negative, 3 neutral, 4-5 positive by default), or
    None without a rating.

    >>> [rating_label(r) for r in (1, 2.5, 3, 4, 5, None)]
    [0, 1, 1, 2, 2, None]
    """
    if rating is None or not math.isfinite(rating):
        return None
    if rating <= negative_max:
        return _NEG
    if rating >= positive_min:
        return _POS
    return _NEU


class SentimentAdapter:
    """Online softmax regression on ``[embedding, log base probabilities]``, served only while
    a sequential test says it beats the base model (see the module docstring)."""

    def __init__(self, *, dim: int = 384, learning_rate: float = 0.1, l2: float = 1e-4,
                 alpha: float = 0.05, window: int = 200, test_memory: float | None = 100.0) -> None:
        self.dim = dim
        self.learning_rate = learning_rate
        self.l2 = l2
        self.alpha = alpha
        self.window = window
        self.test_memory = test_memory  # the tests' stakes follow about this many recent disagreements
        width = dim + len(LABELS) + 1  # embedding, log-probabilities, bias
        self._weights = np.zeros((len(LABELS), width))
        self._weights[:, dim:dim + len(LABELS)] = np.eye(len(LABELS))  # starts as the base model
        self._grad_sq = np.full((len(LABELS), width), 1e-8)  # AdaGrad's running sums
        self._learned = 0
        self._serving = "base"
        self._test = self._new_test()
        self._switches = 0
        self._recent: deque[tuple[bool, bool, bool]] = deque(maxlen=window)
        self.model: str | None = None  # the base model whose outputs it learned on (None: not yet)

    def follows(self, model: str | None) -> bool:
        """Whether this adapter applies to ``model``'s outputs: it learned on them, or on no
        model yet, or ``model`` is not known (None: rows from before models were named)."""
        return model is None or self.model is None or self.model == model

    def clone(self) -> SentimentAdapter:
        return SentimentAdapter(dim=self.dim, learning_rate=self.learning_rate, l2=self.l2,
                                alpha=self.alpha, window=self.window, test_memory=self.test_memory)

    def _new_test(self) -> PairedBettingTest:
        return PairedBettingTest(alpha=self.alpha, memory=self.test_memory)

    @property
    def serving(self) -> str:
        """``"adapted"`` or ``"base"``: which label is served now."""
        return self._serving

    @property
    def switches(self) -> int:
        """How often what is served changed (base -> adapted or back)."""
        return self._switches

    @property
    def learned(self) -> int:
        """Rated reviews learned from."""
        return self._learned

    def _features(self, embedding: np.ndarray, base_probs: np.ndarray) -> np.ndarray:
        embedding = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if embedding.shape[0] != self.dim or not np.isfinite(embedding).all():
            raise ValueError(f"expected a finite embedding of {self.dim} numbers, got {embedding.shape[0]}")
        logp = np.log(np.clip(np.asarray(base_probs, dtype=np.float64).reshape(-1), 1e-6, 1.0))
        if logp.shape[0] != len(LABELS):
            raise ValueError(f"expected {len(LABELS)} base probabilities")
        return np.concatenate([embedding, logp, [1.0]])

    def _probs(self, x: np.ndarray) -> np.ndarray:
        z = self._weights @ x
        z = np.exp(z - z.max())
        return z / z.sum()

    def predict_proba_one(self, embedding: np.ndarray, base_probs: np.ndarray) -> np.ndarray:
        return self._probs(self._features(embedding, base_probs))

    def learn_one(self, embedding: np.ndarray, base_probs: np.ndarray, label: int) -> SentimentAdapter:
        x = self._features(embedding, base_probs)
        return self._learn(x, self._probs(x), label)

    def _learn(self, x: np.ndarray, probs: np.ndarray, label: int) -> SentimentAdapter:
        """One AdaGrad step from features ``x`` and the current prediction ``probs`` of them."""
        error = probs.copy()
        error[label] -= 1.0
        grad = np.outer(error, x) + self.l2 * self._weights
        self._grad_sq += grad * grad
        self._weights -= self.learning_rate * grad / np.sqrt(self._grad_sq)
        self._learned += 1
        return self

    def serve(self, embedding: np.ndarray | None, base_probs: np.ndarray) -> tuple[np.ndarray, str]:
        """The probabilities to serve and their source (``"adapted"`` or ``"base"``)."""
        if self._serving == "adapted" and embedding is not None:
            return self.predict_proba_one(embedding, base_probs), "adapted"
        return np.asarray(base_probs, dtype=np.float64), "base"

    def observe(self, embedding: np.ndarray, base_probs: np.ndarray, label: int) -> SentimentAdapter:
        """One rated review: score both labellers on it (polar ratings only), update the serving
        decision, then learn from it."""
        if label not in (_NEG, _NEU, _POS):
            raise ValueError(f"label must be 0, 1 or 2, not {label!r}")
        x = self._features(embedding, base_probs)
        adapted = self._probs(x)  # before learning this row: prequential, and the step's gradient
        if label != _NEU:
            base_right = _polar(base_probs) == label
            adapted_right = _polar(adapted) == label
            served_right = adapted_right if self._serving == "adapted" else base_right
            self._recent.append((base_right, adapted_right, served_right))
            # The test's challenger is whichever label is not served now.
            challenger_right = base_right if self._serving == "adapted" else adapted_right
            incumbent_right = adapted_right if self._serving == "adapted" else base_right
            self._test.update(int(challenger_right) - int(incumbent_right))
            if self._test.rejected:
                self._serving = "base" if self._serving == "adapted" else "adapted"
                self._test = self._new_test()
                self._switches += 1
        return self._learn(x, adapted, label)

    def report(self) -> dict:
        """Rolling polar accuracies (None before any polar rated review) and the test's state."""
        recent = list(self._recent)

        def share(k: int) -> float | None:
            return sum(r[k] for r in recent) / len(recent) if recent else None

        return {"serving": self._serving, "learned": self._learned, "switches": self._switches,
                "window": len(recent), "base_accuracy": share(0), "adapted_accuracy": share(1),
                "served_accuracy": share(2), "test_discordant": self._test.n,
                "test_challenger_wins": self._test.wins, "test_wealth": self._test.wealth}

    def to_dict(self) -> dict:
        """The learned state as plain numbers (JSON-ready)."""
        return {"version": _STATE_VERSION, "dim": self.dim, "weights": self._weights.tolist(),
                "grad_sq": self._grad_sq.tolist(), "learned": self._learned, "serving": self._serving,
                "switches": self._switches, "test": self._test.to_dict(),
                "recent": [[int(a), int(b), int(c)] for a, b, c in self._recent], "model": self.model}

    def load_dict(self, state: dict) -> SentimentAdapter:
        """Restore :meth:`to_dict`'s output (checked: shapes, finiteness, known values)."""
        if state.get("version") != _STATE_VERSION or state.get("dim") != self.dim:
            raise ValueError(f"adapter state version {state.get('version')} / dim {state.get('dim')}, "
                             f"this code reads version {_STATE_VERSION}, dim {self.dim}")
        weights = np.asarray(state["weights"], dtype=np.float64)
        grad_sq = np.asarray(state["grad_sq"], dtype=np.float64)
        if weights.shape != self._weights.shape or grad_sq.shape != self._weights.shape \
                or not (np.isfinite(weights).all() and np.isfinite(grad_sq).all() and (grad_sq > 0).all()):
            raise ValueError("adapter weights have the wrong shape or are not finite")
        if state["serving"] not in ("base", "adapted"):
            raise ValueError(f"unknown serving state {state['serving']!r}")
        model = state.get("model")  # absent in state stored before adapters named their model
        if model is not None and not (isinstance(model, str) and 0 < len(model) <= 256):
            raise ValueError("adapter state names its model with something other than a short string")
        self._weights, self._grad_sq = weights, grad_sq
        self._learned, self._switches = int(state["learned"]), int(state["switches"])
        self._serving = state["serving"]
        self._test = self._new_test().load_dict(state["test"])
        self._recent = deque(((bool(a), bool(b), bool(c)) for a, b, c in state["recent"][-self.window:]),
                             maxlen=self.window)
        self.model = model
        return self


def following(adapter: SentimentAdapter, model: str | None) -> SentimentAdapter:
    """The adapter to learn ``model``'s next rated review: ``adapter`` itself while it follows
    that model (naming the model on its first row), else a fresh one for it (a model version
    switch: the old weights read another encoder's embeddings).

    >>> first = following(SentimentAdapter(dim=4), "v1")
    >>> first.model, following(first, "v1") is first, following(first, None) is first
    ('v1', True, True)
    >>> second = following(first, "v2")
    >>> second is first, second.model, second.learned, second.serving
    (False, 'v2', 0, 'base')
    """
    if adapter.follows(model):
        if adapter.model is None:
            adapter.model = model
        return adapter
    fresh = adapter.clone()
    fresh.model = model
    return fresh


def _polar(probs: np.ndarray) -> int:
    """The polar call: positive or negative, whichever is likelier (neutral aside)."""
    return _POS if probs[_POS] > probs[_NEG] else _NEG
