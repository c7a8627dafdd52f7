"""The seams between the agents and what they write to: an output topic and a table. Faust's
topics and tables satisfy them, and so do the fakes in :mod:`streams.testing`."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["OutputTopic", "Table"]


class OutputTopic(Protocol):
    async def send(self, *, key: bytes | None, value: bytes) -> Any:
        """Send one record (raw bytes: the agents encode their own JSON)."""
        ...


class Table(Protocol):
    """A changelog-backed key-value table (Faust's ``Table``); keys and values are strings."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __getitem__(self, key: str) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...

    def __delitem__(self, key: str) -> None: ...

    def __len__(self) -> int: ...
