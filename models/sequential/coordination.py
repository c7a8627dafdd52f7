"""Review bombing: a burst of near-duplicate texts about one subject from many distinct users.

Each text long enough to say something (``min_words``) gets a 64-bit SimHash of its words and
word pairs (Charikar 2002; Manku et al. 2007): texts that share most of their words differ in
few bits, unrelated texts in about half. A :class:`CoordinationDetector` keeps, per subject, the
fingerprints of its last ``memory`` texts within ``window_s`` of event time and up to
``max_bursts`` groups of near-duplicates: a text joins a group when it is within
``max_distance`` bits of the group's centre (each bit the majority of its texts'), and two
recent texts that near start one. When a group holds texts from ``min_users`` distinct users
within the window, it is a burst: ``drift_detected`` is set once (once per window, however many
groups a campaign's edits split into), and every later text that joins it is ``coordinated``.

This is a rule, not a statistical test: ordinary reviews of one product rarely repeat each
other word for word, and the test suite checks that stable products of generated and of
hand-written reviews raise none (``tests/unit/test_coordination.py``). Very short texts
("Great!") are left out, since many honest users write them alike.

>>> detector = CoordinationDetector(min_users=3)
>>> text = "Terrible product, it broke on the first day and support never answered my emails"
>>> flags = [detector.update(f"r{i}", text + "!" * i, user=f"u{i}", ts=60.0 * i) for i in range(4)]
>>> flags, detector.burst["texts"], detector.burst["users"]
([False, False, True, True], 3, 3)
"""

from __future__ import annotations

import hashlib
import itertools
import re
from typing import Any

import numpy as np

__all__ = ["CoordinationDetector", "simhash"]

_TOKEN = re.compile(r"[a-z0-9']+")
_EXAMPLE_CHARS = 280


def simhash(text: str, *, min_words: int = 6) -> int | None:
    """A 64-bit SimHash of ``text``'s words and word pairs; None for texts under ``min_words``.

    >>> a = simhash("the battery died after two days and the seller ignored me")
    >>> b = simhash("the battery died after three days and the seller ignored me")
    >>> c = simhash("lovely colour, fits the desk well and arrived in good time")
    >>> (a ^ b).bit_count() < 16 < (a ^ c).bit_count()
    True
    """
    words = _TOKEN.findall(text.lower())
    if len(words) < min_words:
        return None
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    digests = np.frombuffer(b"".join(hashlib.blake2b(f.encode(), digest_size=8).digest() for f in features),
                            dtype="<u8")
    bits = np.unpackbits(digests.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    votes = bits.sum(axis=0) * 2 > len(features)
    return int(np.packbits(votes, bitorder="little").view("<u8")[0])


class CoordinationDetector:
    """Bursts of near-duplicate texts from many users about one subject (see the module docstring).

    ``update`` returns whether the text belongs to a burst; ``drift_detected`` is True right
    after the update that made a burst (once per burst), whose numbers are then in ``burst``."""

    def __init__(self, *, window_s: float = 3600.0, min_users: int = 10, max_distance: int = 14,
                 min_words: int = 6, memory: int = 32, max_bursts: int = 4, max_users: int = 100) -> None:
        self.window_s = window_s
        self.min_users = min_users
        self.max_distance = max_distance
        self.min_words = min_words
        self.memory = memory
        self.max_bursts = max_bursts
        self.max_users = max_users
        self.drift_detected = False
        self.burst: dict[str, Any] = {}
        self._recent: list[list[Any]] = []  # [ts, fingerprint, user hash, text id]
        self._groups: list[dict[str, Any]] = []

    def update(self, text_id: str, text: str, *, user: str | None, ts: float) -> bool:
        self.drift_detected = False
        fingerprint = simhash(text, min_words=self.min_words)
        if fingerprint is None:
            return False
        # A 32-bit hash keeps the state small; without a user id each text counts as its own user.
        user_key = _user_hash(user or f"text:{text_id}")
        horizon = ts - self.window_s
        self._recent = [r for r in self._recent if r[0] >= horizon]
        self._groups = [g for g in self._groups if g["last"] >= horizon]
        for g in self._groups:  # a burst is many users within the window, not over all time
            g["users"] = [u for u in g["users"] if u[1] >= horizon]
        near = self.max_distance
        # Against the group's centre (each bit the majority of its texts'), not any member: edits
        # scatter around the message, so the centre is nearer to each than they are to each other,
        # while chaining from member to member would let everyday phrasings drift together.
        group = next((g for g in self._groups
                      if (_centre(g["bits"], g["texts"]) ^ fingerprint).bit_count() <= near), None)
        if group is None:
            twins = [r for r in self._recent if (r[1] ^ fingerprint).bit_count() <= near]
            if not twins:
                self._recent = [*self._recent[-(self.memory - 1):], [ts, fingerprint, user_key, text_id]]
                return False
            self._recent = [r for r in self._recent if r not in twins]
            group = {"bits": [0] * 64, "users": [], "texts": 0, "first": min(r[0] for r in twins),
                     "last": ts, "examples": [], "alerted": False}
            for twin in twins:
                self._join(group, twin[2], twin[0], twin[1])
            if len(self._groups) >= self.max_bursts:  # make room: the fewest users, the oldest first
                self._groups.remove(min(self._groups, key=lambda g: (len(g["users"]), g["last"])))
            self._groups.append(group)
        self._join(group, user_key, ts, fingerprint)
        if len(group["examples"]) < 3:
            group["examples"].append({"id": text_id, "text": text[:_EXAMPLE_CHARS]})
        if len(group["users"]) < self.min_users:
            return False
        if not group["alerted"]:
            # One burst per window: a campaign whose edits split it into two groups is one burst.
            group["alerted"] = True
            self.drift_detected = not any(g["alerted"] for g in self._groups if g is not group)
            self.burst = {"texts": group["texts"], "users": len(group["users"]), "first": group["first"],
                          "last": group["last"], "examples": list(group["examples"])}
        return True

    def _join(self, group: dict[str, Any], user: int, ts: float, fingerprint: int) -> None:
        """Count a text in ``group``; ``users`` holds [user hash, their latest time], newest last;
        ``bits`` how many of its texts have each fingerprint bit set."""
        group["texts"] += 1
        group["bits"] = [n + (fingerprint >> bit & 1) for bit, n in enumerate(group["bits"])]
        group["first"], group["last"] = min(group["first"], ts), max(group["last"], ts)
        others = [u for u in group["users"] if u[0] != user]
        group["users"] = [*others[-(self.max_users - 1):], [user, ts]]


def _user_hash(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=4).digest(), "little")


def _centre(bits: list[int], texts: int) -> int:
    """The fingerprint whose bits are the majority of a group's ``texts`` (ties: set)."""
    return sum(1 << bit for bit, n in enumerate(bits) if 2 * n >= texts)
