"""The serving daemon's micro-batches follow the order of the messages, not its polls."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from learners.base import Problem
from stream.daemon.config import ServeConfig
from stream.daemon.serve import Daemon
from stream.sources.serving_wire import encode_labels, encode_requests
from stream.sources.wire import encode_binary
from tests.support.memory_source import MemorySource

pytestmark = pytest.mark.kafka

PROBLEM = Problem(input_shape=(4,), num_classes=(3,))
ER = {
    "name": "er",
    "options": {"backbone": {"hidden": [8], "out_dim": 4}, "memory": {"capacity": 12}},
}


def _messages() -> list[bytes]:
    """Requests, their labels in small batches, and labelled samples between them."""
    rng = np.random.default_rng(31)
    x, y = rng.normal(size=(30, 4)).astype(np.float32), rng.integers(0, 3, 30)
    messages = [encode_requests(x[:20], np.arange(20))]
    for start in range(0, 20, 3):
        ids = np.arange(start, min(start + 3, 20))
        messages.append(encode_labels(ids, y[ids]))
        if start % 2 == 0:
            rows = slice(20 + start // 2, 21 + start // 2)
            messages.append(encode_binary(x[rows], y[rows]))
    return messages


def _served(tmp_path, broker, max_poll_records: int) -> list[torch.Tensor]:
    config = ServeConfig.model_validate(
        {
            "kafka": {
                "bootstrap": broker.bootstrap,
                "topic": "t",
                "max_poll_records": max_poll_records,
            },
            "problem": {"input_shape": [4], "num_classes": [3]},
            "learner": ER,
            "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": 5},
            "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
            "loop": {"batch_size": 4},
            "predictions": {"topic": f"polls-{max_poll_records}-predictions"},
        }
    )
    source = MemorySource({0: _messages()})
    daemon = Daemon(config, source_factory=source.bind)
    daemon.connect()
    while not source.drained():
        daemon.step()
    daemon.step()  # the empty poll: what waits for a complete micro-batch is learned
    daemon.close()
    assert daemon.loop.samples_seen == 20 + 4  # the joined requests and the labelled samples
    return [p.detach().clone() for p in daemon.learner.model.parameters()]


def test_joined_labels_and_labelled_samples_are_cut_the_same_whatever_the_polls(
    tmp_path, kafka_broker
):
    """``er`` depends on the cut; polls of 1, 2, 3 and 50 records give one model: a poll's end
    neither learns the joined-label queue nor cuts a run of labelled samples short."""
    models = [_served(tmp_path / str(n), kafka_broker, n) for n in (1, 2, 3, 50)]
    for other in models[1:]:
        for mine, theirs in zip(models[0], other, strict=True):
            assert torch.equal(mine, theirs)


def _nmc_serving(tmp_path, broker, name: str, **predictions) -> ServeConfig:
    """An nmc daemon serving predictions to ``<name>-predictions`` with ``predictions``."""
    return ServeConfig.model_validate(
        {
            "kafka": {"bootstrap": broker.bootstrap, "topic": "t"},
            "problem": {"input_shape": [4], "num_classes": [3]},
            "learner": {"name": "nmc"},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
            "predictions": {"topic": f"{name}-predictions", **predictions},
        }
    )


def test_requests_expire_by_age_while_the_topic_is_idle(tmp_path, kafka_broker):
    """Only a poll that brought records used to expire requests: on an idle topic they
    stayed in the window past ``max_age_seconds``, and the gauges said so."""
    config = _nmc_serving(tmp_path, kafka_broker, "idle-expiry", max_age_seconds=0.5)
    x = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    source = MemorySource({0: [encode_requests(x, np.arange(7))]})
    daemon = Daemon(config, source_factory=source.bind)
    daemon.connect()
    daemon.step()
    registry = daemon.telemetry.registry
    assert registry.get_sample_value("streamcl_pending_requests") == 7
    time.sleep(0.6)
    daemon.step()  # nothing new on the topic
    daemon.close()
    assert registry.get_sample_value("streamcl_pending_requests") == 0
    assert registry.get_sample_value("streamcl_unlabelled_expired_total") == 7


def test_the_serving_counters_continue_after_a_restart(tmp_path, kafka_broker):
    """Answered, expired and unmatched counts are in the checkpoint; a restarted daemon
    exported them from 0 again while streamcl_samples_total continued."""
    config = _nmc_serving(tmp_path, kafka_broker, "restart-counters", max_pending=4)
    x = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
    # six requests into a window of four (two expire), and two labels nobody waits for
    messages = [encode_requests(x, np.arange(6)), encode_labels(np.array([70, 71]), [0, 1])]
    source = MemorySource({0: messages})
    counters = {
        "streamcl_predictions_total": {"source": "kafka"},
        "streamcl_unlabelled_expired_total": {},
        "streamcl_labels_unmatched_total": {},
    }

    def read(daemon: Daemon) -> list[float | None]:
        registry = daemon.telemetry.registry
        return [registry.get_sample_value(name, labels) for name, labels in counters.items()]

    daemon = Daemon(config, source_factory=source.bind)
    daemon.connect()
    while not source.drained():
        daemon.step()
    daemon.checkpoint(force=True)
    daemon.close()
    assert read(daemon) == [6, 2, 2]
    restarted = Daemon(config, source_factory=MemorySource({0: messages}).bind)
    assert read(restarted) == [6, 2, 2]
    restarted.close()
