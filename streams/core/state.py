"""Authenticated state: what the worker writes into a table and may read back.

Every state value is plain data, JSON: detector monitors (:mod:`streams.core.plainstate`),
sentiment adapters and click models (``ClickRecommender.to_state``); reading one back builds
only our own classes and River's, and nothing in it is ever run (no pickle). But the changelog
topics are Kafka topics like any other: whoever can write to one could feed a detector made-up
baselines or a click model made-up weights. So every state value is sealed with HMAC-SHA256
under a key that never travels through Kafka (Settings.state_key / state_key_file), bound to
the table and key it was written under, and checked (in constant time) before anything is
decompressed or parsed. A value
that fails is :class:`~streams.errors.ForgedState`: the caller discards it and starts the key
fresh. Decompression is capped (a small forged value cannot inflate to gigabytes; the cap is
checked only after the MAC, so it guards our own values from growing past what a worker loads).

>>> seal = StateSeal(b"k" * 32)
>>> sealed = seal.seal(b"payload", context="product-monitors/p1")
>>> seal.open(sealed, context="product-monitors/p1")
b'payload'
>>> seal.open(sealed, context="product-monitors/p2")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streams.errors.ForgedState: state for product-monitors/p2 failed authentication (wrong key, ...)
>>> seal.open(b"\\x80\\x04K\\x01.", context="x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streams.errors.ForgedState: state for x is not sealed (5 bytes): ...
"""

from __future__ import annotations

import hashlib
import hmac
import zlib

from streams.errors import ForgedState

__all__ = ["StateSeal", "compress", "decompress"]

_MAGIC = b"SSS1"  # StreamSense sealed state, format 1
_MAC_BYTES = 32


class StateSeal:
    def __init__(self, key: bytes, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        if len(key) < 16:
            raise ValueError("the state key must be at least 16 bytes")
        self._key = key
        self.max_bytes = max_bytes

    def seal(self, payload: bytes, *, context: str) -> bytes:
        return _MAGIC + self._mac(payload, context) + payload

    def open(self, data: bytes, *, context: str) -> bytes:
        """The payload of ``data`` sealed under ``context``; :class:`ForgedState` otherwise."""
        head = len(_MAGIC) + _MAC_BYTES
        if len(data) < head or not data.startswith(_MAGIC):
            raise ForgedState(f"state for {context} is not sealed ({len(data)} bytes): written without "
                              "authentication or not by StreamSense")
        if len(data) - head > self.max_bytes:
            raise ForgedState(f"state for {context} is {len(data)} bytes, over the limit of {self.max_bytes}")
        payload = data[head:]
        if not hmac.compare_digest(data[len(_MAGIC):head], self._mac(payload, context)):
            raise ForgedState(f"state for {context} failed authentication (wrong key, forged or copied "
                              "from another key)")
        return payload

    def _mac(self, payload: bytes, context: str) -> bytes:
        ctx = context.encode("utf-8")
        mac = hmac.new(self._key, _MAGIC + len(ctx).to_bytes(4, "big") + ctx, hashlib.sha256)
        mac.update(payload)
        return mac.digest()


def compress(data: bytes) -> bytes:
    return zlib.compress(data, 3)


def decompress(data: bytes, *, max_bytes: int) -> bytes:
    """zlib-decompress at most ``max_bytes``; :class:`ForgedState` if there is more or it is cut.

    >>> decompress(compress(b"a" * 1000), max_bytes=10)
    Traceback (most recent call last):
    ...
    streams.errors.ForgedState: state decompresses to more than 10 bytes
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ForgedState(f"state is not valid zlib data: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise ForgedState(f"state decompresses to more than {max_bytes} bytes")
    if not inflater.eof:
        raise ForgedState("state is cut short (incomplete zlib stream)")
    return out
