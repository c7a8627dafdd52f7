"""Committed offsets read as Kafka's Java consumer reads them under ``read_committed``: stable
(KIP-447). Applied by :func:`streams.runtime.faust_patches.apply`.

Kafka's Python client (aiokafka 0.14) reads a group's committed offsets with OffsetFetch v3.
An offset committed inside a transaction is *pending* until the transaction's commit marker
has been written and the group coordinator has loaded it; until then v3 answers with the offset
from before, as if the transaction had not committed. A worker that takes a partition over
right after its previous owner committed can therefore read its records again from an old
offset and commit their outputs a second time. OffsetFetch v7 adds ``require_stable``: the
broker answers ``UNSTABLE_OFFSET_COMMIT`` for a partition with a pending transactional offset,
and the client asks again once the transaction has ended (committed, aborted by the next owner's
producer, or by Kafka's transaction timeout). That is what this module sends, to a broker that
knows v7 (Kafka 2.5 and later); older brokers are asked as before. Under at-least-once no offset
is ever pending, so nothing changes there.
"""

from __future__ import annotations

import collections
import logging
import time

from aiokafka import errors as kafka_errors
from aiokafka.consumer import group_coordinator
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetFetchRequest_v1, OffsetFetchRequest_v2, OffsetFetchRequest_v3
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

__all__ = ["PATCHED", "OffsetFetchResponse_v7", "StableOffsetFetchRequest", "UnstableOffsetCommit",
           "apply", "committed_offsets"]

log = logging.getLogger(__name__)

UNSTABLE_OFFSET_COMMIT = 88  # Kafka's error code; aiokafka 0.14 has no class for it
UNKNOWN_OFFSET = -1
PATCHED = ((group_coordinator.GroupCoordinator, "_do_fetch_commit_offsets"),)


class UnstableOffsetCommit(kafka_errors.KafkaError):
    """A partition's committed offset is part of a transaction still being completed."""
    errno = UNSTABLE_OFFSET_COMMIT
    retriable = True


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partition_indexes", CompactArray(Int32)),
            ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


_Versions = OffsetFetchRequest_v1 | OffsetFetchRequest_v2 | OffsetFetchRequest_v3 | OffsetFetchRequest_v7


class StableOffsetFetchRequest(Request[_Versions]):
    """OffsetFetch for the given partitions, asking for stable offsets where the broker can."""
    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[tuple[str, list[int]]]):
        self._group_id = group_id
        self._partitions = partitions

    def build(self, request_struct_class):
        if request_struct_class is OffsetFetchRequest_v7:
            topics = [(topic, partitions, {}) for topic, partitions in self._partitions]
            return OffsetFetchRequest_v7(self._group_id, topics, True, {})
        return request_struct_class(self._group_id, self._partitions)


def committed_offsets(response, coordinator=None) -> dict[TopicPartition, OffsetAndMetadata]:
    """The committed offsets in an OffsetFetch response (v1-v3 or v7), raising as aiokafka
    does for errors that mean "ask again" (pending transaction, coordinator loading or moved)."""
    _raise_for(getattr(response, "error_code", 0), coordinator)
    offsets = {}
    flexible = response.API_VERSION >= 6
    for topic, partitions, *_ in response.topics:
        for entry in partitions:
            if flexible:
                partition, offset, _epoch, metadata, error_code, _tags = entry
            else:
                partition, offset, metadata, error_code = entry
            if error_code == kafka_errors.UnknownTopicOrPartitionError.errno:
                log.warning("OffsetFetchRequest -- unknown topic %s", topic)
                continue
            _raise_for(error_code, coordinator)
            if offset != UNKNOWN_OFFSET:
                offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, metadata or "")
    return offsets


def _raise_for(error_code: int, coordinator) -> None:
    if not error_code:
        return
    if error_code == UNSTABLE_OFFSET_COMMIT:
        raise UnstableOffsetCommit()
    error_type = kafka_errors.for_code(error_code)
    if error_type is kafka_errors.NotCoordinatorForGroupError and coordinator is not None:
        coordinator.coordinator_dead()
    if error_type in (kafka_errors.GroupLoadInProgressError, kafka_errors.NotCoordinatorForGroupError,
                      kafka_errors.GroupCoordinatorNotAvailableError):
        raise error_type()
    if error_type is kafka_errors.GroupAuthorizationFailedError:
        raise error_type(coordinator.group_id if coordinator is not None else "")
    raise kafka_errors.KafkaError(repr(error_type()))


async def _do_fetch_commit_offsets(self, partitions):
    """aiokafka's GroupCoordinator._do_fetch_commit_offsets with :class:`StableOffsetFetchRequest`.
    Its caller retries retriable errors after the retry backoff: a pending transaction ends
    within Kafka's transaction timeout, so the wait is bounded by it."""
    by_topic = collections.defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    response = await self._send_req(StableOffsetFetchRequest(self.group_id, list(by_topic.items())))
    try:
        return committed_offsets(response, self)
    except UnstableOffsetCommit:
        _note_unstable(self, partitions)
        raise


def _note_unstable(coordinator, partitions) -> None:
    now = time.monotonic()
    if now - coordinator.__dict__.get("_streamsense_unstable_logged", float("-inf")) >= 10.0:
        coordinator._streamsense_unstable_logged = now
        log.info("committed offsets of %s are in a transaction still being completed; asking again",
                 sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))


def apply() -> None:
    cls = group_coordinator.GroupCoordinator
    if not callable(getattr(cls, "_do_fetch_commit_offsets", None)):
        raise RuntimeError("aiokafka changed: GroupCoordinator._do_fetch_commit_offsets is gone; "
                           "review streams/runtime/offsets.py against the new version")
    cls._do_fetch_commit_offsets = _do_fetch_commit_offsets
