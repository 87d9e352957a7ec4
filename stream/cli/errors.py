"""The errors that mean "the user asked for something wrong" (CLI exit code 2)."""

from __future__ import annotations

from learners.backbones.backbone import BackboneError
from learners.backbones.timm_backbone import TimmUnavailableError
from learners.backbones.weights import BackboneWeightsError
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
    DeviceError,
    DriftConfigError,
    LabelDelayError,
    KafkaOptionsError,
    LearnerConfigError,
    MemoryConfigError,
    MetricsServerError,
    ModelFileError,
    ReportError,
    ScheduleError,
    ServeConfigError,
    StreamFileError,
    UnknownLearnerError,
)
