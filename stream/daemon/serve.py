"""The daemon: consume a topic, learn every valid message exactly once, checkpoint, report.

One iteration of the loop:

1. poll a batch of records from the assigned partitions;
2. decode and validate each (stream/sources/wire.py); an invalid one goes to the dead-letter sink with
   its reason and offset and is counted; a record below the partition's known position (a
   redelivery after a reconnect) is skipped; a position the broker no longer has (an offset
   reset: the topic was recreated or truncated) is logged, counted and read on from
   ``start_from``;
3. learn the valid samples through the event loop, in micro-batches (predict, then learn),
   through a :class:`~stream.engine.guard.LearnerGuard`: a batch whose learning raises or leaves
   non-finite state is undone and dead-lettered as ``learner_error``; while a long batch is
   learned the consumer stays in its group (stream/daemon/keep_alive.py);
4. checkpoint every ``every_samples`` samples or ``every_seconds`` seconds: learner, loop state,
   the next offset per partition and the dead-letter position, in one atomic file, never with
   non-finite state; a failed write is retried with backoff (stream/daemon/storage_retry.py);
5. report the consumer lag every few seconds, from the end offsets the fetches carry; when no
   record has come for a while, ask the broker (stream/daemon/broker_watch.py).

The checkpoint is the only source of truth for offsets. On start the directory is locked (a
second daemon on it exits 2), and the newest checkpoint whose seal verifies and whose content
this daemon can use is loaded (stream/daemon/checkpoint.py: a state holding river objects
requires the checkpoint key); every metric is set from it before the first poll. The loop keeps
running aggregates; each evaluation is appended to the history files next to the checkpoints
(stream/daemon/evaluation_history.py). Whenever the group assigns partitions, each one is
sought to the position the daemon has learned up to, which after a restart is the
checkpoint's. So a ``kill -9`` at any point costs only re-learning what came after the last
checkpoint, into a model restored to exactly that point: every message is learned exactly once.
``stop()`` (SIGTERM/SIGINT) ends the loop after the current batch, and ``run`` writes a final
checkpoint before it returns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from learners import registry
from learners.base import Learner, Problem
from learners.state.sealed_pickle import holds_sealed_pickles
from stream.daemon.aligned_checkpoint import AlignedCheckpoints
from stream.daemon.broker_watch import BrokerWatch, PartitionWatch
from stream.daemon.checkpoint import Checkpoint, CheckpointError, CheckpointStore
from stream.daemon.checkpoint_key import ENV_VAR
from stream.daemon.checkpoint_meta import (
    restored_counters,
    restored_history_position,
    restored_offsets,
)
from stream.daemon.config import ServeConfig, ServeConfigError
from stream.daemon.evaluation_history import EvaluationHistory
from stream.daemon.keep_alive import KeepAlive
from stream.daemon.lineage import daemon_lineage
from stream.daemon.predictions import PredictionService
from stream.daemon.storage_retry import StorageRetry
from stream.data.datasets import load_dataset
from stream.engine.batch import Batch, Origins
from stream.engine.device import resolve_device
from stream.engine.evaluation import AnytimeEvaluator
from stream.engine.event_loop import EventLoop
from stream.engine.guard import LearnerGuard, Rejected
from stream.observe.log_budget import LogBudget
from stream.observe.loop_log import LoopLogger
from stream.observe.telemetry import Telemetry
from stream.runs.model_file_schema import problem_section
from stream.sinks.dead_letter import DeadLetterSink, FileDeadLetters, TopicDeadLetters
from stream.sinks.kafka_sink import SinkError, open_sink
from stream.sources.batcher import PendingSamples
from stream.sources.kafka_source import (
    AssignHandler,
    ErrorHandler,
    KafkaSource,
    Record,
    SourceError,
    open_source,
)
from stream.sources.serving_wire import Labels, Requests, ServingDecoder
from stream.sources.wire import Decoder, InvalidMessage, Samples, encode_binary

log = structlog.get_logger("streamcl.serve")

CHECKPOINT_FORMAT = 2
# Format 1 (no evaluation history, the loop's whole history in its state) is migrated on load.
READABLE_FORMATS = (1, CHECKPOINT_FORMAT)
# What a checkpoint's content can raise when it does not fit (a bug or a format change, under a
# valid seal): that checkpoint is skipped for the one before it.
UNUSABLE = (KeyError, IndexError, TypeError, ValueError, RuntimeError)
"""What restoring a checkpoint with a valid seal but content a daemon cannot use raises: the
daemon passes it over for the one before it."""
# Dead letters that may wait in memory for storage (a full disk, the topic away) before the
# daemon stops taking records; each holds at most dead_letter.max_value_bytes of value.
MAX_DEAD_LETTER_BACKLOG = 1000
SourceFactory = Callable[[Any, AssignHandler, ErrorHandler], KafkaSource]


def build_problem(config: ServeConfig) -> tuple[Problem, AnytimeEvaluator | None]:
    """The problem the daemon learns, and the anytime evaluator when a test set is configured."""
    device = resolve_device(config.learner.device)
    declared = config.problem
    if config.evaluation is None:
        assert declared is not None
        levels = len(declared.num_classes)
        names = declared.level_names or (
            ["label"] if levels == 1 else [f"level{i}" for i in range(levels)]
        )
        try:
            problem = Problem(
                input_shape=tuple(declared.input_shape),
                num_classes=tuple(declared.num_classes),
                level_names=tuple(names),
                parents=tuple(tuple(p) for p in declared.parents or ()),
            )
        except ValueError as exc:
            raise ServeConfigError(f"problem: {exc}") from None
        return problem, None
    dataset = load_dataset(config.evaluation.dataset)
    problem = dataset.problem()
    if declared is not None:
        given = {
            "input_shape": list(declared.input_shape),
            "num_classes": list(declared.num_classes),
            "level_names": declared.level_names,
            "parents": declared.parents,
        }
        found = {
            "input_shape": list(problem.input_shape),
            "num_classes": list(problem.num_classes),
            "level_names": list(problem.level_names),
            "parents": [list(p) for p in problem.parents],
        }
        for name, value in given.items():
            if value is not None and value != found[name]:  # level names, parents: optional
                shown = "" if name == "parents" else f" {value}"  # parent maps can be long
                theirs = "" if name == "parents" else f" {found[name]}"
                raise ServeConfigError(
                    f"problem.{name}{shown} differs from evaluation dataset "
                    f"{config.evaluation.dataset!r}'s{theirs}"
                )
    evaluator = AnytimeEvaluator.on_test_split(
        dataset, problem, config.loop.eval_batch_size, device
    )
    return problem, evaluator


def refuse_another_identity(saved: Any, expected: dict[str, Any], written: str) -> None:
    """``CheckpointError`` unless the checkpoint's ``saved`` identity (``written``: what wrote
    it, a path or an epoch) agrees with ``expected``, the config's, key by key."""
    saved = saved if isinstance(saved, dict) else {}
    for key, value in expected.items():
        if saved.get(key) != value:
            hint = ""
            if key == "learner_config":
                hint = (
                    " (since a learner section given in part keeps the learner's defaults for "
                    "the keys left out, a checkpoint written before then resumes if its config "
                    "names those keys, e.g. backbone.name)"
                )
            raise CheckpointError(
                f"{written} was written for {key}={saved.get(key)!r}, the config asks for "
                f"{value!r}; use another checkpoint.dir for a new model{hint}"
            )


