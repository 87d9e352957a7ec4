"""Writing to a topic with kafka-python or confluent-kafka: ``streamcl publish`` and the
dead-letter topic.

``ensure_topic`` creates a missing topic (the partition count applies only then) and returns the
partition count. The producer and the admin client get the process's Kafka options
(stream/sources/kafka_options.py: TLS, SASL). ``flush`` waits for every message sent so far
and raises :class:`SinkError` when one was not delivered, so a caller that flushed knows its
messages are in the topic.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, Literal, cast

from stream.daemon.config import KafkaClientConfigError
from stream.sources.kafka_options import KafkaOptionsError, kafka_python_options
from stream.sources.kafka_source import client_error, client_log

Client = Literal["kafka-python", "confluent"]
Headers = list[tuple[str, bytes]]


class SinkError(RuntimeError):
    """Messages that the broker did not take (unreachable, too large, ...).

    ``permanent`` is true when sending the same message again cannot succeed (too large for
    the broker, refused by its policy or ACLs); ``failed`` maps the key of each message whose
    delivery failed to whether that failure was permanent. ``unconfirmed`` is true when a flush
    gave up waiting: the messages it does not name are still with the producer, which delivers
    them or names them at a later flush (sending them again would publish them twice); when it
    is false, every message sent and not named was delivered."""

    def __init__(
        self,
        message: str,
        permanent: bool = False,
        failed: dict[bytes, bool] | None = None,
        unconfirmed: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.failed = dict(failed or {})
        self.unconfirmed = unconfirmed

    def failed_of(self, in_flight: Collection[bytes]) -> dict[bytes, bool]:
        """Which of the messages ``in_flight`` (keys sent since the last good flush) failed,
        and whether for good: those named; every one when the failure names none and is not a
        flush that gave up waiting."""
        if not self.failed and not self.unconfirmed:
            return dict.fromkeys(in_flight, False)
        return {key: permanent for key, permanent in self.failed.items() if key in in_flight}


# Errors after which the same message can never be delivered; anything else (timeouts, a broker
# away) may pass on a retry.
_PERMANENT_CONFLUENT = (
    "MSG_SIZE_TOO_LARGE",
    "INVALID_RECORD",
    "RECORD_LIST_TOO_LARGE",
    "TOPIC_AUTHORIZATION_FAILED",
    "INVALID_TOPIC_EXCEPTION",
    "POLICY_VIOLATION",
    "INVALID_REQUIRED_ACKS",
)
_PERMANENT_KAFKA_PYTHON = (
    "MessageSizeTooLargeError",
    "InvalidRecordError",
    "RecordListTooLargeError",
    "TopicAuthorizationFailedError",
    "InvalidTopicError",
    "PolicyViolationError",
)


def _confluent_permanent(error: Any) -> bool:
    return any(error.code() == getattr(error, code, None) for code in _PERMANENT_CONFLUENT)


def _kafka_python_permanent(exc: BaseException | None) -> bool:
    return type(exc).__name__ in _PERMANENT_KAFKA_PYTHON


class KafkaSink(ABC):
    def __init__(self, bootstrap: str, options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.options = dict(options or {})

    @abstractmethod
    def ensure_topic(self, topic: str, partitions: int = 1, timeout: float = 30.0) -> int:
        """Create ``topic`` if it does not exist; its number of partitions."""

    @abstractmethod
    def send(
        self,
        topic: str,
        value: bytes,
        partition: int | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one message (``flush`` waits for it)."""

    @abstractmethod
    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything sent is delivered; :class:`SinkError` if something was not."""

    @abstractmethod
    def close(self) -> None: ...


def open_sink(client: Client, bootstrap: str, options: dict[str, Any] | None = None) -> KafkaSink:
    if client == "confluent":
        return ConfluentSink(bootstrap, options)
    return KafkaPythonSink(bootstrap, options)


class ConfluentSink(KafkaSink):
    def __init__(self, bootstrap: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(bootstrap, options)
        import confluent_kafka as ck

        self._ck = ck
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "logger": client_log,
            **self.options,
        }
        self.producer = ck.Producer(settings)
        self._failures: list[tuple[bytes, str, bool]] = []

    def ensure_topic(self, topic: str, partitions: int = 1, timeout: float = 30.0) -> int:
        from confluent_kafka.admin import AdminClient, NewTopic

        ck = self._ck
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "logger": client_log,
            **self.options,
        }
        admin = AdminClient(settings)
        try:
            metadata = admin.list_topics(timeout=timeout)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
                try:
                    future.result(timeout)
                except ck.KafkaException as exc:
                    if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
            found = self.producer.list_topics(topic, timeout=timeout).topics[topic]
        except ck.KafkaException as exc:
            raise SinkError(f"topic {topic!r} on {self.bootstrap}: {exc}") from None
        return len(found.partitions)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failures.append((message.key() or b"", str(error), _confluent_permanent(error)))

    def send(
        self,
        topic: str,
        value: bytes,
        partition: int | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=cast(Any, headers),
                    on_delivery=self._delivered,
                    **extra,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self.producer.poll(0.05)
            except self._ck.KafkaException as exc:
                raise SinkError(
                    f"sending to {topic!r}: {exc}", permanent=_confluent_permanent(exc.args[0])
                ) from None
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        left = self.producer.flush(timeout)
        failures, self._failures = self._failures, []
        failed = {key: permanent for key, _, permanent in failures}
        if left:
            named = f"; {len(failures)} failed: {failures[0][1]}" if failures else ""
            raise SinkError(
                f"{left} messages not delivered within {timeout:g} s{named}",
                failed=failed,
                unconfirmed=True,
            )
        if failures:
            raise SinkError(
                f"{len(failures)} messages not delivered: {failures[0][1]}", failed=failed
            )

    def close(self) -> None:
        self.producer.flush(0)


class KafkaPythonSink(KafkaSink):
    def __init__(self, bootstrap: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(bootstrap, options)
        import kafka
        import kafka.errors

        self._kafka = kafka
        try:
            options = kafka_python_options(self.options, "producer")
        except KafkaOptionsError as exc:  # a config error, never retried
            raise KafkaClientConfigError(str(exc)) from None
        try:
            self.producer = kafka.KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                **{"linger_ms": 5, **options},  # a user's linger_ms replaces this default
            )
        except (kafka.errors.KafkaConfigurationError, AssertionError, TypeError, ValueError) as exc:
            # a value kafka-python refuses (one it checks, such as delivery_timeout_ms)
            raise KafkaClientConfigError(f"kafka.options for kafka-python: {exc}") from None
        except kafka.errors.KafkaError as exc:
            raise SinkError(f"{bootstrap}: {client_error(exc)}") from None
        self._pending: list[tuple[bytes, Any]] = []

    def ensure_topic(self, topic: str, partitions: int = 1, timeout: float = 30.0) -> int:
        kafka = self._kafka
        from kafka.admin import NewTopic

        try:
            admin = kafka.KafkaAdminClient(
                **{
                    **kafka_python_options(self.options, "admin"),
                    "bootstrap_servers": self.bootstrap.split(","),
                    "request_timeout_ms": int(timeout * 1000),
                }
            )
            try:
                if topic not in admin.list_topics():
                    with contextlib.suppress(kafka.errors.TopicAlreadyExistsError):
                        admin.create_topics([NewTopic(topic, partitions, 1)])
            finally:
                admin.close()
            found = self.producer.partitions_for(topic)
        except kafka.errors.KafkaError as exc:
            raise SinkError(f"topic {topic!r} on {self.bootstrap}: {client_error(exc)}") from None
        return len(found or ())

    def send(
        self,
        topic: str,
        value: bytes,
        partition: int | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        try:
            future = self.producer.send(
                topic, value=value, key=key, headers=headers, partition=partition
            )
        except self._kafka.errors.KafkaError as exc:
            raise SinkError(
                f"sending to {topic!r}: {client_error(exc)}",
                permanent=_kafka_python_permanent(exc),
            ) from None
        self._pending.append((key or b"", future))

    def flush(self, timeout: float = 60.0) -> None:
        kafka = self._kafka
        try:
            self.producer.flush(timeout)
        except kafka.errors.KafkaError as exc:
            # the futures stay: a later flush says which were delivered
            raise SinkError(f"flush: {client_error(exc)}", unconfirmed=True) from None
        pending, self._pending = self._pending, []
        failed = [(k, f) for k, f in pending if not f.is_done or f.failed()]
        if failed:
            future = failed[0][1]
            first = future.exception if future.is_done else "not delivered in time"
            raise SinkError(
                f"{len(failed)} messages not delivered: {first}",
                failed={k: f.is_done and _kafka_python_permanent(f.exception) for k, f in failed},
            )

    def close(self) -> None:
        self.producer.close(timeout=5)
