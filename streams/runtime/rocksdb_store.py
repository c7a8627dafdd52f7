"""Faust's RocksDB table store, as StreamSense's partitioned tables need it (``table_store =
"rocksdb"``; registered as the store URL scheme ``streamsense-rocksdb``).

Faust keeps one RocksDB per table partition, and a read picks the database of *Faust's current
event's* partition. Inside a batch that is no event of it (under Faust's ``take_events``,
whichever it handed on last), not the record whose key is read: a key of another partition
reads as missing, and its state would start afresh. Here a read finds the key's partition from
Faust's index of recently used keys (an LRU of ``table_key_index_size``, 1,000 by default) or
asks each open partition's database (bloom filters make a miss cheap), whatever the current
event.

Faust's default options are sized for one database: 64 MiB write buffers (up to three) and a
2 GiB block cache *per partition database*; with five tables of P partitions each, the
worker's memory grew faster in RocksDB than in memory (make soak). :data:`OPTIONS` sizes them
for many small databases.

Writes still go to the current event's partition: the agents write under the event of the key's
own record (:func:`streams.runtime.as_current_event`).
"""

from __future__ import annotations

from faust import stores
from faust.stores.rocksdb import Store as FaustRocksDBStore

__all__ = ["OPTIONS", "SCHEME", "RocksDBStore", "register"]

SCHEME = "streamsense-rocksdb"

# Per partition database (a table's options): 4 MiB write buffers, at most two, and an 8 MiB
# block cache, against Faust's 64 MiB (three) and 2 GiB.
OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20,
           "target_file_size_base": 16 << 20}


class RocksDBStore(FaustRocksDBStore):
    def _get(self, key: bytes) -> bytes | None:
        found = self._get_bucket_for_key(key)
        return None if found is None else found.value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


def register() -> None:
    """Make ``streamsense-rocksdb:<table name>`` a table store URL."""
    stores.STORES.aliases[SCHEME] = f"{__name__}:RocksDBStore"
