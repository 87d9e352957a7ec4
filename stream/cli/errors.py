"""The errors that mean "the user asked for something wrong" (CLI exit code 2)."""

from __future__ import annotations

import os

from learners.backbones.backbone import BackboneError
from learners.backbones.timm_backbone import TimmUnavailableError
from learners.backbones.weights import BackboneWeightsError
from learners.linalg.ridge import RidgeBreakdown
from learners.registry import LearnerConfigError, UnknownLearnerError
from memory.config import MemoryConfigError
from stream.cli.config_file import ConfigFileError
from stream.daemon.checkpoint import CheckpointError
from stream.daemon.checkpoint_key import CheckpointKeyError
from stream.daemon.config import ServeConfigError
from stream.data.datasets import DatasetError
from stream.data.label_delay import LabelDelayError
from stream.data.schedules import ScheduleError
from stream.data.stream_file import StreamFileError
from stream.engine.device import DeviceError
from stream.engine.drift_detection import DriftConfigError
from stream.observe.http_endpoint import MetricsServerError
from stream.runs.report import ReportError
from stream.runs.served_model import ModelFileError
from stream.sinks.dead_letter import DeadLetterFileInUse
from stream.sources.kafka_options import KafkaOptionsError


class UsageError(ValueError):
    """Bad command-line usage."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    CheckpointError,
    CheckpointKeyError,
    BackboneError,
    BackboneWeightsError,
    TimmUnavailableError,
    ConfigFileError,
    DatasetError,
    DeadLetterFileInUse,
    DeviceError,
    DriftConfigError,
    LabelDelayError,
    KafkaOptionsError,
    LearnerConfigError,
    MemoryConfigError,
    MetricsServerError,
    ModelFileError,
    ReportError,
    RidgeBreakdown,
    ScheduleError,
    ServeConfigError,
    StreamFileError,
    UnknownLearnerError,
)


# Set by ``streamcl serve --workers N`` for its workers: a worker that refuses to start (exit
# 2: a checkpoint of another model, a held lock) writes its line there, so that the launcher
# stops the group and exits 2 too, rather than torchrun restarting it until its restarts run
# out and exiting 1 (which a service manager restarts for ever).
REFUSAL_FILE_ENV = "STREAMCL_REFUSAL_FILE"


def note_refusal(message: str) -> None:
    """Hand ``message`` (a refusal, exit 2) to the launcher of this worker, if there is one."""
    path = os.environ.get(REFUSAL_FILE_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(message.replace("\n", " ") + "\n")
    except OSError:
        pass  # the launcher then sees only the exit code
