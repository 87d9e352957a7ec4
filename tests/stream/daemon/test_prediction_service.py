"""The prediction service's checkpoint state (stream/daemon/predictions.py), without a broker."""

from __future__ import annotations

import pytest

from learners.base import Problem
from learners.registry import create
from stream.daemon.config import ServeConfig
from stream.daemon.predictions import PredictionService
from stream.engine.event_loop import EventLoop
from stream.observe.telemetry import Telemetry
from stream.sources.wire import Decoder

PROBLEM = Problem(input_shape=(3,), num_classes=(2,))


def _service(tmp_path) -> PredictionService:
    config = ServeConfig.model_validate(
        {
            "kafka": {"bootstrap": "127.0.0.1:9", "topic": "t"},
            "problem": {"input_shape": [3], "num_classes": [2]},
            "learner": {"name": "nmc"},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
            "predictions": {"topic": "p"},
            "metrics": {"port": None},
        }
    )
    service = PredictionService(config, PROBLEM, Telemetry())
    service.attach(EventLoop(create("nmc", PROBLEM), PROBLEM))
    return service


@pytest.mark.parametrize("published", [{"0": -4}, {"0": "5"}, {"x": 1}, [3]])
def test_published_ends_no_daemon_writes_are_refused(tmp_path, published):
    """The predictions topic is read back from these ends after a crash: a negative one was
    taken as given."""
    service = _service(tmp_path)
    state = service.serving.state_dict()
    with pytest.raises(ValueError, match="published predictions' ends"):
        service.restore(
            {"loop": state, "published": published, "pending": []}, Decoder(PROBLEM).decode
        )


def test_a_restore_that_failed_is_forgotten_when_the_model_is_rebuilt(tmp_path):
    service = _service(tmp_path)
    good = {"loop": service.serving.state_dict(), "published": {"0": 7}, "pending": []}
    service.restore(good, Decoder(PROBLEM).decode)
    assert service.published_from == {0: 7}
    service.attach(EventLoop(create("nmc", PROBLEM), PROBLEM))  # the daemon's _build_model
    assert service.published_from == {} and service.recovered is None