class Daemon:
    """``streamcl serve``: one learner fed by one topic, checkpointed with its offsets."""

    def __init__(
        self,
        config: ServeConfig,
        telemetry: Telemetry | None = None,
        source_factory: SourceFactory = open_source,
        checkpoint_key: bytes | None = None,
    ) -> None:
        """``checkpoint_key`` signs and verifies checkpoints (read at the edge:
        stream/daemon/checkpoint_key.py)."""
        self.config = config
        self.topic = config.kafka.topic
        self.telemetry = telemetry or Telemetry()
        self.source_factory = source_factory
        # lines per event an outsider can repeat at will (invalid messages, unmatched labels)
        self.log_budget = LogBudget()
        if config.learner.threads is not None:
            torch.set_num_threads(config.learner.threads)
        self.problem, self._evaluator = build_problem(config)
        self.predictions: PredictionService | None = None
        if config.predictions is not None:
            self.predictions = PredictionService(
                config, self.problem, self.telemetry, self.log_budget
            )
        self._build_model()
        if checkpoint_key is None and (
            holds_sealed_pickles(self.learner.state_dict().meta)
            or holds_sealed_pickles(self.loop.state_dict())
        ):
            raise ServeConfigError(
                f"learner {config.learner.name!r}"
                f"{' with drift detection' if config.loop.drift is not None else ''} "
                f"checkpoints Python objects (river); set {ENV_VAR} or checkpoint.key_file "
                "so that only checkpoints signed with that key are loaded"
            )
        messages = config.messages
        decoder = Decoder(
            self.problem, messages.format, messages.max_bytes, messages.max_abs, messages.max_task
        )
        self.decoder: Decoder | ServingDecoder = decoder
        if self.predictions is not None:
            self.decoder = ServingDecoder(decoder)
        self.store = CheckpointStore(config.checkpoint.dir, config.checkpoint.keep, checkpoint_key)
        self.store.lock(self._lock_name())
        try:
            if self.predictions is not None:
                self.predictions.lineage = daemon_lineage(config.checkpoint.dir)
            self._start()
        except BaseException:
            # what _start opened before it failed: the dead-letter file's lock above all, which
            # another Daemon of this process would meet
            for opened in ("dead_letters", "history"):
                if opened in self.__dict__:
                    self.__dict__[opened].close()
            self.store.unlock()
            raise

    def _build_model(self) -> None:
        """A fresh learner and event loop (again after an unusable checkpoint touched them)."""
        config, name = self.config, self.config.learner.name
        self.learner: Learner = registry.create(
            name, self.problem, config.learner.options, resolve_device(config.learner.device)
        )
        self._telemetry_observer = self.telemetry.observer(name)
        self.loop = EventLoop(
            self.learner,
            self.problem,
            config.loop,
            evaluator=self._evaluator,
            observers=[self._telemetry_observer, LoopLogger(name)],
            keep_history=False,
        )
        if self.predictions is not None:
            self.predictions.attach(self.loop, self._learn_batch, self._refuse_request)

    def _start(self) -> None:
        config = self.config
        self.store.remove_interrupted_writes()
        # Next offset to learn, per partition: what the model has seen, checkpointed or not.
        self.positions: dict[int, int] = {}
        self.messages = 0
        self.invalid: Counter[str] = Counter()
        self.checkpointed_positions: dict[int, int] = {}
        self.checkpointed_samples = 0
        self.final_checkpoint_failed = False
        # without a checkpoint, history lines are of a run that starts over
        self._history_at = {"file": 1, "bytes": 0}
        # labelled samples read but not yet in a complete micro-batch
        self.pending = PendingSamples(config.loop.batch_size)
        checkpoint = self._resume()
        self.history = EvaluationHistory(
            self._history_dir(),
            config.checkpoint.history_file_bytes,
            config.checkpoint.history_files,
            resume_at=self._history_at,
        )
        self.loop.observers.append(self.history)
        # None where a batch cannot be undone alone (a scaled-out rank: re-learning would
        # replay gradient steps that meet the other ranks, and undo their synced statistics).
        # On the serving path it journals joined labels with the classes served for them.
        self.guard: LearnerGuard[Origins] | None = LearnerGuard(self.loop)
        self.dead_letters = self._open_dead_letters(checkpoint)
        self.telemetry.watch_dead_letters()
        self.watch = BrokerWatch(
            self.telemetry,
            config.kafka.probe_interval_seconds,
            config.kafka.retry_backoff_seconds,
            config.kafka.retry_backoff_max_seconds,
        )
        kafka = config.kafka
        # A join may wait out a member that died without leaving: its session, then a
        # rebalance timeout (kafka.max_poll_interval_ms), and once more for a rebalance in flight.
        self.partition_watch = PartitionWatch(
            self.telemetry,
            self.topic,
            kafka.group,
            max(
                config.metrics.stall_seconds,
                (kafka.session_timeout_ms + 2 * kafka.max_poll_interval_ms) / 1000,
            ),
        )
        self.checkpoint_retry, self.dead_letter_retry = (
            StorageRetry(
                what,
                self.telemetry,
                kafka.retry_backoff_seconds,
                kafka.retry_backoff_max_seconds,
                config.checkpoint.unhealthy_after_failures,
            )
            for what in ("checkpoint", "dead_letter")
        )
        self.source: KafkaSource | None = None
        self._stop = threading.Event()
        self._last_checkpoint = time.monotonic()
        self._next_lag_report = time.monotonic()

    def _lock_name(self) -> str:
        """The lock file that keeps a second writer of these checkpoints off the directory."""
        return ".lock"

    def _history_dir(self) -> Path:
        return self.config.checkpoint.dir / "history"

    def _resume(self) -> Checkpoint | None:
        """Restore the newest usable checkpoint and set the metrics from it; returns it (the
        dead letters resume from it), None if there is no checkpoint at all
        (:class:`CheckpointError` if there are only unusable ones, or a scaled-out group's)."""
        directory = self.config.checkpoint.dir
        if AlignedCheckpoints(directory).epochs():
            raise CheckpointError(
                f"{directory} holds a scaled-out group's global checkpoints (epoch-*), which "
                "one daemon does not resume: run the group (streamcl serve, which runs a group "
                "of --workers N, one by default, for such a directory; or torchrun), or give "
                "this daemon another checkpoint.dir"
            )
        for checkpoint in self.store.candidates():
            try:
                self._restore(checkpoint)
            except CheckpointError:
                raise
            except UNUSABLE as exc:
                log.warning(
                    "checkpoint_unusable",
                    path=str(checkpoint.path),
                    problem=f"{type(exc).__name__}: {exc}",
                )
                self._build_model()
                continue
            self._continue_metrics()
            self.telemetry.checkpoint_written(float(checkpoint.meta["created"]))
            return checkpoint
        self.store.refuse_if_any("none has both a valid seal and usable content")
        return None

    def _continue_metrics(self) -> None:
        """Set the metrics from the restored state, counters continuing from its counts (once
        it is restored for good: a checkpoint passed over must count nothing)."""
        self._telemetry_observer.restore(self.loop)
        self.telemetry.restore_invalid_messages(dict(self.invalid))
        if self.predictions is not None:
            self.predictions.continue_counters()

    # -- set up -------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed by this config."""
        return {
            "topic": self.topic,
            "learner": self.config.learner.name,
            "learner_config": self.learner.config.model_dump(mode="json"),
            "input_shape": list(self.problem.input_shape),
            "num_classes": list(self.problem.num_classes),
        }

    def _restore(self, checkpoint: Checkpoint) -> None:
        meta = checkpoint.meta
        version = meta.get("streamcl_checkpoint")
        if version not in READABLE_FORMATS:
            raise ValueError(f"checkpoint format {version!r}, this daemon reads {READABLE_FORMATS}")
        refuse_another_identity(meta.get("identity", {}), self._identity(), str(checkpoint.path))
        positions = restored_offsets(meta["offsets"])
        messages, invalid = restored_counters(meta["counters"])
        # format 1 kept no history file: the history starts with this run
        history = meta["history_position"] if version > 1 else {"file": 1, "bytes": 0}
        history_at = restored_history_position(history)
        self.learner.load_state_dict(checkpoint.learner)
        self.loop.load_state_dict(meta["loop"])
        self.pending.load_state_dict(meta.get("pending", []), self.decoder.decode)
        if self.predictions is not None and "serving" in meta:
            self.predictions.restore(meta["serving"], self.decoder.decode)
        self.positions, self.messages, self.invalid = positions, messages, invalid
        self._history_at = history_at
        self.checkpointed_positions = dict(self.positions)
        self.checkpointed_samples = self.loop.samples_seen
        log.info(
            "checkpoint_loaded",
            path=str(checkpoint.path),
            samples=self.loop.samples_seen,
            offsets=self.positions,
        )

    def _open_dead_letters(self, checkpoint: Checkpoint | None) -> DeadLetterSink:
        target = self.config.dead_letter
        limit = min(self.config.messages.max_bytes, target.max_value_bytes)
        if target.file is not None:
            resume_at = None if checkpoint is None else checkpoint.meta.get("dead_letter_position")
            return FileDeadLetters(
                target.file, limit, resume_at, file_bytes=target.file_bytes, files=target.files
            )
        assert target.topic is not None
        kafka = self.config.kafka
        spill = target.spill_file or self.config.checkpoint.dir / "dead-letters-spill.jsonl"
        return TopicDeadLetters(
            lambda: open_sink(kafka.client, kafka.bootstrap, kafka.options),
            target.topic,
            limit,
            spill=FileDeadLetters(
                spill, limit, file_bytes=target.file_bytes, files=target.files, exclusive=False
            ),
            on_spill=lambda problem: self.telemetry.dead_letter_spilled(),
        )

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current batch, checkpoint and return from :meth:`run` (signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Serve until :meth:`stop`; then write a final checkpoint and leave the group."""
        try:
            # Options the client refuses stop the daemon here, before it serves (exit 2); an
            # unreachable broker is retried by step.
            try:
                self.connect()
            except SourceError as exc:
                self._stop.wait(self.watch.failed(str(exc)))
            kafka = self.config.kafka
            log.info(
                "serving",
                topic=self.topic,
                group=kafka.group,
                client=kafka.client,
                learner=self.config.learner.name,
                samples=self.loop.samples_seen,
            )
            while not self._stop.is_set():
                self.step()
            self.checkpoint(force=True)
            self._note_final_checkpoint()
        finally:
            self.close()
        log.info("stopped", samples=self.loop.samples_seen, messages=self.messages)

    def _note_final_checkpoint(self) -> None:
        """After the last checkpoint of a stop: whether it missed what was read or learned (the
        storage or the broker failed it), which ``streamcl serve`` reports by its exit code.
        Nothing is lost (offsets are committed only with a checkpoint): a restart reads the
        messages since the last good one again."""
        self.final_checkpoint_failed = self._changed()
        if self.final_checkpoint_failed:
            log.error(
                "final_checkpoint_failed",
                samples=self.loop.samples_seen,
                checkpointed_samples=self.checkpointed_samples,
                note="a restart learns the messages since the last checkpoint again",
            )

    def connect(self) -> None:
        """Join the consumer group (partitions arrive with the first polls); :class:`SourceError`
        when the brokers cannot be reached (``step`` retries with backoff)."""
        if self.source is None:
            self.source = self.source_factory(self.config.kafka, self._assigned, self._client_error)
            self.source.on_reset = self._offset_reset

    def close(self) -> None:
        """Leave the group, close the dead-letter sink and the history, release the checkpoint
        directory (no checkpoint: see :meth:`run`)."""
        if self.source is not None:
            self.source.close()
            self.source = None
        self.dead_letters.close()
        self.log_budget.flush()
        self.history.close()
        if self.predictions is not None:
            self.predictions.close()
        self.store.unlock()

    def step(self) -> None:
        """One poll: learn what came, checkpoint and probe when due."""
        kafka = self.config.kafka
        if self.dead_letters.backlog >= MAX_DEAD_LETTER_BACKLOG and not self._store_dead_letters():
            return
        try:
            self.connect()
            if self.predictions is not None:
                self.predictions.recover(self.positions)
            assert self.source is not None
            records = self.source.poll(kafka.max_poll_records, kafka.poll_timeout_seconds)
        except SourceError as exc:
            self.partition_watch.interrupted()
            self._stop.wait(self.watch.failed(str(exc)))
            return
        assert self.source is not None
        self.telemetry.progressed()  # the source answered: alive, even with nothing new
        self.partition_watch.polled(self.source.assignment())
        if records:
            self.watch.alive()
            self.learn(records)
        else:
            if self._caught_up():
                self.learn_pending()  # nothing more for now: a short micro-batch waits no longer
            if self.predictions is not None:
                self.predictions.expire()  # a request's age runs on while nothing arrives
        if self._checkpoint_due():
            self.checkpoint()
        if self.watch.due():
            self._probe()
        elif time.monotonic() >= self._next_lag_report:
            self._report_lag(self.source.highwater(self.source.assignment()))

    def learn(self, records: list[Record]) -> None:
        """Judge every record, dead-letter the bad ones, learn the good ones."""
        received = time.perf_counter()
        good: list[Samples | Requests | Labels] = []
        accepted: list[Record] = []
        for record in records:
            partition = record.partition
            known = self.positions.get(partition)
            if known is not None and record.offset < known:
                continue  # learned already: a redelivery after a reconnect or rebalance
            try:
                refused = self._refused(record)
                if refused is not None:
                    raise refused
                message = self.decoder.decode(record.value)
            except InvalidMessage as exc:
                self._dead_letter(partition, record.offset, record.value, exc.reason, exc.detail)
            else:
                good.append(message)
                accepted.append(record)
            self.positions[partition] = record.offset + 1
            self.messages += 1
        if not good:
            if self.predictions is not None:
                self.predictions.expire()  # a request's age runs on while nothing arrives
            return
        last = records[-1]
        kafka = self.config.kafka
        keep_alive = (
            contextlib.nullcontext(None)
            if self.source is None
            else KeepAlive(self.source, kafka.max_poll_interval_ms / 4000)
        )
        # On every log line of the loop while these batches are learned, and only then.
        with (
            structlog.contextvars.bound_contextvars(
                topic=self.topic, partition=last.partition, offset=last.offset
            ),
            keep_alive as alive,
        ):
            if self.predictions is not None:
                # The serving path learns labelled samples and joined labels in arrival order.
                self.predictions.handle(good, accepted, received)
            else:
                self._learn_guarded(good, accepted)  # type: ignore[arg-type]
        if alive is not None and alive.records:
            self.learn(alive.records)

    def _caught_up(self) -> bool:
        """Whether the daemon has read every partition it is assigned to its end (as the last
        fetches reported it): an empty poll then means an idle topic, not a group still joining
        or a fetch not yet answered, after which what was pending is learned as it is."""
        assert self.source is not None
        assignment = self.source.assignment()
        if not assignment:
            return False
        ends = self.source.highwater(assignment)
        return all(p in ends and self.positions.get(p, 0) >= ends[p] for p in assignment)

    def learn_pending(self) -> None:
        """Learn what waits for a complete micro-batch: labelled samples, and with serving the
        joined labels (called when a poll returns nothing, so that nothing waits while the
        topic is idle)."""
        if self.predictions is not None:
            self.predictions.learn_pending()
            return
        for batch, origins in self.pending.cut([], [], keep_short=False):
            self._learn_batch(batch, None, origins)

    def _refused(self, record: Record) -> InvalidMessage | None:
        """Why ``record`` is refused before it is decoded (None: it is judged as it comes)."""
        return None

    def _learn_guarded(self, good: list[Samples], records: list[Record]) -> None:
        """Learn the decoded messages in micro-batches, through the guard when there is one;
        a short last batch waits for the next poll (:class:`PendingSamples`)."""
        for batch, origins in self.pending.cut(good, [(r.partition, r.offset) for r in records]):
            self._learn_batch(batch, None, origins)

    def _learn_batch(self, batch: Batch, served: np.ndarray | None, origins: Origins) -> None:
        """Learn one micro-batch (on the serving path, ``served``: the classes served for
        joined labels), through the guard when there is one."""
        if self.guard is None:
            self.loop.process(batch, served)
            return
        for rejected in self.guard.process(batch, origins, served):
            self._reject(rejected)

    def _refuse_request(self, record: Record, detail: str) -> None:
        """Dead-letter a request message the learner could not predict, as it came."""
        self._dead_letter(record.partition, record.offset, record.value, "learner_error", detail)

    def _dead_letter(
        self, partition: int, offset: int, value: bytes | None, reason: str, detail: str
    ) -> None:
        self.dead_letters.write(self.topic, partition, offset, value, reason, detail)
        self.telemetry.invalid_message(reason)
        self.invalid[reason] += 1
        if self.log_budget.allow("invalid_message"):
            log.info(
                "invalid_message",
                reason=reason,
                detail=detail,
                topic=self.topic,
                partition=partition,
                offset=offset,
            )

    def _reject(self, rejected: Rejected[Origins]) -> None:
        """Dead-letter the samples of a batch the learner could not take, per message, as a
        binary message of just those samples (what was not learned, ready to publish again)."""
        batch = rejected.batch
        partitions, offsets = rejected.tag
        log.error("learner_error", problem=rejected.problem, samples=len(batch))
        for partition, offset in dict.fromkeys(
            zip(partitions.tolist(), offsets.tolist(), strict=True)
        ):
            rows = torch.from_numpy((partitions == partition) & (offsets == offset))
            ids = None if batch.ids is None else batch.ids[rows].numpy()
            value = encode_binary(
                batch.x[rows].numpy(),
                batch.y[rows].numpy(),
                batch.level[rows].numpy(),
                None if batch.task is None else batch.task[rows].numpy(),
                None if ids is None or (ids < 0).any() else ids,
            )
            self._dead_letter(partition, offset, value, "learner_error", rejected.problem)

    def _store_dead_letters(self) -> bool:
        """With too many dead letters waiting for storage: retry storing them (with backoff),
        keeping the consumer in its group meanwhile; whether the daemon may poll again."""
        if self.dead_letter_retry.ready():
            try:
                self.dead_letters.sync()
            except (OSError, SinkError) as exc:
                self.dead_letter_retry.failed(exc)
            else:
                self.dead_letter_retry.succeeded()
        if self.dead_letters.backlog < MAX_DEAD_LETTER_BACKLOG:
            if self.source is not None and self.source.paused:
                self.source.resume()
            return True
        if self.source is not None:
            try:
                if not self.source.paused:
                    self.source.pause()
                records = self.source.keep_alive()
            except SourceError as exc:
                log.warning("keep_alive_failed", problem=str(exc))
                records = []
            if records:
                self.learn(records)
        self._stop.wait(min(self.config.kafka.poll_timeout_seconds, self.dead_letter_retry.backoff))
        return False

    # -- checkpoints --------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        every = self.config.checkpoint
        if self.loop.samples_seen - self.checkpointed_samples >= every.every_samples:
            return True
        return self._changed() and time.monotonic() - self._last_checkpoint >= every.every_seconds

    def _changed(self) -> bool:
        """Whether the last checkpoint misses something: a message read, or a sample learned
        (one that waited for its micro-batch is learned after its message was read)."""
        return (
            self.positions != self.checkpointed_positions
            or self.loop.samples_seen != self.checkpointed_samples
        )

    def checkpoint(self, force: bool = False) -> None:
        """Write a checkpoint if anything changed since the last; a failure is retried after a
        backoff (``force``: now, as at the end of :meth:`run`)."""
        if not self._changed():
            return
        if not force and not self.checkpoint_retry.ready():
            return
        self._last_checkpoint = time.monotonic()
        serving_loop = None if self.predictions is None else self.predictions.serving
        # Undoing batches changes the model: not while /predict reads it.
        with contextlib.nullcontext() if serving_loop is None else serving_loop.lock:
            if self.guard is not None:
                # Never a checkpoint with NaN or inf in it: undo the batches that put them there.
                for rejected in self.guard.verify():
                    self._reject(rejected)
            state = self.learner.state_dict()
            if self.guard is not None:
                # The point a learner error goes back to, whether or not the write below
                # succeeds.
                self.guard.mark_good(state)
        try:
            self.dead_letters.sync()
            self.history.sync()
            serving = None if self.predictions is None else self.predictions.checkpoint_state()
            created = time.time()
            meta = {
                "streamcl_checkpoint": CHECKPOINT_FORMAT,
                "created": created,
                "identity": self._identity(),
                "problem": problem_section(self.problem),
                "group": self.config.kafka.group,
                "offsets": {str(p): o for p, o in sorted(self.positions.items())},
                "loop": self.loop.state_dict(),
                "dead_letter_position": self.dead_letters.position(),
                "history_position": self.history.position(),
                # read, not yet learned: they wait for a complete micro-batch
                "pending": self.pending.state_dict(),
                "counters": {
                    "messages": self.messages,
                    "samples": self.loop.samples_seen,
                    "invalid": dict(self.invalid),
                },
            }
            if serving is not None:
                meta["serving"] = serving
            path = self.store.write(meta, state)
        except (OSError, SinkError) as exc:
            self.checkpoint_retry.failed(exc)
            return
        self.checkpoint_retry.succeeded()
        self.checkpointed_positions = dict(self.positions)
        self.checkpointed_samples = self.loop.samples_seen
        self.telemetry.checkpoint_written(created)
        log.info(
            "checkpoint_written",
            path=str(path),
            samples=self.loop.samples_seen,
            offsets=meta["offsets"],
        )
        if self.source is not None:
            self.source.commit(self.positions)

    # -- the group and the broker -------------------------------------------------------------

    def _assigned(self, partitions: list[int]) -> dict[int, int]:
        resume = {p: self.positions[p] for p in partitions if p in self.positions}
        log.info("partitions_assigned", topic=self.topic, partitions=partitions, resume_at=resume)
        for partition in partitions:
            self.telemetry.watch_partition(self.topic, partition)
        return resume

    def _client_error(self, problem: str) -> None:
        log.warning("kafka_client_error", problem=problem)
        self.watch.expedite()

    def _probe(self) -> None:
        assert self.source is not None
        kafka = self.config.kafka
        partitions = self.source.assignment() or [0]
        # A probe blocks the loop: keep it well inside the poll interval the group enforces.
        # But each partition's end-offset request may wait behind a fetch the broker holds
        # open for fetch_max_wait_ms on an idle topic: a shorter timeout reported an idle,
        # healthy broker as down.
        timeout = max(
            min(
                kafka.request_timeout_ms / 1000,
                self.watch.interval,
                kafka.max_poll_interval_ms / 4000,
            ),
            len(partitions) * (kafka.fetch_max_wait_ms / 1000 + 0.5),
        )
        try:
            ends = self.source.end_offsets(partitions, timeout)
        except SourceError as exc:
            self.watch.failed(str(exc))
            return
        self.watch.succeeded()
        self._report_lag(ends)

    def _report_lag(self, ends: dict[int, int]) -> None:
        self._next_lag_report = time.monotonic() + self.watch.interval
        for partition, end in ends.items():
            if partition in self.positions:
                lag = max(end - self.positions[partition], 0)
                self.telemetry.set_consumer_lag(self.topic, partition, lag)

    def _offset_reset(self, partition: int, offset: int) -> None:
        """The policy (docs/daemon.md, "Offset resets"): the broker no longer has the position
        the daemon learned up to. Report it, forget that position, and read the partition on
        from ``start_from`` (the source seeks there), learning its records as new; what the
        model learned before stays learned."""
        known = self.positions.pop(partition, None)
        log.error(
            "offset_reset",
            topic=self.topic,
            partition=partition,
            learned_up_to=known,
            out_of_range=offset,
            start_from=self.config.kafka.start_from,
        )
        self.telemetry.offset_reset(self.topic, partition)
