"""Reading a topic in a consumer group with kafka-python or confluent-kafka, behind one interface.

The daemon owns the offsets: its checkpoint is the only record of what has been learned. So the
sources never auto-commit and never start from the group's committed offsets. When the group
assigns partitions (at start, after a rebalance, after a broker outage), the source asks the
daemon where each one continues (``on_assign``) and seeks there; partitions the daemon does not
know start from ``start_from``. ``commit`` exists for monitoring tools only. Given a ``choose``
function, a source joins no group rebalance: it reads the topic's partition list once and assigns
itself the partitions ``choose`` picks (``on_assign`` still says where each continues).

Both clients give the same behaviour: ``poll`` returns records in offset order per partition,
``end_offsets`` asks the broker (and so doubles as a health probe), and broker trouble is
reported through ``on_error`` or as :class:`SourceError`, never by exiting. Options the client
refuses are :class:`~stream.daemon.config.KafkaClientConfigError`, raised when the source is
opened.

While the daemon learns a long batch, ``pause`` stops fetching and ``keep_alive`` polls without
taking records, so the group does not count the consumer as gone (``max_poll_interval_ms``);
``resume`` continues from the first record not yet returned (stream/daemon/keep_alive.py).

Neither client resets an out-of-range position on its own (``auto.offset.reset`` is off): an
offset the broker no longer has (the topic was recreated or truncated under the daemon) is
reported to ``on_reset``, and the partition then continues from ``start_from``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from stream.daemon.config import KafkaClientConfigError, KafkaConfig
from stream.sources.kafka_options import KafkaOptionsError, kafka_python_options

# Partition -> offset to continue from, for the partitions the daemon knows.
AssignHandler = Callable[[list[int]], dict[int, int]]
ErrorHandler = Callable[[str], None]
# Told of an offset reset: the partition, and the offset the client found out of range.
ResetHandler = Callable[[int, int], None]
# The topic's partitions -> those this consumer reads, for a manual assignment without a group
# rebalance (a scaled-out daemon's ranks: stream/daemon/distributed.py).
PartitionChooser = Callable[[list[int]], list[int]]

# librdkafka and kafka-python log through stdlib logging under this name.
client_log = logging.getLogger("streamcl.kafka")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    value: bytes | None


def client_error(exc: BaseException) -> str:
    """A Kafka client's exception in one line, its type named once (kafka-python's errors
    already begin with it: "KafkaTimeoutError: Unable to bootstrap ...")."""
    text = str(exc)
    name = type(exc).__name__
    line = text if text.startswith(name) else f"{name}: {text}"
    if "Unable to bootstrap" in text:  # kafka-python's answer when nothing answers there
        line += " (is a Kafka broker listening at that address, and reachable from here?)"
    return line


class SourceError(RuntimeError):
    """A broker request that failed or timed out; the daemon retries with backoff."""


class KafkaSource(ABC):
    """One consumer of ``config.topic`` in group ``config.group``."""

    on_reset: ResetHandler | None = None  # set by the daemon

    def __init__(
        self,
        config: KafkaConfig,
        on_assign: AssignHandler,
        on_error: ErrorHandler,
        choose: PartitionChooser | None = None,
    ) -> None:
        self.config = config
        self.choose = choose
        self.topic = config.topic
        self.on_assign = on_assign
        self.on_error = on_error
        self.paused = False

    @abstractmethod
    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds for the first."""

    @abstractmethod
    def assignment(self) -> list[int]:
        """Partitions assigned to this consumer now."""

    @abstractmethod
    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        """The broker's end offset per partition; :class:`SourceError` if it does not answer."""

    @abstractmethod
    def highwater(self, partitions: list[int]) -> dict[int, int]:
        """The end offsets the last fetches reported (no request; partitions not fetched yet
        are left out)."""

    @abstractmethod
    def commit(self, offsets: dict[int, int]) -> None:
        """Tell the group how far the daemon has learned (for lag monitors; best effort)."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group."""

    def pause(self) -> None:
        """Stop fetching from every assigned partition (and any assigned until ``resume``);
        a source with no group membership only notes it."""
        self.paused = True

    def resume(self) -> None:
        """Fetch again, from the first record ``poll`` has not returned."""
        self.paused = False

    def keep_alive(self) -> list[Record]:
        """Poll while paused: tells the group the consumer is alive (and serves a rebalance).
        Returns what a partition not paused in time gave (normally nothing), for the caller
        to learn; :class:`SourceError` if the client fails. A source with no group membership
        has nothing to keep alive."""
        return []


