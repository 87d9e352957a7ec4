"""The daemon's serving side: answer requests from the topic, join late labels, checkpoint both.

With ``[predictions]`` in the serve config, :class:`PredictionService` takes the decoded messages
of each poll in order (stream/sources/serving_wire.py tells the kinds apart) and hands them to
one :class:`~stream.engine.serving.ServingLoop`: labelled samples are learned as without serving,
each request is predicted by the model as it is and its prediction published to the predictions
topic (stream/sinks/predictions.py), each label joins its pending request and the sample is
learned. Every checkpoint carries the pending requests (inputs and the prediction served) and
the predictions topic's end offsets; after a crash the predictions published since are read
back before the first poll, so a request re-read from the checkpoint's offsets is not answered
twice, and its label is scored against the prediction that was really served.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection
from typing import Any

import structlog

from learners.base import Problem
from stream.daemon.checkpoint_meta import restored_offsets
from stream.daemon.config import PredictionsConfig, ServeConfig
from stream.engine.event_loop import EventLoop
from stream.engine.label_join import LabelJoin
from stream.engine.serving import Process, Served, ServingLoop
from stream.observe.log_budget import LogBudget
from stream.observe.serving_telemetry import ServingTelemetry
from stream.observe.telemetry import Telemetry
from stream.sinks.kafka_sink import SinkError, open_sink
from stream.sinks.predictions import (
    PredictionSink,
    prediction_json,
    read_published,
    request_key,
)
from stream.sources.batcher import PendingSamples
from stream.sources.kafka_source import Record, SourceError
from stream.sources.serving_wire import Labels, Requests
from stream.sources.wire import Samples

log = structlog.get_logger("streamcl.predictions")

# Refuses one message of the topic: (its record, why), e.g. by dead-lettering it.
Refuse = Callable[[Record, str], None]


class PredictionService:
    """Requests, labels and labelled samples of the daemon's topic, through one serving loop."""

    def __init__(
        self,
        config: ServeConfig,
        problem: Problem,
        telemetry: Telemetry,
        log_budget: LogBudget | None = None,
    ) -> None:
        """The daemon attaches its event loop (:meth:`attach`) before any message comes;
        ``log_budget`` bounds the lines of unmatched labels (the daemon's, shared)."""
        assert config.predictions is not None
        self.config: PredictionsConfig = config.predictions
        self.topic = config.kafka.topic
        self.batch_size = config.loop.batch_size
        self.level_names = problem.level_names
        self.num_classes = problem.num_classes
        self.metrics = ServingTelemetry(telemetry)
        self.log_budget = log_budget or LogBudget()
        kafka = config.kafka
        self.sink = PredictionSink(
            lambda: open_sink(kafka.client, kafka.bootstrap), self.config.topic, kafka.bootstrap
        )
        self.bootstrap = kafka.bootstrap
        # Where the predictions topic ended at the last checkpoint; None: read it from the start.
        self.published_from: dict[int, int] = {}
        self.recovered: dict[str, dict[str, Any]] | None = None
        # which daemon line publishes (stream/daemon/lineage.py); set by the daemon
        self.lineage: str | None = None
        self.resumed = False  # restored from a checkpoint
        self._expired_counted = 0
        # labelled samples of a run that a poll's end cut short
        self.pending = PendingSamples(self.batch_size)

    def attach(
        self, loop: EventLoop, process: Process | None = None, refuse: Refuse | None = None
    ) -> None:
        """Serve with ``loop`` (again when the daemon rebuilds its model), an empty window;
        ``process`` learns each batch (:class:`ServingLoop`), given its samples' Kafka
        partitions and offsets; ``refuse`` takes a request message the learner failed to
        predict (None: the error propagates). What a restore set before (an unusable
        checkpoint, passed over) is forgotten with the model."""
        self.refuse = refuse
        self.published_from = {}
        self.recovered = None
        self.resumed = False
        self._expired_counted = 0
        self.pending = PendingSamples(self.batch_size)
        self.serving = ServingLoop(
            loop,
            LabelJoin(
                self.config.max_pending,
                self.config.max_age_seconds,
                self.config.max_pending_bytes,
            ),
            process,
        )

    # -- checkpoints ----------------------------------------------------------------------

    def restore(self, state: dict[str, Any], decode: Callable[[bytes], object]) -> None:
        """The serving state of a checkpoint; its pending labelled samples checked again by
        ``decode`` (the daemon's decoder's)."""
        self.serving.load_state_dict(state["loop"])
        self.pending.load_state_dict(state.get("pending", []), decode)
        self.published_from = restored_offsets(state["published"], "published predictions' ends")
        self.resumed = True
        self._expired_counted = self.serving.expired

    def continue_counters(self) -> None:
        """Continue the serving counters from the restored state (once the whole checkpoint
        is restored: a checkpoint passed over must not count)."""
        serving = self.serving
        self.metrics.continue_from(serving.predictions, serving.expired, serving.unmatched)

    def checkpoint_state(self) -> dict[str, Any]:
        """Deliver every prediction and say where the topic ends (:class:`SinkError` while the
        predictions cannot be delivered), with the window, the joined labels queued and the
        labelled samples pending (none is learned early for a checkpoint: where checkpoints
        fall must not change the micro-batches)."""
        ends = self.sink.sync()
        return {
            "loop": self.serving.state_dict(),
            "published": {str(p): o for p, o in sorted(ends.items())},
            "pending": self.pending.state_dict(),
        }

    def recover(self, positions: dict[int, int], partitions: Collection[int] | None = None) -> None:
        """Read the predictions published since the checkpoint, once, before the first poll
        (:class:`SourceError` while the broker does not answer: the daemon retries).

        Only those for requests at or after ``positions`` (the checkpoint's offsets) are kept:
        the ones the daemon will read again; with ``partitions`` (a scaled-out rank's), only
        those for requests from them. Reading from before the checkpoint's recorded end is
        therefore harmless (a broker may report a low end offset: tansu does)."""
        if self.recovered is not None:
            return

        def ours(message: dict[str, Any]) -> bool:
            """Published by this daemon's line, with classes of its problem. A message without
            ``daemon`` (a version before it) counts only after a checkpoint of this line."""
            daemon = message.get("daemon", None if self.resumed else False)
            return daemon in (None, self.lineage) and self._in_class_space(message["predicted"])

        def again(message: dict[str, Any]) -> bool:
            """A request this daemon reads again; only those are held."""
            request = message["request"]
            return (
                request["topic"] == self.topic
                and (partitions is None or request["partition"] in partitions)
                and request["offset"] >= positions.get(request["partition"], 0)
            )

        try:
            found = read_published(
                self.bootstrap,
                self.config.topic,
                self.published_from,
                accept=ours,
                keep=again,
            )
        except SinkError as exc:
            raise SourceError(str(exc)) from None
        self.recovered = found
        if self.recovered:
            log.info("predictions_recovered", count=len(self.recovered), topic=self.config.topic)

    # -- the messages of one poll ---------------------------------------------------------

    def handle(
        self, messages: list[Samples | Requests | Labels], records: list[Record], received: float
    ) -> None:
        """Serve, join and learn the messages of one poll in order; ``received`` is the
        ``perf_counter`` time the poll returned (prediction latency counts from it)."""
        labelled: list[tuple[Samples, Record]] = []
        for message, record in zip(messages, records, strict=True):
            if isinstance(message, Samples):
                labelled.append((message, record))
                continue
            self._learn(labelled, keep_short=False)  # a run of labelled samples ended
            if isinstance(message, Requests):
                self._request(message, record, received)
            else:
                self._label(message, record)
        self._learn(labelled, keep_short=True)  # the next poll may go on with the run
        self.expire()
        with contextlib.suppress(SinkError):  # retried at the next poll and before a checkpoint
            self.sink.send()

    def expire(self) -> None:
        """Drop requests past the window's age; keep the gauges current."""
        self.serving.expire(time.time())
        self.metrics.expired.inc(self.serving.expired - self._expired_counted)
        self._expired_counted = self.serving.expired
        self.metrics.pending.set(len(self.serving.join))

    def learn_pending(self) -> None:
        """Learn the labelled samples and joined labels that wait for a complete micro-batch
        (the daemon calls it when a poll returns nothing)."""
        self._learn([], keep_short=False)
        self.serving.flush()

    def _learn(self, labelled: list[tuple[Samples, Record]], keep_short: bool) -> None:
        """Learn a run of labelled samples after those pending, in micro-batches; with
        ``keep_short`` a short last batch stays pending."""
        for batch, origins in self.pending.cut(
            [samples for samples, _ in labelled],
            [(record.partition, record.offset) for _, record in labelled],
            keep_short,
        ):
            self.serving.learn(batch, origins)
        labelled.clear()

    def _request(self, requests: Requests, record: Record, received: float) -> None:
        assert self.recovered is not None, "recover() runs before the first poll"
        keys = [
            request_key(self.topic, record.partition, record.offset, i)
            for i in range(len(requests))
        ]
        earlier = [self.recovered.pop(key, None) for key in keys]
        served = [None if e is None else self._served(e) for e in earlier]
        now = time.time()
        self.serving.flush()  # learning is guarded on its own: only the prediction is at stake
        try:
            prediction = self.serving.request(
                requests.ids, requests.x, now, requests.task, served, record.partition
            )
        except Exception as exc:  # the learner failed on these inputs: refuse them, serve on
            if self.refuse is None:
                raise
            detail = f"predicting: {type(exc).__name__}: {exc}"
            log.error("predict_failed", source="kafka", problem=detail, samples=len(requests))
            self.refuse(record, detail)
            return
        latency = time.perf_counter() - received
        fresh = 0
        for i, key in enumerate(keys):
            if earlier[i] is not None:
                continue  # answered before the crash: that answer stands
            message = prediction_json(
                int(requests.ids[i]),
                prediction.predicted[i].tolist(),
                [scores[i] for scores in prediction.scores],
                self.level_names,
                prediction.position,
                self.config.top_k,
            )
            message.update(
                daemon=self.lineage,
                latency_seconds=latency,
                served_at=now,
                request={
                    "topic": self.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "index": i,
                },
            )
            self.sink.publish(message, key)
            fresh += 1
        if fresh:
            self.metrics.served("kafka", fresh, latency)

    def _in_class_space(self, predicted: dict[str, int | None]) -> bool:
        """Whether a read-back prediction names a class of its level at every level (one that
        does not was not published by a daemon of this problem: its request is answered again)."""
        return all(
            (c := predicted.get(name)) is None or 0 <= c < classes
            for name, classes in zip(self.level_names, self.num_classes, strict=True)
        )

    def _served(self, published: dict[str, Any]) -> Served:
        classes = published["predicted"]
        return Served(
            [-1 if classes.get(name) is None else int(classes[name]) for name in self.level_names],
            float(published["served_at"]),
        )

    def _label(self, labels: Labels, record: Record) -> None:
        joined = self.serving.label(
            labels.ids, labels.y, labels.level, time.time(), (record.partition, record.offset)
        )
        for delay in joined.delays:
            self.metrics.label_delay.observe(max(delay, 0.0))
        if joined.unmatched:
            self.metrics.unmatched.inc(len(joined.unmatched))
            if self.log_budget.allow("label_unmatched"):
                log.info("label_unmatched", ids=joined.unmatched[:10], count=len(joined.unmatched))

    def close(self) -> None:
        self.sink.close()
