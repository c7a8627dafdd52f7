"""StreamSense's exceptions: one root, so callers can catch everything the package raises on
purpose (``except StreamSenseError``) apart from bugs."""

from __future__ import annotations

__all__ = ["ForgedState", "OutputRejected", "OutputTooLarge", "StreamSenseError"]


class StreamSenseError(Exception):
    """Root of every exception StreamSense raises on purpose."""


class OutputTooLarge(StreamSenseError):
    """An output record would exceed the producer's message limit: the record that produced it
    is dead-lettered instead."""


class OutputRejected(StreamSenseError):
    """Kafka refused an output while its input partition was still ours (not a revocation):
    handled like any processing failure (retry, then dead-letter)."""


class ForgedState(StreamSenseError):
    """State read back from a table failed its authentication, or is over its size limit: it is
    discarded (the key starts fresh) and counted, never loaded."""