def open_source(
    config: KafkaConfig,
    on_assign: AssignHandler,
    on_error: ErrorHandler,
    choose: PartitionChooser | None = None,
) -> KafkaSource:
    """The source for ``config.client``; manually assigned when ``choose`` is given."""
    if config.client == "confluent":
        return ConfluentSource(config, on_assign, on_error, choose)
    return KafkaPythonSource(config, on_assign, on_error, choose)


class ConfluentSource(KafkaSource):
    """confluent-kafka (librdkafka): fetches in background threads, the faster client."""

    def __init__(
        self,
        config: KafkaConfig,
        on_assign: AssignHandler,
        on_error: ErrorHandler,
        choose: PartitionChooser | None = None,
    ) -> None:
        super().__init__(config, on_assign, on_error, choose)
        import confluent_kafka as ck

        self._ck = ck
        # what the broker answers for a topic or partition that does not exist (yet)
        self._absent = {ck.KafkaError._UNKNOWN_PARTITION, ck.KafkaError.UNKNOWN_TOPIC_OR_PART}
        settings = {
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A checkpoint's position the broker no longer has is an event for the daemon
            # (poll reports it); new partitions start from start_from in _assigned.
            "auto.offset.reset": "error",
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": config.heartbeat_interval_ms,
            "max.poll.interval.ms": config.max_poll_interval_ms,
            "socket.timeout.ms": config.request_timeout_ms,
            "fetch.wait.max.ms": config.fetch_max_wait_ms,
            # When the local queue is full (the learner is slower than the broker), librdkafka
            # waits this long before fetching again; its default, a second, leaves the queue
            # empty and the learner idle for most of that second.
            "fetch.queue.backoff.ms": 10,
            # A subscribed topic that does not exist yet is looked for at each metadata
            # refresh: every 5 minutes by default, so a daemon started before its topic learned
            # nothing for minutes after the topic was made. The lag probe's interval instead.
            "topic.metadata.refresh.interval.ms": max(
                1000, int(config.probe_interval_seconds * 1000)
            ),
            "error_cb": self._client_error,
            "logger": client_log,
            **config.options,
        }
        strategy = str(settings.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        try:
            self.consumer = ck.Consumer(settings)
        except (ck.KafkaException, TypeError, ValueError) as exc:
            raise KafkaClientConfigError(f"kafka.options for confluent-kafka: {exc}") from None
        if choose is not None:
            try:
                metadata = self.consumer.list_topics(config.topic, config.request_timeout_ms / 1000)
            except ck.KafkaException as exc:
                self.consumer.close()
                raise SourceError(f"partitions of {config.topic}: {exc}") from None
            topic = metadata.topics.get(config.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                self.consumer.close()
                raise SourceError(f"topic {config.topic!r} has no partitions (yet)")
            chosen = choose(sorted(topic.partitions))
            self._cooperative = False
            self._assigned(self.consumer, [ck.TopicPartition(config.topic, p) for p in chosen])
            return
        self.consumer.subscribe(
            [config.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    def _client_error(self, error: object) -> None:
        self.on_error(str(error))

    def _assigned(self, consumer: object, partitions: list) -> None:
        ck = self._ck
        resume = self.on_assign([tp.partition for tp in partitions])
        start = ck.OFFSET_BEGINNING if self.config.start_from == "earliest" else ck.OFFSET_END
        for tp in partitions:
            tp.offset = resume.get(tp.partition, start)
        if self._cooperative:
            self.consumer.incremental_assign(partitions)
        else:
            self.consumer.assign(partitions)
        if self.paused:
            self.consumer.pause(partitions)

    def _revoked(self, consumer: object, partitions: list) -> None:
        if self._cooperative:
            self.consumer.incremental_unassign(partitions)
        else:
            self.consumer.unassign()

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        ck = self._ck
        try:
            messages = self.consumer.consume(max_records, timeout)
        except ck.KafkaException as exc:
            raise SourceError(str(exc)) from None
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # set on every fetched record
                records.append(Record(partition, offset, message.value()))
            elif error.code() == ck.KafkaError._AUTO_OFFSET_RESET:
                partition, offset = message.partition(), message.offset()
                assert partition is not None
                self._out_of_range(partition, -1 if offset is None else offset)
            elif error.code() != ck.KafkaError._PARTITION_EOF:
                self.on_error(str(error))
                if error.fatal():
                    raise SourceError(str(error))
        return records

    def _out_of_range(self, partition: int, offset: int) -> None:
        if self.on_reset is not None:
            self.on_reset(partition, offset)
        ck = self._ck
        start = ck.OFFSET_BEGINNING if self.config.start_from == "earliest" else ck.OFFSET_END
        try:
            self.consumer.seek(ck.TopicPartition(self.topic, partition, start))
        except ck.KafkaException as exc:
            raise SourceError(f"seeking partition {partition} after a reset: {exc}") from None

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self.consumer.assignment())

    def pause(self) -> None:
        super().pause()
        # librdkafka drops what it fetched for these partitions and, on resume, fetches again
        # from the position after the last record consume() returned.
        self.consumer.pause([self._ck.TopicPartition(self.topic, p) for p in self.assignment()])

    def resume(self) -> None:
        super().resume()
        self.consumer.resume([self._ck.TopicPartition(self.topic, p) for p in self.assignment()])

    def keep_alive(self) -> list[Record]:
        return self.poll(1, 0.0)

    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        ck = self._ck
        deadline = time.monotonic() + timeout
        ends = {}
        for partition in partitions:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceError(f"end offsets not all answered within {timeout:g} s")
            try:
                _, high = self.consumer.get_watermark_offsets(
                    ck.TopicPartition(self.topic, partition), timeout=left, cached=False
                )
            except ck.KafkaException as exc:
                if exc.args and exc.args[0].code() in self._absent:
                    # the broker answered that the topic (or partition) does not exist yet:
                    # nothing to read, as kafka-python reports it; not an unreachable broker
                    ends[partition] = 0
                    continue
                raise SourceError(f"end offset of partition {partition}: {exc}") from None
            ends[partition] = int(high)
        return ends

    def highwater(self, partitions: list[int]) -> dict[int, int]:
        ck = self._ck
        ends = {}
        for partition in partitions:
            try:
                _, high = self.consumer.get_watermark_offsets(
                    ck.TopicPartition(self.topic, partition), cached=True
                )
            except ck.KafkaException:
                continue
            if high >= 0:
                ends[partition] = int(high)
        return ends

    def commit(self, offsets: dict[int, int]) -> None:
        ck = self._ck
        assigned = set(self.assignment())
        chosen = [ck.TopicPartition(self.topic, p, o) for p, o in offsets.items() if p in assigned]
        if not chosen:
            return
        try:
            self.consumer.commit(offsets=chosen, asynchronous=True)
        except ck.KafkaException as exc:
            client_log.debug("monitoring commit failed: %s", exc)

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonSource(KafkaSource):
    """kafka-python: pure Python, the client the user named as the default."""

    def __init__(
        self,
        config: KafkaConfig,
        on_assign: AssignHandler,
        on_error: ErrorHandler,
        choose: PartitionChooser | None = None,
    ) -> None:
        super().__init__(config, on_assign, on_error, choose)
        import kafka
        import kafka.errors

        self._kafka = kafka
        try:
            options = kafka_python_options(config.options, "consumer")
        except KafkaOptionsError as exc:  # a config error, never retried
            raise KafkaClientConfigError(str(exc)) from None
        try:
            self.consumer = kafka.KafkaConsumer(
                bootstrap_servers=config.bootstrap.split(","),
                group_id=config.group,
                enable_auto_commit=False,
                # out-of-range positions raise from poll (see _out_of_range)
                auto_offset_reset="none",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                request_timeout_ms=config.request_timeout_ms,
                bootstrap_timeout_ms=config.request_timeout_ms,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
                **options,
            )
        except (kafka.errors.KafkaConfigurationError, AssertionError, TypeError, ValueError) as exc:
            # an option kafka-python does not know, or a value it refuses
            raise KafkaClientConfigError(f"kafka.options for kafka-python: {exc}") from None
        except kafka.errors.KafkaError as exc:
            # kafka-python meets the brokers in its constructor; confluent-kafka does it later.
            raise SourceError(client_error(exc)) from None
        if choose is not None:
            try:
                found = self.consumer.partitions_for_topic(config.topic)
            except kafka.errors.KafkaError as exc:
                self.consumer.close(autocommit=False)
                raise SourceError(f"partitions of {config.topic}: {exc}") from None
            if not found:
                self.consumer.close(autocommit=False)
                raise SourceError(f"topic {config.topic!r} has no partitions (yet)")
            chosen = [kafka.TopicPartition(config.topic, p) for p in choose(sorted(found))]
            self.consumer.assign(chosen)
            self._assigned(chosen)
            return
        source = self

        class Listener(kafka.ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: object) -> None:
                """Nothing to do: what was learned stays learned and the positions stay known."""

            def on_partitions_assigned(self, assigned: object) -> None:
                source._assigned(list(assigned))  # type: ignore[call-overload]

        self.consumer.subscribe([config.topic], listener=Listener())

    def _assigned(self, partitions: list) -> None:
        resume = self.on_assign([tp.partition for tp in partitions])
        for tp in partitions:
            if tp.partition in resume:
                self.consumer.seek(tp, resume[tp.partition])
            elif self.config.start_from == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
        if self.paused:
            self.consumer.pause(*partitions)

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        try:
            batches = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except self._kafka.errors.OffsetOutOfRangeError as exc:
            for tp, offset in exc.args[0].items():
                if self.on_reset is not None:
                    self.on_reset(tp.partition, int(offset))
                if self.config.start_from == "earliest":
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek_to_end(tp)
            return []
        except self._kafka.errors.KafkaError as exc:
            raise SourceError(client_error(exc)) from None
        return [
            Record(tp.partition, message.offset, message.value)
            for tp, messages in batches.items()
            for message in messages
        ]

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self.consumer.assignment())

    def pause(self) -> None:
        super().pause()
        # kafka-python drops fetched records of paused partitions without moving the position.
        tps = [self._kafka.TopicPartition(self.topic, p) for p in self.assignment()]
        self.consumer.pause(*tps)

    def resume(self) -> None:
        super().resume()
        tps = [self._kafka.TopicPartition(self.topic, p) for p in self.assignment()]
        self.consumer.resume(*tps)

    def keep_alive(self) -> list[Record]:
        return self.poll(1, 0.0)

    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        kafka = self._kafka
        wanted = [kafka.TopicPartition(self.topic, p) for p in partitions]
        try:
            ends = self.consumer.end_offsets(wanted, timeout_ms=int(timeout * 1000))
        except kafka.errors.KafkaError as exc:
            raise SourceError(f"end offsets: {client_error(exc)}") from None
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def highwater(self, partitions: list[int]) -> dict[int, int]:
        kafka = self._kafka
        ends = {}
        for partition in partitions:
            high = self.consumer.highwater(kafka.TopicPartition(self.topic, partition))
            if high is not None:
                ends[partition] = int(high)
        return ends

    def commit(self, offsets: dict[int, int]) -> None:
        kafka = self._kafka
        assigned = set(self.assignment())
        chosen = {
            kafka.TopicPartition(self.topic, p): kafka.OffsetAndMetadata(o, "", -1)
            for p, o in offsets.items()
            if p in assigned
        }
        if not chosen:
            return
        try:
            self.consumer.commit_async(chosen)
        except kafka.errors.KafkaError as exc:
            client_log.debug("monitoring commit failed: %s", exc)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
