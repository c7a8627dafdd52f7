"""Faust's RocksDB table store, as StreamSense's partitioned tables need it (``table_store =
"rocksdb"``; registered as the store URL scheme ``streamsense-rocksdb``).

Faust keeps one RocksDB per table partition and two habits that do not fit tables written from
batches:

* a read picks the database of *Faust's current event's* partition. Inside a ``take_events``
  batch that is whichever event Faust handed on last, not the record whose key is read: a key of
  another partition reads as missing, and its state would start afresh. Here a read finds the
  key's partition from the index of keys written and read (``_key_index``), or asks each open
  partition's database (bloom filters make a miss cheap), whatever the current event;
* a deleted key stays in that index for good: with idle keys expiring
  (:mod:`streams.core.expiry`) the index would grow with every key ever seen. A delete now
  drops it.

Writes still go to the current event's partition: the agents write under the event of the key's
own record (:func:`streams.runtime.as_current_event`).
"""

from __future__ import annotations

from faust import stores
from faust.stores.rocksdb import Store as FaustRocksDBStore

__all__ = ["SCHEME", "RocksDBStore", "register"]

SCHEME = "streamsense-rocksdb"


class RocksDBStore(FaustRocksDBStore):
    def _get(self, key: bytes) -> bytes | None:
        found = self._get_bucket_for_key(key)
        return None if found is None else found.value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _del(self, key: bytes) -> None:
        super()._del(key)
        self._key_index.pop(key, None)


def register() -> None:
    """Make ``streamsense-rocksdb:<table name>`` a table store URL."""
    stores.STORES.aliases[SCHEME] = f"{__name__}:RocksDBStore"
