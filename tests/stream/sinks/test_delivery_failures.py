"""A message the producer took but the broker did not is sent again, never lost and never
published twice: the predictions sink, the dead-letter topic and the producers' flush."""

from __future__ import annotations

import pytest

from stream.sinks.dead_letter import TopicDeadLetters
from stream.sinks.kafka_sink import ConfluentSink, SinkError
from stream.sinks.predictions import PredictionSink


class Broker:
    """A producer whose flush fails as told: ``fail`` names keys whose delivery fails once,
    ``wait`` keeps that many of the last messages sent undecided (a flush that gives up)."""

    def __init__(self) -> None:
        self.topic: list[bytes] = []  # keys delivered, in order
        self.queued: list[bytes] = []  # keys sent, not yet decided
        self.fail: set[bytes] = set()
        self.wait = 0

    def ensure_topic(self, topic, partitions=1, timeout=30.0):
        return 1

    def send(self, topic, value, partition=None, key=None, headers=None):
        self.queued.append(key)

    def flush(self, timeout=60.0):
        decided, self.queued = (
            self.queued[: len(self.queued) - self.wait],
            self.queued[len(self.queued) - self.wait :],
        )
        failed = {key: False for key in decided if key in self.fail}
        self.fail -= set(failed)
        self.topic += [key for key in decided if key not in failed]
        if self.wait:
            self.wait = 0
            raise SinkError("not delivered in time (test)", failed=failed, unconfirmed=True)
        if failed:
            raise SinkError("NOT_LEADER_FOR_PARTITION (test)", failed=failed)

    def close(self):
        """Nothing held."""


def predictions(broker: Broker) -> PredictionSink:
    sink = PredictionSink(lambda: broker, "out", "127.0.0.1:9")  # type: ignore[arg-type,return-value]
    sink._offsets = object()  # end offsets are not asked of this broker
    return sink


def publish(sink: PredictionSink, keys: range) -> None:
    for k in keys:
        sink.publish({"id": k}, f"samples:0:{k}:0")
    sink.send()


@pytest.fixture(autouse=True)
def no_end_offsets(monkeypatch):
    monkeypatch.setattr("stream.sinks.predictions._end_offsets", lambda consumer, topic: {0: 0})


def test_a_prediction_whose_delivery_failed_is_sent_again_before_a_checkpoint_passes_it():
    broker = Broker()
    sink = predictions(broker)
    publish(sink, range(8))
    broker.fail = {b"samples:0:2:0", b"samples:0:5:0"}
    with pytest.raises(SinkError):
        sink.sync()  # no checkpoint now
    publish(sink, range(8, 10))
    sink.sync()  # the failed two again, then the new ones
    assert sorted(broker.topic) == sorted(f"samples:0:{k}:0".encode() for k in range(10))
    assert not sink.pending and not sink.in_flight


def test_a_flush_that_gave_up_waiting_sends_nothing_twice_and_blocks_the_checkpoint():
    broker = Broker()
    sink = predictions(broker)
    publish(sink, range(6))
    broker.wait = 2  # the last two are still with the producer
    with pytest.raises(SinkError):
        sink.sync()
    assert not sink.pending and len(sink.in_flight) == 6  # kept, none to send again
    sink.sync()
    assert broker.topic == [f"samples:0:{k}:0".encode() for k in range(6)]  # each once


def test_a_failure_that_names_no_message_sends_every_one_in_flight_again():
    broker = Broker()
    sink = predictions(broker)
    publish(sink, range(3))
    broker.flush = lambda timeout=60.0: (_ for _ in ()).throw(SinkError("broker gone (test)"))
    with pytest.raises(SinkError):
        sink.sync()
    assert [key for _, key in sink.pending] == [f"samples:0:{k}:0".encode() for k in range(3)]


def test_a_dead_letter_still_with_the_producer_is_not_sent_twice():
    broker = Broker()
    letters = TopicDeadLetters(lambda: broker, "dead", 1 << 20)  # type: ignore[arg-type,return-value]
    for offset in range(4):
        letters.write("samples", 0, offset, b"x", "not_json", "test")
    broker.wait = 1
    broker.fail = {b"samples:0:1"}
    with pytest.raises(SinkError):
        letters.sync()
    letters.sync()
    assert sorted(broker.topic) == [b"samples:0:%d" % k for k in range(4)]  # each once


class Producer:
    """confluent-kafka's producer where the flush gives up with one report of a failure."""

    def __init__(self, sink: ConfluentSink) -> None:
        self.sink = sink

    def flush(self, timeout):
        self.sink._failures.append((b"k1", "Broker: Not leader for partition", False))
        return 3  # still queued


def test_confluent_names_the_failures_it_saw_when_its_flush_gives_up():
    sink = ConfluentSink.__new__(ConfluentSink)
    sink._failures = []
    sink.producer = Producer(sink)
    with pytest.raises(SinkError) as refused:
        sink.flush(0.1)
    assert refused.value.unconfirmed and refused.value.failed == {b"k1": False}
    assert "3 messages not delivered" in str(refused.value)
