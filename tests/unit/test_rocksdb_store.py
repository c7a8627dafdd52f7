"""The RocksDB table store reads a key from its own partition whatever Faust's current event
(streams/runtime/rocksdb_store.py)."""

import faust

from streams.runtime import as_current_event
from streams.runtime.rocksdb_store import SCHEME, register
from streams.testing import FakeEvent


def _table(tmp_path, name: str, store: str):
    app = faust.App(f"rocks-{name}", datadir=str(tmp_path), store="memory://")
    return app.Table(name, store=store, key_type=str, value_type=str, partitions=2).data


def test_a_key_of_another_partition_is_found_whatever_the_current_event(tmp_path):
    register()
    for store_url, finds in ((f"{SCHEME}:ours", True), ("rocksdb:fausts", False)):
        store = _table(tmp_path, store_url.split(":")[1], store_url)
        with as_current_event(FakeEvent(topic="t", partition=1)):
            store["user-1"] = "state of a partition-1 user"
        store._key_index.clear()  # as after a restart: the key was written by an earlier run
        # A batch's reads happen under whichever event Faust handed on last: here partition 0's.
        with as_current_event(FakeEvent(topic="t", partition=0)):
            found = store.get("user-1")
        # Faust's own store looks in partition 0's database only and reads the state as missing.
        assert (found == "state of a partition-1 user") is finds, store_url


def test_a_deleted_key_reads_as_missing_from_any_partition(tmp_path):
    register()
    store = _table(tmp_path, "deletes", f"{SCHEME}:deletes")
    with as_current_event(FakeEvent(topic="t", partition=1)):
        for n in range(50):
            store[f"user-{n}"] = "{}"
        for n in range(50):
            del store[f"user-{n}"]
    with as_current_event(FakeEvent(topic="t", partition=0)):
        assert store.get("user-3") is None and "user-3" not in store
    assert store.get("user-3") is None
