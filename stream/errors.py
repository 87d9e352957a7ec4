"""The errors that mean "the user asked for something wrong" (CLI exit code 2)."""

from __future__ import annotations

from learners.backbone_weights import BackboneWeightsError
from learners.backbones import BackboneError
from learners.registry import LearnerConfigError, UnknownLearnerError
from learners.timm_backbone import TimmUnavailableError
from stream.checkpoint import CheckpointError
from stream.config_file import ConfigFileError
from stream.daemon.config import ServeConfigError
from stream.datasets import DatasetError
from stream.device import DeviceError
from stream.drift import DriftConfigError
from stream.metrics_server import MetricsServerError
from stream.report import ReportError
from stream.schedules import ScheduleError
from stream.stream_file import StreamFileError


class UsageError(ValueError):
    """Bad command-line usage."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    CheckpointError,
    BackboneError,
    BackboneWeightsError,
    TimmUnavailableError,
    ConfigFileError,
    DatasetError,
    DeviceError,
    DriftConfigError,
    LearnerConfigError,
    MetricsServerError,
    ReportError,
    ScheduleError,
    ServeConfigError,
    StreamFileError,
    UnknownLearnerError,
)
