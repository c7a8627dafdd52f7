"""What the agents enforce on every input, in one object built from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.core.eventtime import EventTimeWindow
from streams.records import MAX_INPUT_BYTES

__all__ = ["MAX_OUTPUT_BYTES", "InputRules"]

# Faust's producer refuses requests over 1,000,000 bytes (Kafka's max.request.size): an output
# over this is never sent; the record that made it is dead-lettered with the reason.
MAX_OUTPUT_BYTES = 950_000


@dataclass(frozen=True, slots=True)
class InputRules:
    window: EventTimeWindow = field(default_factory=EventTimeWindow)
    max_input_bytes: int = MAX_INPUT_BYTES
    max_output_bytes: int = MAX_OUTPUT_BYTES
    enriched_embeddings: bool = False  # put each text's embedding in its enriched record
