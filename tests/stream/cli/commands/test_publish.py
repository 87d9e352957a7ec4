"""``streamcl publish``: every event of a recorded stream arrives, as replay would see it."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from stream.cli import main as cli
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.stream_file import read_stream
from stream.sources.wire import Decoder

pytestmark = pytest.mark.kafka


def _consume_all(
    bootstrap: str, topic: str, partitions: int, count: int
) -> list[tuple[int, int, bytes]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        got += [
            (m.partition(), m.offset(), m.value())
            for m in consumer.consume(500, 0.2)
            if m.error() is None
        ]
    consumer.close()
    return got


def _publish(stream_path, bootstrap, topic, *options) -> int:
    return cli.main(
        ["publish", str(stream_path), "--bootstrap", bootstrap, "--topic", topic, *options]
    )


def _schedule(tmp_path, dataset: str, *schedule: str) -> tuple:
    path = tmp_path / "stream.scl"
    schedule = schedule or ("si-blurry",)
    arguments = ["schedule", *schedule, "--dataset", dataset, "--seed", "5", "--out", str(path)]
    assert cli.main(arguments) == 0
    return path, read_stream(path), load_dataset(dataset)


@pytest.mark.parametrize(
    ("client", "form", "partitions"), [("kafka-python", "binary", 3), ("confluent", "json", 2)]
)
def test_every_event_arrives_in_order_per_partition(
    kafka_broker, tmp_path, capsys, client, form, partitions
):
    path, stream, dataset = _schedule(tmp_path, "digits")
    topic = f"publish-{client}"
    options = [
        "--format",
        form,
        "--batch",
        "50",
        "--client",
        client,
        "--partitions",
        str(partitions),
    ]
    assert _publish(path, kafka_broker.bootstrap, topic, *options, "--rate", "4000") == 0
    printed = capsys.readouterr().out
    rate = float(re.search(r"\((\d+) samples/s\)", printed).group(1))
    assert f"published {len(stream)} samples" in printed and rate <= 4000 * 1.02

    messages = len(stream) if form == "json" else -(-len(stream) // 50)
    got = sorted(
        _consume_all(kafka_broker.bootstrap, topic, partitions, messages),
        key=lambda m: (m[1], m[0]),
    )
    assert len(got) == messages
    assert {p for p, _, _ in got} == set(range(partitions))
    decoder = Decoder(dataset.problem(), format=form)
    decoded = [decoder.decode(value) for _, _, value in got]  # round-robin: offset-major order
    x = np.concatenate([d.x for d in decoded])
    np.testing.assert_array_equal(
        x, as_float_tensor(dataset.X_train[np.asarray(stream.row)]).numpy()
    )
    for name, column in (
        ("y", stream.y),
        ("level", stream.level),
        ("task", stream.task),
        ("ids", stream.id),
    ):
        np.testing.assert_array_equal(np.concatenate([getattr(d, name) for d in decoded]), column)


def test_with_a_label_delay_each_label_goes_to_its_requests_partition(kafka_broker, tmp_path):
    """Labels were dealt round-robin with the requests, so on 3 partitions almost none came to
    its request's partition: a scaled-out group joined 34 of 1442 and left the rest pending."""
    import json

    from stream.sources.serving_wire import ServingDecoder

    path, stream, dataset = _schedule(tmp_path, "digits")
    options = ["--label-delay", "50", "--partitions", "3", "--format", "json"]
    assert _publish(path, kafka_broker.bootstrap, "publish-delayed", *options) == 0
    got = _consume_all(kafka_broker.bootstrap, "publish-delayed", 3, 2 * len(stream))
    assert len(got) == 2 * len(stream)
    decoder = ServingDecoder(Decoder(dataset.problem(), format="json"))
    requests, labels = {}, {}
    for partition, _, value in got:
        message = json.loads(value)
        if "x" in message:
            requests[int(decoder.decode(value).ids[0])] = partition
        else:
            labels[message["id"]] = partition
    assert sorted(requests) == sorted(labels) == sorted(stream.id.tolist())
    assert requests == labels and set(requests.values()) == {0, 1, 2}


def test_uint8_images_travel_as_uint8_and_decode_as_replay_scales_them(kafka_broker, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 3, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 15)
    np.savez(
        tmp_path / "tiny.npz", X_train=images, y_train=labels, X_test=images[:8], y_test=labels[:8]
    )
    path, stream, dataset = _schedule(
        tmp_path, f"npz:{tmp_path / 'tiny.npz'}", "disjoint", "--tasks", "2"
    )
    assert len(stream) == 60
    assert _publish(path, kafka_broker.bootstrap, "publish-uint8", "--batch", "7") == 0
    got = _consume_all(kafka_broker.bootstrap, "publish-uint8", 1, -(-len(stream) // 7))
    assert got[0][2][5] == 2  # the binary dtype code of uint8 inputs
    decoded = [Decoder(dataset.problem()).decode(value) for _, _, value in got]
    expected = as_float_tensor(dataset.X_train[np.asarray(stream.row)]).numpy()
    np.testing.assert_array_equal(np.concatenate([d.x for d in decoded]), expected)


def test_bad_usage_is_one_line_and_exit_2(tmp_path, capsys):
    path, *_ = _schedule(tmp_path, "digits")
    assert _publish(path, "127.0.0.1:1", "t", "--batch", "0") == 2
    assert capsys.readouterr().err.count("\n") == 1
    for rate in ("nan", "inf", "-1"):  # NaN passed a check written as ``rate <= 0``
        assert _publish(path, "127.0.0.1:1", "t", "--rate", rate) == 2
        assert "--rate must be positive (and finite)" in capsys.readouterr().err
    # each was exit 1 with a client's internal error, or (confluent) published to a topic a
    # real Kafka refuses
    for args, message in [
        (("--partitions", str(2**31)), "Kafka takes at most 2147483647"),
        (("--bootstrap", "host:notaport"), "--bootstrap: expected HOST:PORT"),
        (("--bootstrap", "host:70000"), "--bootstrap: expected HOST:PORT"),
    ]:
        assert _publish(path, "127.0.0.1:1", "t", *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    for topic in ("bad topic!", "", "..", "t" * 250):
        assert _publish(path, "127.0.0.1:1", topic) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a Kafka topic is 1 to 249 of the characters" in err


def test_a_bad_label_delay_in_the_header_names_the_file(tmp_path, capsys):
    """It said only "label delay 'exponential:inf': expected ..." to a user who gave none."""
    jsonl = tmp_path / "delayed.jsonl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(jsonl)]) == 0
    lines = jsonl.read_text().splitlines()
    header = json.loads(lines[0])
    header["streamcl_stream"]["label_delay"] = "exponential:inf"
    jsonl.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    capsys.readouterr()
    assert _publish(jsonl, "127.0.0.1:1", "t") == 2
    err = capsys.readouterr().err
    assert f"{jsonl}: the header's label_delay: label delay 'exponential:inf'" in err, err
    out = str(tmp_path / "run")
    assert cli.main(["replay", str(jsonl), "--learner", "nmc", "--out", out]) == 2
    assert f"{jsonl}: the header's label_delay" in capsys.readouterr().err
