"""Review bombing: a burst of near-duplicate texts about one subject from many distinct users.

Each text long enough to say something (``min_words``) gets a 64-bit SimHash of its words and
word pairs (Charikar 2002; Manku et al. 2007): texts that share most of their words differ in
few bits, unrelated texts in about half. A :class:`CoordinationDetector` keeps, per subject, the
fingerprints of its last ``memory`` texts within ``window_s`` of event time and up to
``max_bursts`` groups of near-duplicates: a text joins a group when it is within
``max_distance`` bits of the group's centre (each bit the majority of its texts'), and two
recent texts that near start one. When a group holds texts from ``min_users`` distinct users
within the window, and they are at least ``min_share`` of all the subject's texts since the
group's first (a campaign outpaces the subject; a phrase honest users share keeps its pace),
it is a burst: ``drift_detected`` is set once (once per window, however many
groups a campaign's edits split into), and every later text that joins it is ``coordinated``.

This is a rule, not a statistical test: ordinary reviews of one product rarely repeat each
other word for word, and the test suite checks that stable products of generated and of
hand-written reviews raise none (``tests/unit/test_coordination.py``). Texts under
``min_words`` (10) are left out: many honest users write short ones alike ("This product works
perfectly."), and a campaign that wants to be read writes more.

>>> detector = CoordinationDetector(min_users=3)
>>> text = "Terrible product, it broke on the first day and support never answered my emails"
>>> flags = [detector.update(f"r{i}", text + "!" * i, user=f"u{i}", ts=60.0 * i) for i in range(4)]
>>> flags, detector.burst["texts"], detector.burst["users"]
([False, False, True, True], 3, 3)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from typing import Any

import numpy as np

__all__ = ["CoordinationDetector", "simhash"]

_TOKEN = re.compile(r"[a-z0-9']+")
_EXAMPLE_CHARS = 280


def simhash(text: str, *, min_words: int = 10) -> int | None:
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
                 min_words: int = 10, min_share: float = 0.4, memory: int = 32, max_bursts: int = 4,
                 max_users: int = 100) -> None:
        self.window_s = window_s
        self.min_users = min_users
        self.max_distance = max_distance
        self.min_words = min_words
        self.min_share = min_share  # of the subject's texts while the group grew
        self.memory = memory
        self.max_bursts = max_bursts
        self.max_users = max_users
        self.drift_detected = False
        self.burst: dict[str, Any] = {}
        # The last `memory` texts in no group, one column each (plain lists store compactly).
        self._recent_ts: list[float] = []
        self._recent_fingerprint: list[int] = []
        self._recent_user: list[str] = []
        self._groups: list[dict[str, Any]] = []
        self._minutes: dict[str, int] = {}  # texts per minute of event time, within the window

    def update(self, text_id: str, text: str, *, user: str | None, ts: float) -> bool:
        self.drift_detected = False
        minute = str(math.floor(ts / 60))
        self._minutes[minute] = self._minutes.get(minute, 0) + 1  # every text: the subject's pace
        fingerprint = simhash(text, min_words=self.min_words)
        if fingerprint is None:
            return False
        # A 32-bit hash keeps the state small; without a user id each text counts as its own user.
        user_key = str(_user_hash(user or f"text:{text_id}"))
        self._forget(ts - self.window_s)
        near = self.max_distance
        # Against the group's centre (each bit the majority of its texts'), not any member: edits
        # scatter around the message, so the centre is nearer to each than they are to each other,
        # while chaining from member to member would let everyday phrasings drift together.
        group = next((g for g in self._groups if (g["centre"] ^ fingerprint).bit_count() <= near),
                     None)
        if group is None:
            twins = [k for k, f in enumerate(self._recent_fingerprint)
                     if (f ^ fingerprint).bit_count() <= near]
            if not twins:
                self._remember(ts, fingerprint, user_key)
                return False
            group = {"bits": [0] * 64, "centre": 0, "users": {}, "texts": 0, "first": ts, "last": ts,
                     "examples": [], "alerted": False}
            for k in twins:
                self._join(group, self._recent_user[k], self._recent_ts[k], self._recent_fingerprint[k])
            self._keep_recent([k for k in range(len(self._recent_ts)) if k not in twins])
            if len(self._groups) >= self.max_bursts:  # make room: the fewest users, the oldest first
                self._groups.remove(min(self._groups, key=lambda g: (len(g["users"]), g["last"])))
            self._groups.append(group)
        self._join(group, user_key, ts, fingerprint)
        if len(group["examples"]) < 3:
            group["examples"].append({"id": text_id, "text": text[:_EXAMPLE_CHARS]})
        if len(group["users"]) < self.min_users or self._share(group) < self.min_share:
            return False
        if not group["alerted"]:
            # One burst per window: a campaign whose edits split it into two groups is one burst.
            group["alerted"] = True
            self.drift_detected = not any(g["alerted"] for g in self._groups if g is not group)
            self.burst = {"texts": group["texts"], "users": len(group["users"]), "first": group["first"],
                          "last": group["last"], "examples": list(group["examples"])}
        return True

    def _share(self, group: dict[str, Any]) -> float:
        """The group's texts in the window against all the subject's texts since its first one
        (by minute): a campaign outpaces the subject; a phrase honest users share keeps pace."""
        first = math.floor(max(group["first"], group["last"] - self.window_s) / 60)
        texts = sum(n for minute, n in self._minutes.items() if int(minute) >= first)
        return len(group["users"]) / max(texts, 1)

    def _forget(self, horizon: float) -> None:
        """Drop what is older than the window: a burst is many users within it, not over all time."""
        self._keep_recent([k for k, t in enumerate(self._recent_ts) if t >= horizon])
        self._groups = [g for g in self._groups if g["last"] >= horizon]
        self._minutes = {m: n for m, n in self._minutes.items() if (int(m) + 1) * 60 > horizon}
        for g in self._groups:
            g["users"] = {u: t for u, t in g["users"].items() if t >= horizon}

    def _keep_recent(self, keep: list[int]) -> None:
        if len(keep) < len(self._recent_ts):
            self._recent_ts = [self._recent_ts[k] for k in keep]
            self._recent_fingerprint = [self._recent_fingerprint[k] for k in keep]
            self._recent_user = [self._recent_user[k] for k in keep]

    def _remember(self, ts: float, fingerprint: int, user: str) -> None:
        keep = slice(-(self.memory - 1), None)
        self._recent_ts = [*self._recent_ts[keep], ts]
        self._recent_fingerprint = [*self._recent_fingerprint[keep], fingerprint]
        self._recent_user = [*self._recent_user[keep], user]

    def _join(self, group: dict[str, Any], user: str, ts: float, fingerprint: int) -> None:
        """Count a text in ``group``: ``users`` maps each user's hash to their latest time (newest
        last), ``bits`` counts its texts with each fingerprint bit set, ``centre`` their majority."""
        group["texts"] += 1
        bits = np.array(group["bits"]) + _bits(fingerprint)
        group["bits"] = bits.tolist()
        group["centre"] = int(np.packbits(2 * bits >= group["texts"], bitorder="little").view("<u8")[0])
        group["first"], group["last"] = min(group["first"], ts), max(group["last"], ts)
        users = group["users"]
        users.pop(user, None)
        users[user] = ts
        while len(users) > self.max_users:
            del users[next(iter(users))]


def _user_hash(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=4).digest(), "little")


def _bits(fingerprint: int) -> np.ndarray:
    raw = np.array([fingerprint], dtype="<u8").view(np.uint8)
    return np.unpackbits(raw, bitorder="little").astype(np.int64)
