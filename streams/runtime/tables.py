"""Helpers for writing Faust tables from an agent's batches (:mod:`.take`)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust.streams import _current_event  # Faust has no public setter; see as_current_event

__all__ = ["as_current_event"]


@contextmanager
def as_current_event(event) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write goes to the changelog partition of
    the event's own partition (in a batch Faust's current event is not the one being
    handled). Tables are keyed like their source topics, so state follows the partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
