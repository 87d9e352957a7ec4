"""``streamcl serve`` as one worker of many: one model learned by a ``torchrun`` group.

Every worker (rank) reads its own Kafka partitions (:mod:`stream.daemon.distributed`) and learns
them into its copy of the one model; the copies are kept one by the learner's kind:

- synced statistics (acil, aef-ocl, nmc, ds-al, slda): each rank learns alone between sync
  points, where what each learned since the last is combined (:mod:`stream.daemon.statistics_sync`);
- gradient learners (er, uer, mvp): every optimizer step is synchronous, with gradients
  averaged over the ranks (:mod:`stream.daemon.gradient_sync`).

The loop runs in rounds, the same number on every rank: poll and learn locally (gradient steps
meet inside), then one small all-reduce decides, from every rank's counts and clocks, whether
this round ends at a sync point, a checkpoint or a stop, so that all ranks take the same
decision. A checkpoint is a sync point at which every rank writes its shard and rank 0 the
manifest (:mod:`stream.daemon.aligned_checkpoint`). A stop asked of any rank (SIGTERM, SIGINT)
stops the group after a last aligned checkpoint. A rank that dies makes the others' next
collective fail; torchrun then restarts the group, and every rank resumes from the last complete
global checkpoint: the model, and the offsets of every partition, as they were at that epoch, so
every message is learned exactly once whichever rank reads it now.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
import torch.distributed

from learners.capabilities import DriftAction, SyncedStatistics
from stream.daemon.aligned_checkpoint import AlignedCheckpoints, Shard
from stream.daemon.checkpoint import Checkpoint, CheckpointError
from stream.daemon.checkpoint_meta import (
    restored_counters,
    restored_history_position,
    restored_offsets,
)
from stream.daemon.config import ServeConfig, ServeConfigError
from stream.daemon.distributed import Collectives, World, assign_partitions, join, leave
from stream.daemon.gradient_sync import GradientSync
from stream.daemon.poison import PoisonLog
from stream.daemon.serve import (
    CHECKPOINT_FORMAT,
    READABLE_FORMATS,
    UNUSABLE,
    Daemon,
    refuse_another_identity,
)
from stream.daemon.statistics_sync import StatisticsSync
from stream.engine.batch import Batch, Origins
from stream.engine.device import resolve_device
from stream.engine.guard import cannot_predict
from stream.observe.rank_label import RankLabelledRegistry
from stream.observe.telemetry import Telemetry
from stream.runs.model_file_schema import problem_section
from stream.sinks.dead_letter import DeadLetterSink, FileDeadLetters
from stream.sinks.kafka_sink import SinkError
from stream.sources.kafka_source import (
    AssignHandler,
    ErrorHandler,
    KafkaSource,
    PartitionChooser,
    Record,
    SourceError,
    open_source,
)
from stream.sources.wire import InvalidMessage

log = structlog.get_logger("streamcl.scaleout")

ChosenSourceFactory = Callable[[Any, AssignHandler, ErrorHandler, PartitionChooser], KafkaSource]


def rank_file(path: Path, rank: int) -> Path:
    """A per-rank file next to ``path``: ``dead.jsonl`` -> ``dead.rank-1.jsonl``."""
    return path.with_name(f"{path.stem}.rank-{rank}{path.suffix}")


class NonFiniteState(RuntimeError):
    """A rank's statistics turned NaN or inf before a sync point, or the synced model cannot
    predict after one: the group restarts without the messages learned since the last one
    (that rank's, or every rank's; stream/daemon/poison.py)."""


def collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the process group failing (a peer gone, a collective timed out), not
    the learner: torch raises those as ``DistError``, or from gloo as a plain RuntimeError
    naming it. The group restarts from its last global checkpoint either way; only a learner's
    own failure marks the batch as poison.

    >>> collective_failure(RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    True
    >>> collective_failure(RuntimeError("Matrix is not positive definite"))
    False
    """
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("gloo" in text or "NCCL" in text)


