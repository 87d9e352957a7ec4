"""``streamcl publish STREAM``: write a recorded stream into a Kafka topic, optionally paced.

Each event becomes one JSON message, or events are grouped into binary micro-batch messages of
``--batch`` samples (docs/wire-format.md). Inputs are sent as the learner sees them (float32; the
pixels of uint8 image datasets as uint8 in binary, scaled on decode exactly as on replay), with
the event's label, level, task and id. Messages are dealt round-robin over the topic's
partitions; a one-partition topic keeps the stream's order. A missing topic is created.

With a label delay (``--label-delay N``, or the stream's own from ``streamcl schedule
--label-delay``) every event is first a prediction request and its label follows N events later
(stream/data/label_delay.py; docs/serving.md): one request per message, in the chosen form, and
labels as JSON ``{id, y, level}``, so a daemon with ``[predictions]`` serves and learns it as
``streamcl replay --label-delay N`` does.
``--option K=V`` and ``--options-file`` give the Kafka client its TLS and SASL settings, as the
daemon's ``kafka.options`` does (stream/sources/kafka_options.py).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from stream.cli.config_file import load_config_file
from stream.cli.errors import UsageError
from stream.daemon.config import Topic, bootstrap_hosts
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.label_delay import chosen_label_delay
from stream.data.stream_file import RecordedStream, read_stream
from stream.observe.pacing import RateLimit
from stream.sinks.delayed_messages import delayed_events
from stream.sinks.kafka_sink import open_sink
from stream.sources.file_source import check_against_dataset
from stream.sources.kafka_options import parse_option, resolve_secrets
from stream.sources.wire import encode_binary, encode_json

# Events whose inputs are read from the dataset at once, so memory stays bounded on big streams.
CHUNK = 4096


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "publish",
        help="write a recorded stream into a Kafka topic",
        description="Publish a recorded stream to a Kafka topic, one JSON message per sample or "
        "binary micro-batches, optionally rate-limited.",
    )
    parser.add_argument("stream", help="a stream file written by `streamcl schedule`")
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--topic", required=True, help="the topic to write to")
    parser.add_argument(
        "--rate", type=float, default=None, help="samples per second (default: as fast as possible)"
    )
    parser.add_argument(
        "--format",
        choices=("json", "binary"),
        default="binary",
        help="one JSON message per sample, or binary micro-batches",
    )
    parser.add_argument("--batch", type=int, default=64, help="samples per binary message")
    parser.add_argument(
        "--client",
        choices=("kafka-python", "confluent"),
        default="kafka-python",
        help="the Kafka client library",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Kafka client option (TLS, SASL), repeatable; VALUE is JSON when it parses "
        "(write '\"123\"' for the string 123); KEY_file / KEY_env read a secret",
    )
    parser.add_argument(
        "--options-file",
        help="a TOML or JSON file of Kafka client options (e.g. the serve config's kafka.options)",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the topic if it is created"
    )
    parser.add_argument(
        "--label-delay",
        default=None,
        metavar="DELAY",
        help="send each event as a prediction request and its label late: N events, "
        "uniform:A-B or exponential:MEAN (default: the stream's own delay, else labelled samples)",
    )
    parser.set_defaults(run=run)


def _inputs(stream: RecordedStream, start: int, stop: int, dataset: object) -> np.ndarray:
    if stream.x is not None:
        raw = np.asarray(stream.x[start:stop])
    else:
        raw = dataset.X_train[np.asarray(stream.row[start:stop])]  # type: ignore[attr-defined]
    return raw if raw.dtype == np.uint8 else as_float_tensor(raw).numpy()


def messages(
    stream: RecordedStream, dataset: object, form: str, batch: int
) -> Iterator[tuple[bytes, int]]:
    """``(message, samples in it)`` for every event of ``stream``, in order."""
    for chunk in range(0, len(stream), CHUNK):
        end = min(chunk + CHUNK, len(stream))
        x = _inputs(stream, chunk, end, dataset)
        y, level = np.asarray(stream.y[chunk:end]), np.asarray(stream.level[chunk:end])
        task, ids = np.asarray(stream.task[chunk:end]), np.asarray(stream.id[chunk:end])
        if form == "json":
            floats = as_float_tensor(x).numpy() if x.dtype == np.uint8 else x
            for i in range(end - chunk):
                yield encode_json(floats[i], int(y[i]), int(level[i]), int(task[i]), int(ids[i])), 1
            continue
        for lo in range(0, end - chunk, batch):
            hi = min(lo + batch, end - chunk)
            yield encode_binary(x[lo:hi], y[lo:hi], level[lo:hi], task[lo:hi], ids[lo:hi]), hi - lo


def client_options(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The Kafka options of ``--options-file`` then ``--option``s (which win), secrets read."""
    options: dict[str, Any] = {}
    if args.options_file:
        loaded = load_config_file(args.options_file)
        if not isinstance(loaded, dict):
            raise UsageError(f"--options-file {args.options_file}: expected a table of options")
        options.update(loaded)
    options.update(parse_option(text) for text in args.option)
    return resolve_secrets(options, environ)


