"""Section ``analysis``: what the detectors cost per review before and after themes and
review-bombing screening (issue 21), in process on one core, with the state each keeps.

Timed with ``time.process_time`` (CPU time of this process, best of three) over generated
reviews of 20 products with synthetic embeddings (float16, as they come from Triton): one
direction per aspect a review is about, plus noise, so themes form as they do on real texts.
State writes are timed as the worker made them until 2026-12-07: each product's monitor sealed
once per batch of 64 reviews (it now seals each once per commit: ``KeyedMonitors.flush``; the
``worker`` section measures the worker with it).
"""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np

from models.online import TextBackground, words_of
from streams.bench.harness import Stack
from streams.core.monitoring import MonitorConfig, Observation, SubjectMonitor
from streams.core.state import StateSeal
from streams.testing import themed_reviews

__all__ = ["analysis"]

_VARIANTS = {"before: sentiment shift only": (False, 0), "+ themes (sentiment alerts explained)": (True, 0),
             "+ themes + review-bombing screening": (True, 10)}
_BATCH = 64


def analysis(stack: Stack, n: int = 6000) -> str:
    reviews = themed_reviews([f"p{k}" for k in range(20)], n // 20, planted={"p0": n // 40}, seed=9)
    # Embeddings: one direction per sentence the review ends with (its aspect) plus noise, so
    # that themes form as they do on real texts (pure noise would start a theme per review).
    rng = np.random.default_rng(9)
    aspect = [r["text"].rstrip(".").split(". ")[-1] for r in reviews]
    index = {text: k for k, text in enumerate(sorted(set(aspect)))}
    directions = rng.standard_normal((len(index), 384))
    vectors = np.array([directions[index[a]] for a in aspect])
    vectors = vectors + 0.8 * rng.standard_normal(vectors.shape)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    rows = ["| detectors | CPU per review (detectors) | CPU per review (state writes) | state per product |",
            "|---|---|---|---|"]
    for name, (themes, min_users) in _VARIANTS.items():
        runs = [_run(reviews, vectors, themes=themes, min_users=min_users) for _ in range(3)]
        detect, store, size = min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]
        rows.append(f"| {name} | {detect:.0f} µs | {store:.0f} µs | {size / 1024:.1f} kB |")
    triton = (f" For scale: Triton's own CPU per text in this run's `inference` section was "
              f"{stack.triton_cpu_ms_per_text:.1f} ms." if stack.triton_cpu_ms_per_text else "")
    return ("\n".join(rows) + f"\n\n{len(reviews)} generated reviews of 20 products, one with a planted "
            f"complaint; state is sealed, compressed JSON as stored in the `product-monitors` table.{triton}")


def _run(reviews: list[dict], vectors: np.ndarray, *, themes: bool, min_users: int
         ) -> tuple[float, float, int]:
    """(µs of detector CPU per review, µs of state writes per review, bytes of one product's state)."""
    config = MonitorConfig(themes=themes, coordinated_min_users=min_users)
    seal, background = StateSeal(b"0123456789abcdef"), TextBackground()
    monitors: dict[str, SubjectMonitor] = {}
    detect = store = 0.0
    for start in range(0, len(reviews), _BATCH):
        touched = set()
        t0 = time.process_time()
        for r, v in zip(reviews[start:start + _BATCH], vectors[start:start + _BATCH], strict=True):
            monitor = monitors.setdefault(r["product_id"], SubjectMonitor("product", r["product_id"], config))
            ts = datetime.fromisoformat(r["ts"])
            flagged = bool(min_users) and monitor.screen(r["review_id"], r["text"], user=r["user_id"],
                                                         ts=ts)[0]
            label = "negative" if r["rating"] <= 2 else "positive"
            embedding = v if themes else None
            if themes:
                background.learn_one(words_of(r["text"]), embedding, label)
            negative_prob = 0.9 if label == "negative" else 0.1
            observation = Observation(r["review_id"], r["text"], label, negative_prob, ts,
                                      embedding=embedding, coordinated=flagged)
            monitor.observe(observation, background=background)
            touched.add(r["product_id"])
        t1 = time.process_time()
        for key in touched:
            monitors[key].dumps(seal, context=key)
        detect, store = detect + t1 - t0, store + time.process_time() - t1
    size = len(monitors["p0"].dumps(seal, context="p0"))
    return detect / len(reviews) * 1e6, store / len(reviews) * 1e6, size