class ScaleOutDaemon(Daemon):
    """One rank of a scaled-out ``streamcl serve``."""

    def __init__(
        self,
        config: ServeConfig,
        world: World,
        source_factory: ChosenSourceFactory = open_source,
        collectives: Collectives | None = None,
        checkpoint_key: bytes | None = None,
    ) -> None:
        """Joins the process group torchrun set up, unless ``collectives`` are given (tests run
        ranks as threads that way); ``checkpoint_key`` signs and verifies the shards."""
        drift = config.loop.drift
        if drift is not None and drift.action is not DriftAction.NONE:
            # A detection is one rank's view of its own partitions; acting on it would change
            # the one model on one rank only.
            raise ServeConfigError(
                f"loop.drift.action {drift.action.value!r}: a scaled-out daemon supports only "
                "'none' (detect and count)"
            )
        self.world = world
        self._joined = collectives is None
        if collectives is None:
            device = resolve_device(config.learner.device)
            join(world, device, config.sync.timeout_seconds)
            collectives = Collectives(world, device)
        self.collectives = collectives
        self.aligned = AlignedCheckpoints(
            config.checkpoint.dir, config.checkpoint.keep, checkpoint_key
        )
        self._shard: Shard | None = None
        # dead-letter files of another layout to cut back to the resumed checkpoint: their
        # lines after it are for messages this group reads and judges again (the files of the
        # ranks the resumed epoch had and this group has not; a single daemon's file)
        self._dropped_letters: dict[Path, dict[str, int]] = {}
        self._single_letters: dict[Path, dict[str, int]] = {}
        self._resume_offsets: dict[int, int] = {}
        self.epoch = 0
        self.partitions: list[int] | None = None
        self.choosing_source_factory = source_factory
        super().__init__(
            config,
            Telemetry(registry=RankLabelledRegistry(world.rank)),
            checkpoint_key=checkpoint_key,
        )
        # Undoing a batch alone would replay gradient steps that meet the other ranks and drop
        # the statistics synced from them: a rank learns unguarded (docs/daemon.md, "Faults").
        self.guard = None
        if world.rank != 0:
            self.loop.evaluator = None  # the global model's anytime accuracy comes from rank 0
        self.statistics: StatisticsSync | None = None
        self.gradients: GradientSync | None = None
        optimizer = getattr(self.learner, "optimizer", None)
        if isinstance(self.learner, SyncedStatistics):
            try:
                self.statistics = StatisticsSync(self.learner, self.collectives)
            except ValueError as exc:
                raise ServeConfigError(f"learner {config.learner.name!r}: {exc}") from None
        elif optimizer is not None:
            self.gradients = GradientSync(optimizer, self.collectives)
        else:
            raise ServeConfigError(
                f"learner {config.learner.name!r} cannot be scaled out: it has neither synced "
                "statistics nor gradient steps; run it as one process"
            )
        self._synced_samples = self.loop.samples_seen
        self._last_sync = time.monotonic()
        # the messages learned since the last sync point, (partition, offset), in order
        self._since_sync: dict[tuple[int, int], None] = {}
        self._last_batch: Batch | None = None  # what a sync point checks the model predicts

    # -- resume -------------------------------------------------------------------------------

    def _lock_name(self) -> str:
        return f".lock.rank-{self.world.rank}"

    def _history_dir(self) -> Path:
        return super()._history_dir() / f"rank-{self.world.rank}"

    def _resume(self) -> Checkpoint | None:
        """Resume from the newest epoch every rank can use: a complete epoch whose content
        fails on any rank (a shard no daemon could have written: see
        stream/daemon/checkpoint_meta.py, the learners' ``load_state_dict``) is passed over by
        all for the one before it, as one daemon passes over an unusable checkpoint. Without
        epochs, from a single daemon's checkpoint (scaling it out) or from scratch."""
        if self.world.rank == 0:
            self.aligned.remove_incomplete()
        self.collectives.sum([0.0])  # nobody reads the epochs while rank 0 tidies them
        tried = []
        for manifest in self.aligned.manifests():
            if self._resume_epoch(manifest, partial(self.aligned.load_shard, manifest)):
                return None
            tried.append(int(manifest["epoch"]))
            self._build_model()
        if tried:
            raise CheckpointError(
                f"no global checkpoint in {self.config.checkpoint.dir} could be resumed (epochs "
                f"{tried}; epoch_unusable lines say why); move them away to start from scratch"
            )
        single = self._single_checkpoint()
        if single is not None:
            # A single daemon's checkpoint, as an epoch 0 of one rank whose shard it is.
            manifest = {"epoch": 0, "world_size": 1, "offsets": single.meta["offsets"]}
            if not self._resume_epoch(manifest, lambda rank: single):
                raise CheckpointError(
                    f"the single daemon's checkpoint in "
                    f"{self.config.checkpoint.dir} could not be resumed"
                )
            return None
        self.poison = PoisonLog(self.config.checkpoint.dir, self.topic)
        self._poisoned = self.poison.since({})
        if self.collectives.broadcast_int(0) != 0:
            raise CheckpointError("the ranks see different global checkpoints; is the dir shared?")
        self.epoch = 0
        return None

    def _resume_epoch(self, manifest: dict[str, Any], shard: Callable[[int], Shard]) -> bool:
        """Restore this rank from ``manifest``'s epoch (a collective: every rank calls it for
        the same epoch); whether every rank could. ``shard(rank)`` loads a rank's shard."""
        epoch = int(manifest["epoch"])
        if self.collectives.broadcast_int(epoch) != epoch:
            raise CheckpointError("the ranks see different global checkpoints; is the dir shared?")
        problem = None
        try:
            self._restore_epoch(manifest, shard)
        except CheckpointError:
            raise
        except UNUSABLE as exc:
            problem = f"{type(exc).__name__}: {exc}"
        failed = self.collectives.sum([0.0 if problem is None else 1.0])[0]
        if failed:
            log.warning(
                "epoch_unusable",
                epoch=epoch,
                rank=self.world.rank,
                problem=problem or "another rank could not use it",
            )
            return False
        # counters continue only now: an epoch another rank cannot use is retried with an
        # older one, and counting them here first would count them twice
        if self._restored_own:
            self._continue_metrics()
        if epoch > 0:  # a global checkpoint (not a single daemon's, taken over)
            self.poison.prune(self.world.rank, restored_offsets(manifest["offsets"]))
        return True

    def _restore_epoch(self, manifest: dict[str, Any], shard: Callable[[int], Shard]) -> None:
        epoch = int(manifest["epoch"])
        # what an epoch tried before may have set (the model was rebuilt since)
        self.messages, self.invalid = 0, Counter()
        self._restored_own = False
        self._dropped_letters = {}
        self._history_at = {"file": 1, "bytes": 0}
        offsets = restored_offsets(manifest["offsets"])
        self.poison = PoisonLog(self.config.checkpoint.dir, self.topic)
        self._poisoned = self.poison.since(offsets)
        self.epoch = epoch
        own = shard(self.world.rank) if self.world.rank < int(manifest["world_size"]) else None
        carrier = own if own is not None and own.learner is not None else None
        if carrier is None:
            carrier = shard(0)
        refuse_another_identity(
            carrier.meta.get("identity", {}), self._identity(), f"epoch {epoch}"
        )
        if carrier.learner is None:
            raise ValueError(f"epoch {epoch}: rank 0's shard carries no learner")
        self.learner.load_state_dict(carrier.learner)
        if own is not None:
            self.loop.load_state_dict(own.meta["loop"])
            self.messages, self.invalid = restored_counters(own.meta["counters"])
            history = own.meta.get("history_position")
            if history is not None:
                self._history_at = restored_history_position(history)
            self._absorb_dropped(int(manifest["world_size"]), shard)
        if self.predictions is not None:
            self._restore_serving(manifest, own, shard)
        # what _resume_epoch exports once every rank could use the epoch
        self._restored_own = own is not None
        if self._poisoned:
            log.warning(
                "poisoned_messages_skipped", rank=self.world.rank, count=len(self._poisoned)
            )
        self._resume_offsets = offsets
        self.checkpointed_samples = self.loop.samples_seen
        self._shard = own
        log.info(
            "checkpoint_loaded",
            epoch=epoch,
            rank=self.world.rank,
            samples=self.loop.samples_seen,
            offsets=self._resume_offsets,
        )

    def _absorb_dropped(self, epoch_size: int, shard: Callable[[int], Shard]) -> None:
        """In a group smaller than the epoch's, rank r takes over the counts of the ranks r + W,
        r + 2W, ... the group no longer has (W its size): samples learned, messages read,
        invalid messages, cumulative prequential accuracy. The group's totals then go on from
        the epoch's instead of falling by what those ranks had counted (their rolling windows
        are not taken: a window is one rank's last predictions)."""
        size = self.world.size
        target = self.config.dead_letter.file
        for dropped in range(self.world.rank + size, epoch_size, size):
            meta = shard(dropped).meta
            position = meta.get("dead_letter_position")
            if target is not None and position is not None:
                self._dropped_letters[rank_file(target, dropped)] = position
            messages, invalid = restored_counters(meta["counters"])
            self.loop.absorb_counts(meta["loop"])
            self.messages += messages
            self.invalid.update(invalid)

    def _single_checkpoint(self) -> Shard | None:
        """The newest usable checkpoint a single daemon wrote in ``checkpoint.dir``, as rank 0's
        shard, for a group that scales that daemon out (None: there is none). Its dead-letter
        and history positions are of the single daemon's files, not of a rank's: left out."""
        for checkpoint in self.store.candidates():
            version = checkpoint.meta.get("streamcl_checkpoint")
            if version not in READABLE_FORMATS:
                raise CheckpointError(
                    f"{checkpoint.path}: checkpoint format {version!r}, this daemon reads "
                    f"{READABLE_FORMATS}"
                )
            meta = {
                k: v
                for k, v in checkpoint.meta.items()
                if k not in ("dead_letter_position", "history_position")
            }
            position = checkpoint.meta.get("dead_letter_position")
            file = self.config.dead_letter.file
            if file is not None and position is not None and self.world.rank == 0:
                self._single_letters = {Path(file): position}
            log.info(
                "single_checkpoint_scaled_out", path=str(checkpoint.path), rank=self.world.rank
            )
            return Shard(0, 0, meta, checkpoint.learner)
        self.store.refuse_if_any("none has both a valid seal and usable content")
        return None

    def _restore_serving(
        self, manifest: dict[str, Any], own: Shard | None, shard: Callable[[int], Shard]
    ) -> None:
        """The pending requests and published ends of the epoch: this rank's own in the same
        world (it gets the same partitions again), every rank's in another world (partitions
        move; :meth:`_assigned` keeps this rank's). Counters stay with their rank."""
        assert self.predictions is not None
        old_size = int(manifest["world_size"])
        if old_size == self.world.size:
            shards = [] if own is None else [own]
        else:
            shards = [
                own if own is not None and rank == self.world.rank else shard(rank)
                for rank in range(old_size)
            ]
        states = [s.meta["serving"] for s in shards if "serving" in s.meta]
        if not states:
            return
        mine = own.meta.get("serving") if own is not None else None
        counters = (
            {k: mine["loop"][k] for k in ("predictions", "expired", "unmatched")}
            if mine is not None
            else {"predictions": 0, "expired": 0, "unmatched": 0}
        )
        requests = sorted(
            (r for state in states for r in state["loop"]["join"]["requests"]),
            key=lambda r: float(r["served_at"]),
        )
        published: dict[str, int] = {}
        for state in states:  # from the earliest end: what is read twice is filtered
            for partition, end in state["published"].items():
                published[partition] = min(int(end), published.get(partition, int(end)))
        self.predictions.restore(
            {"loop": {**counters, "join": {"requests": requests}}, "published": published},
            self.decoder.decode,
        )

    # -- a learner error ----------------------------------------------------------------------

    def _learn_batch(self, batch: Batch, served: np.ndarray | None, origins: Origins) -> None:
        """Learn one micro-batch unguarded; if the learner fails, record the batch's messages
        (stream/daemon/poison.py) and fail: the restarted group skips them."""
        partitions, offsets = origins
        messages = list(dict.fromkeys(zip(partitions.tolist(), offsets.tolist(), strict=True)))
        self._since_sync.update(dict.fromkeys(messages))
        try:
            self.loop.process(batch, served)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if collective_failure(exc):
                # a peer died or timed out inside the step's all-reduce: the batch is innocent
                log.error("collective_failed", problem=detail, rank=self.world.rank)
                raise
            last = self._last_batch
            if (
                self.statistics is not None
                and last is not None
                and cannot_predict(self.loop, last) is not None
            ):
                # the model cannot predict even the batch it learned last, which it predicted
                # before: the culprit is among what this rank learned since the last sync point
                # (which checked the synced model), not this batch
                messages = list(self._since_sync)
            recorded = self.poison.record(self.world.rank, messages, detail)
            log.error(
                "learner_error",
                problem=detail,
                samples=len(batch),
                messages=messages[:10],
                recorded=recorded,
                rank=self.world.rank,
            )
            raise
        self._last_batch = batch

    def _refuse_non_finite(self, problem: str | None) -> None:
        """Before a sync point (a collective: every rank calls it in the same round): if any
        rank's statistics turned NaN or inf, that rank records the messages it learned since
        the last sync point as poisoned (the culprit is among them; the others are
        dead-lettered with it, ready to publish again) and every rank fails, so the group
        restarts from the last global checkpoint without them and no shard is ever written
        with NaN or inf."""
        if self.collectives.sum([float(problem is not None)])[0] == 0:
            return
        if problem is not None:
            messages = list(self._since_sync)
            self.poison.record(self.world.rank, messages, f"the learner's {problem}")
            log.error(
                "non_finite_state", problem=problem, messages=len(messages), rank=self.world.rank
            )
        raise NonFiniteState(
            f"rank {self.world.rank}: {problem}"
            if problem is not None
            else "another rank's statistics turned NaN or inf; the group restarts"
        )

    def _refuse_unpredictable(self) -> None:
        """After a sync point (a collective): if the synced model cannot predict a rank's last
        batch (a finite but extreme sample can leave statistics that pass every finiteness
        check and that no solve can use), every rank records the messages it learned since the
        last sync point as poisoned (the culprit is among them, on some rank; the others are
        dead-lettered with it, ready to publish again) and fails: the group restarts from the
        last global checkpoint without them. Otherwise the next batch of every rank failed, one
        restart each, and the culprit was never found."""
        batch = self._last_batch
        with self._model_lock():  # a prediction caches, as POST /predict's do
            problem = None if batch is None else cannot_predict(self.loop, batch)
        if self.collectives.sum([float(problem is not None)])[0] == 0:
            return
        detail = f"synced with these messages, {problem or 'the model failed on another rank'}"
        messages = list(self._since_sync)
        self.poison.record(self.world.rank, messages, detail)
        log.error("unusable_state", problem=detail, messages=len(messages), rank=self.world.rank)
        raise NonFiniteState(f"rank {self.world.rank}: {detail}")

    def _refused(self, record: Record) -> InvalidMessage | None:
        detail = self._poisoned.get((record.partition, record.offset))
        return None if detail is None else InvalidMessage("learner_error", detail)

    def _open_dead_letters(self, checkpoint: Checkpoint | None) -> DeadLetterSink:
        target = self.config.dead_letter
        if target.file is None:
            return super()._open_dead_letters(None)
        resume_at = None if self._shard is None else self._shard.meta.get("dead_letter_position")
        path = rank_file(target.file, self.world.rank)
        limit = min(self.config.messages.max_bytes, target.max_value_bytes)
        for stale, position in {**self._dropped_letters, **self._single_letters}.items():
            # cut back (rotations undone) under its lock, then let go: no one writes it now
            FileDeadLetters(
                stale, limit, position, file_bytes=target.file_bytes, files=target.files
            ).close()
            log.info("dead_letters_cut_back", path=str(stale), rank=self.world.rank)
        return FileDeadLetters(
            path, limit, resume_at, file_bytes=target.file_bytes, files=target.files
        )

    # -- partitions ---------------------------------------------------------------------------

    def connect(self) -> None:
        if self.source is None:
            self.source = self.choosing_source_factory(
                self.config.kafka, self._assigned, self._client_error, self._choose
            )
            self.source.on_reset = self._offset_reset

    def _choose(self, partitions: list[int]) -> list[int]:
        self.partitions = assign_partitions(partitions, self.world)
        return self.partitions

    def _assigned(self, partitions: list[int]) -> dict[int, int]:
        resume = {}
        for p in partitions:
            if p in self.positions:
                resume[p] = self.positions[p]
            elif p in self._resume_offsets:
                resume[p] = self.positions[p] = self.checkpointed_positions[p] = (
                    self._resume_offsets[p]
                )
        log.info(
            "partitions_assigned",
            topic=self.topic,
            rank=self.world.rank,
            world_size=self.world.size,
            partitions=partitions,
            resume_at=resume,
        )
        for partition in partitions:
            self.telemetry.watch_partition(self.topic, partition)
        if self.predictions is not None:
            # requests restored from another world whose labels now come to other ranks (rank 0
            # keeps those of unknown partition, from a single daemon's older checkpoint)
            self.predictions.serving.keep_partitions(partitions, self.world.rank == 0)
        return resume

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve in rounds until any rank is asked to stop; the last round checkpoints."""
        log.info(
            "serving",
            topic=self.topic,
            rank=self.world.rank,
            pid=os.getpid(),
            world_size=self.world.size,
            learner=self.config.learner.name,
            samples=self.loop.samples_seen,
        )
        try:
            while not self.round():
                pass
            self._note_final_checkpoint()
        finally:
            self.close()
            if self.gradients is not None:
                self.gradients.close()
            if self._joined:
                leave()
        log.info("stopped", rank=self.world.rank, samples=self.loop.samples_seen)

    def step(self) -> None:
        self.round()

    def round(self) -> bool:
        """Poll and learn locally, then meet: sync, checkpoint, stop as the group decides.
        Returns True when the group stops."""
        self._poll_and_learn()
        if self.gradients is not None:
            with self._model_lock():
                self.gradients.finish_round()
        now = time.monotonic()
        unsynced = self.loop.samples_seen - self._synced_samples
        changed = self.positions != self.checkpointed_positions
        every = self.config.checkpoint
        totals = self.collectives.sum(
            [
                float(unsynced),
                float(now - self._last_sync >= self.config.sync.every_seconds),
                float(self.loop.samples_seen - self.checkpointed_samples),
                float(changed and now - self._last_checkpoint >= every.every_seconds),
                float(changed),
                float(self._stop.is_set()),
            ]
        )
        unsynced_all, sync_clock, uncheckpointed, checkpoint_clock, changed_any, stop = totals
        checkpoint = changed_any > 0 and (
            stop > 0 or uncheckpointed >= every.every_samples or checkpoint_clock > 0
        )
        sync = checkpoint or (
            unsynced_all > 0 and (unsynced_all >= self.config.sync.every_samples or sync_clock > 0)
        )
        if sync:
            if self.statistics is not None:
                self._refuse_non_finite(self.statistics.non_finite())
                with self._model_lock():
                    self.statistics.synchronize()
                self._refuse_unpredictable()
            self._sync_seen()
            self._since_sync.clear()
            self._synced_samples = self.loop.samples_seen
            self._last_sync = now
            self.telemetry.progressed()
        if checkpoint:
            self.checkpoint()
        if self.source is not None:
            if self.watch.due():
                self._probe()
            elif time.monotonic() >= self._next_lag_report:
                self._report_lag(self.source.highwater(self.source.assignment()))
        return stop > 0

    def _sync_seen(self) -> None:
        """Mark on every rank the classes any rank's stream has shown (a collective). The
        ranks hold one model, so they predict, serve and evaluate among the same classes; a
        rank used to mask out classes only other ranks' partitions had shown, though the model
        had learned them."""
        seen = self.loop.seen
        masks = list(seen)
        anywhere = np.asarray(self.collectives.sum(np.concatenate(masks).tolist())) > 0
        start = 0
        with self._model_lock():
            for level, mask in enumerate(masks):
                seen.mark(level, np.flatnonzero(anywhere[start : start + len(mask)]))
                start += len(mask)

    def _model_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held while the model changes outside the serving loop (a sync point, the round's last
        gradient steps), so that ``POST /predict`` never reads it half-changed."""
        if self.predictions is None:
            return contextlib.nullcontext()
        return self.predictions.serving.lock

    def _poll_and_learn(self) -> None:
        kafka = self.config.kafka
        try:
            self.connect()
            if self.predictions is not None:
                self.predictions.recover(self.positions, self.partitions or [])
            assert self.source is not None
            if not self.partitions:
                # More ranks than partitions: this one learns nothing but still meets the others.
                self._stop.wait(kafka.poll_timeout_seconds)
                records = []
            else:
                records = self.source.poll(kafka.max_poll_records, kafka.poll_timeout_seconds)
        except SourceError as exc:
            # Wait no longer than a poll: the other ranks expect this one at the round's end.
            self._stop.wait(min(self.watch.failed(str(exc)), kafka.poll_timeout_seconds))
            return
        self.telemetry.progressed()
        if records:
            self.watch.alive()
            self.learn(records)
        elif self.predictions is not None:
            self.predictions.expire()  # a request's age runs on while nothing arrives
        # A rank learns each poll whole: its batches meet the others' steps in this round, and
        # a shard carries nothing pending.
        self.learn_pending()

    # -- aligned checkpoints ------------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> None:
        """Write this rank's shard of the next epoch; rank 0 writes the manifest once every rank
        wrote its shard (a collective: every rank calls it in the same round, so it is written
        whenever called, and ``force`` changes nothing)."""
        self._last_checkpoint = time.monotonic()
        epoch = self.epoch + 1
        mine = {str(p): o for p, o in sorted(self.positions.items())}
        meta = {
            "streamcl_checkpoint": CHECKPOINT_FORMAT,
            "created": time.time(),
            "identity": self._identity(),
            "problem": problem_section(self.problem),
            "group": self.config.kafka.group,
            "world_size": self.world.size,
            "offsets": mine,
            "loop": self.loop.state_dict(),
            "counters": {
                "messages": self.messages,
                "samples": self.loop.samples_seen,
                "invalid": dict(self.invalid),
            },
        }
        carries_learner = self.world.rank == 0 or self.statistics is None
        entry = None
        try:
            self.dead_letters.sync()
            self.history.sync()
            meta["dead_letter_position"] = self.dead_letters.position()
            meta["history_position"] = self.history.position()
            if self.predictions is not None:
                meta["serving"] = self.predictions.checkpoint_state()
            learner = self.learner.state_dict() if carries_learner else None
            entry = self.aligned.write_shard(epoch, self.world.rank, meta, learner)
        except (OSError, SinkError) as exc:
            log.error("checkpoint_failed", epoch=epoch, problem=f"{type(exc).__name__}: {exc}")
        written = self.collectives.gather_json({"entry": entry, "offsets": mine})
        self.epoch = epoch  # an abandoned epoch's number is not reused
        if any(w["entry"] is None for w in written):
            log.error("global_checkpoint_abandoned", epoch=epoch)
            return
        if self.world.rank == 0:
            offsets = {p: o for w in written for p, o in w["offsets"].items()}
            try:
                self.aligned.write_manifest(
                    epoch, self.world.size, [w["entry"] for w in written], offsets
                )
            except OSError as exc:
                log.error("checkpoint_failed", epoch=epoch, problem=f"manifest: {exc}")
                return
        self.checkpointed_positions = dict(self.positions)
        self.checkpointed_samples = self.loop.samples_seen
        self.telemetry.checkpoint_written()
        log.info(
            "checkpoint_written",
            epoch=epoch,
            rank=self.world.rank,
            samples=self.loop.samples_seen,
            offsets=mine,
        )
        if self.source is not None:
            self.source.commit(self.positions)
