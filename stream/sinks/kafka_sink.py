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
from typing import Any, Literal, cast

from stream.sources.kafka_options import kafka_python_options
from stream.sources.kafka_source import client_log

Client = Literal["kafka-python", "confluent"]
Headers = list[tuple[str, bytes]]


class SinkError(RuntimeError):
    """Messages that the broker did not take (unreachable, too large, ...)."""


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
        self._failures: list[str] = []

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

    def _delivered(self, error: object, message: object) -> None:
        if error is not None:
            self._failures.append(str(error))

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
                raise SinkError(f"sending to {topic!r}: {exc}") from None
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        left = self.producer.flush(timeout)
        failures, self._failures = self._failures, []
        if left:
            raise SinkError(f"{left} messages not delivered within {timeout:g} s")
        if failures:
            raise SinkError(f"{len(failures)} messages not delivered: {failures[0]}")

    def close(self) -> None:
        self.producer.flush(0)


class KafkaPythonSink(KafkaSink):
    def __init__(self, bootstrap: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(bootstrap, options)
        import kafka
        import kafka.errors

        self._kafka = kafka
        try:
            self.producer = kafka.KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                linger_ms=5,
                **kafka_python_options(self.options, "producer"),
            )
        except kafka.errors.KafkaError as exc:
            raise SinkError(f"{bootstrap}: {type(exc).__name__}: {exc}") from None
        self._pending: list[Any] = []

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
            raise SinkError(
                f"topic {topic!r} on {self.bootstrap}: {type(exc).__name__}: {exc}"
            ) from None
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
            raise SinkError(f"sending to {topic!r}: {type(exc).__name__}: {exc}") from None
        self._pending.append(future)

    def flush(self, timeout: float = 60.0) -> None:
        kafka = self._kafka
        try:
            self.producer.flush(timeout)
        except kafka.errors.KafkaError as exc:
            raise SinkError(f"flush: {type(exc).__name__}: {exc}") from None
        pending, self._pending = self._pending, []
        failed = [f for f in pending if not f.is_done or f.failed()]
        if failed:
            first = failed[0].exception if failed[0].is_done else "not delivered in time"
            raise SinkError(f"{len(failed)} messages not delivered: {first}")

    def close(self) -> None:
        self.producer.close(timeout=5)
