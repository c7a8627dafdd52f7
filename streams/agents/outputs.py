"""Sending to the dead-letter topic: the raw bytes, where they came from, and why."""

from __future__ import annotations

from datetime import datetime

from streams.core.ports import OutputTopic
from streams.records import dead_letter, encode

__all__ = ["send_dead_letter"]


async def send_dead_letter(deadletter: OutputTopic, message, reason: str, *, now: datetime) -> None:
    """Dead-letter one consumed record (the raw bytes, where they came from, and why)."""
    record = dead_letter(source_topic=message.topic, partition=message.partition, offset=message.offset,
                         raw=message.value, error=reason, now=now)
    await deadletter.send(key=message.key, value=encode(record))