MAX_PARTITIONS = 2**31 - 1  # a partition count is an int32 on the wire


def run(args: argparse.Namespace) -> int:
    rate_ok = args.rate is None or (math.isfinite(args.rate) and args.rate > 0)
    if args.batch <= 0 or args.partitions <= 0 or not rate_ok:
        raise UsageError("--batch, --partitions and --rate must be positive (and finite)")
    if args.partitions > MAX_PARTITIONS:
        raise UsageError(f"--partitions {args.partitions}: Kafka takes at most {MAX_PARTITIONS}")
    try:
        bootstrap_hosts(args.bootstrap)
    except ValueError as exc:
        raise UsageError(f"--bootstrap: {exc}") from None
    try:
        TypeAdapter(Topic).validate_python(args.topic)
    except ValidationError:
        raise UsageError(
            f"--topic {args.topic!r}: a Kafka topic is 1 to 249 of the characters A-Z a-z 0-9 "
            ". _ - (and not '.' or '..')"
        ) from None
    stream = read_stream(args.stream)
    delay = chosen_label_delay(args.label_delay, stream.header.label_delay, args.stream)
    dataset = None
    if stream.x is None:
        dataset = load_dataset(stream.header.dataset)
        check_against_dataset(stream, dataset, args.stream)
    sink = open_sink(args.client, args.bootstrap, client_options(args, os.environ))
    partitions = sink.ensure_topic(args.topic, args.partitions)
    if partitions == 0:
        raise UsageError(f"topic {args.topic!r} has no partitions")
    started = time.monotonic()
    limit = RateLimit(args.rate) if args.rate is not None else None
    sent = samples = 0
    chosen: Iterable[tuple[bytes, int, int]]
    if delay is None:
        # dealt round-robin, message by message
        chosen = (
            (m, c, n) for n, (m, c) in enumerate(messages(stream, dataset, args.format, args.batch))
        )
    else:
        # a request and its label on one partition, by event: a daemon (or a scaled-out
        # rank) joins a label only on its request's partition
        chosen = delayed_events(stream, dataset, args.format, delay)
    for message, count, slot in chosen:
        sink.send(args.topic, message, partition=slot % partitions)
        sent += 1
        samples += count
        if limit is not None:
            limit.passed(count)
    sink.flush()
    sink.close()
    seconds = time.monotonic() - started
    kinds = (
        f"{args.format} messages"
        if delay is None
        else f"messages ({args.format} requests, JSON labels)"
    )
    print(
        f"published {samples} samples in {sent} {kinds} to {args.topic} "
        f"({partitions} partitions) in {seconds:.2f} s "
        f"({samples / max(seconds, 1e-9):.0f} samples/s)"
    )
    return 0
