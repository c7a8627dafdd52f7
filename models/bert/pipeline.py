"""Text in, model tensors out, and back to labels and entity spans: used offline and in Triton.

Depends only on numpy and ``tokenizers``, because ``export`` copies this file next to the
Triton model (the Python backend cannot import this package).

The encoder is uncased, so capitalisation, the strongest clue for names, is lost in its
input. Each token therefore carries a casing class computed from the original characters
(:func:`casing_class`), which the tagging head embeds next to the encoder's output.

>>> casing_class("Berlin"), casing_class("berlin"), casing_class("NASA"), casing_class("2024")
(2, 1, 3, 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

__all__ = ["SENTIMENT_LABELS", "TAGS", "Encoded", "analysis_json", "casing_class", "decode_entities",
           "encode", "shift_probs"]

SENTIMENT_LABELS = ("negative", "neutral", "positive")
ENTITY_TYPES = ("PER", "ORG", "LOC", "PRODUCT")
TAGS = ("O", *(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I")))
CASING_CLASSES = 5  # none, lower, Title, UPPER, mixed


def casing_class(piece: str) -> int:
    letters = [c for c in piece if c.isalpha()]
    if not letters:
        return 0
    if all(c.islower() for c in letters):
        return 1
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    if all(c.isupper() for c in letters):
        return 3 if len(letters) > 1 else 2
    return 4


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # int64 [B, T]
    attention_mask: np.ndarray  # int64 [B, T]
    casing: np.ndarray  # int64 [B, T]
    offsets: list[list[tuple[int, int]]]  # per text, per token: character span ((0, 0): special)
    truncated: list[bool]


def encode(tokenizer, texts: list[str], *, max_length: int) -> Encoded:
    """Tokenise a batch (padding to its longest text, truncating at ``max_length`` tokens)."""
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    casing = np.zeros_like(ids)
    offsets: list[list[tuple[int, int]]] = []
    truncated = []
    for i, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
        # Each property of an Encoding builds a new list: read each once, not once per token.
        spans, special = enc.offsets, enc.special_tokens_mask
        offsets.append(spans)
        truncated.append(bool(enc.overflowing))
        casing[i, :len(spans)] = [_casing(text[s:e]) if e > s and not sp else 0
                                  for (s, e), sp in zip(spans, special, strict=True)]
    return Encoded(ids, mask, casing, offsets, truncated)


_CASING_CACHE: dict[str, int] = {}


def _casing(piece: str) -> int:
    """:func:`casing_class`, remembered for the word pieces seen most (a bounded cache)."""
    found = _CASING_CACHE.get(piece)
    if found is None:
        found = casing_class(piece)
        if len(_CASING_CACHE) < 100_000:
            _CASING_CACHE[piece] = found
    return found


def decode_entities(text: str, tag_probs: np.ndarray, offsets: list[tuple[int, int]]
                    ) -> list[dict[str, object]]:
    """Whole entity spans from per-token tag probabilities [T, len(TAGS)].

    A span starts at a B- tag (or an I- tag after a different one) and grows over I- tags of
    its type; it is widened to whole words, so a name split into word pieces comes back whole.
    Its score is the mean probability of its tokens' tags.
    """
    best = tag_probs.argmax(-1)
    entities: list[dict[str, object]] = []
    current: dict[str, object] | None = None
    scores: list[float] = []

    def close() -> None:
        nonlocal current
        if current is not None:
            start, end = _widen(text, int(current["start"]), int(current["end"]))
            entities.append({"text": text[start:end], "type": current["type"], "start": start,
                             "end": end, "score": round(float(np.mean(scores)), 4)})
        current = None

    for j, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        tag = TAGS[int(best[j])]
        if tag == "O":
            close()
            continue
        prefix, kind = tag.split("-", 1)
        continues_word = current is not None and s == current["end"]
        if current is not None and kind == current["type"] and (prefix == "I" or continues_word):
            current["end"] = e
            scores.append(float(tag_probs[j, best[j]]))
            continue
        if current is not None and continues_word:
            current["end"] = e  # a word piece keeps the type of its word
            continue
        close()
        current = {"type": kind, "start": s, "end": e}
        scores = [float(tag_probs[j, best[j]])]
    close()
    return entities


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end


def shift_probs(probs: np.ndarray, log_offsets: np.ndarray | None) -> np.ndarray:
    """Class probabilities with ``log_offsets`` added to their logarithms, renormalised (a
    prior correction, ``models/bert/calibration.py``); rows of ``probs`` are texts.

    >>> shift_probs(np.array([[0.2, 0.5, 0.3]]), np.array([0.0, np.log(0.5), 0.0])).round(4)
    array([[0.2667, 0.3333, 0.4   ]])
    """
    if log_offsets is None or not np.any(log_offsets):
        return probs
    shifted = np.asarray(probs, dtype=np.float64) * np.exp(np.asarray(log_offsets, dtype=np.float64))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.asarray(probs).dtype)


def analysis_json(text: str, sentiment_probs: np.ndarray, tag_probs: np.ndarray,
                  offsets: list[tuple[int, int]], *, truncated: bool, max_tokens: int,
                  model: str) -> str:
    """One text's result as the JSON the text path consumes (``sentiment_probs`` already
    shifted by the version's offsets, :func:`shift_probs`)."""
    probs = {label: round(float(p), 4) for label, p in zip(SENTIMENT_LABELS, sentiment_probs, strict=True)}
    label = max(probs, key=probs.__getitem__)
    body = {"sentiment": {"label": label, "score": probs[label], "probs": probs},
            "entities": decode_entities(text, tag_probs, offsets) if text.strip() else [],
            "truncated": truncated, "max_tokens": max_tokens, "model": model}
    return json.dumps(body, ensure_ascii=False)
