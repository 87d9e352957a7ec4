"""Concept-drift detection on the prequential error stream, with river's detectors.

Each sample the learner predicted feeds its error (0 right, 1 wrong) to a river drift detector,
in stream order: ADWIN (Bifet & Gavaldà, 2007) by default, or any detector of ``river.drift``
(``PageHinkley``, ``KSWIN``, ``binary.DDM``, ``binary.EDDM``, ...) by name, with its parameters.
A detection is logged (structlog event ``drift_detected``), counted (:attr:`DriftMonitor.events`,
for ``streamcl_drift_events_total{learner}``), its stream position kept, and the configured
action (``learners/capabilities.py``) applied to the learner once the micro-batch it happened in has
been learned.

By default only a rise of the error counts (``direction: increase``): ADWIN is two-sided and
also fires when a learner simply gets better (a Hoeffding tree splitting), and resetting a
learner for improving would be wrong. ADWIN's detections are kept when its estimate of the
error rate after the detection (the recent window it keeps) exceeds the one before (the whole
window); one-sided detectors (the ``binary`` ones, ``PageHinkley`` with ``mode="up"``) need no
filter; two-sided ones without an estimate (``KSWIN``) require ``direction: any``.

Detection is off unless configured: a detector is called once per sample from Python, which
on wide features costs about as much as ``nmc``'s whole batched update.
"""

from __future__ import annotations

import base64
import importlib
import math
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import ConfigDict, Field, field_validator, model_validator

from learners.capabilities import DriftAction
from learners.config_model import ConfigModel
from learners.state.sealed_pickle import seal, unseal

log = structlog.get_logger("streamcl.drift")


class DriftConfigError(ValueError):
    """A drift action the learner does not support."""


class DriftConfig(ConfigModel):
    """Which detector watches the prequential errors and what a detection makes the learner do."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    detector: str = Field(
        "ADWIN", description="a river.drift detector: ADWIN, PageHinkley, KSWIN, binary.DDM, ..."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the detector's constructor arguments"
    )
    action: DriftAction = Field(DriftAction.NONE, description="none, reset or grow_recent")
    direction: Literal["increase", "any"] = Field(
        "increase", description="count rises of the error rate only, or any change"
    )

    @field_validator("detector")
    @classmethod
    def _resolves(cls, detector: str) -> str:
        detector_class(detector)
        return detector

    @field_validator("params")
    @classmethod
    def _finite(cls, params: dict[str, Any]) -> dict[str, Any]:
        # allow_inf_nan does not reach values typed Any; river's range checks pass NaN
        for name, value in params.items():
            if _non_finite(value):
                raise ValueError(
                    f"{name}: {value!r} holds NaN or inf; a detector takes finite numbers"
                )
        return params

    @model_validator(mode="after")
    def _builds(self) -> DriftConfig:
        detector = build_detector(self)
        if self.direction == "increase" and not (_has_estimate(detector) or _one_sided(detector)):
            raise ValueError(
                f"detector: {type(detector).__name__} detects changes both ways and has no "
                "estimate to tell a rise from a fall; set direction 'any' or a one-sided mode"
            )
        return self


def _non_finite(value: Any) -> bool:
    """Whether ``value`` is, or a list or mapping in it holds, a float NaN or inf."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, list | tuple):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return False


def _has_estimate(detector: Any) -> bool:
    return hasattr(detector, "estimation")


def _one_sided(detector: Any) -> bool:
    from river import base

    if isinstance(detector, base.BinaryDriftDetector):
        return not getattr(detector, "two_sided_test", False)
    return getattr(detector, "mode", None) == "up"


def detector_class(name: str) -> type:
    """``river.drift.<name>``, which must be a drift detector."""
    from river import base

    parts = name.removeprefix("river.").removeprefix("drift.").split(".")
    if not all(p.isidentifier() and not p.startswith("_") for p in parts):
        raise ValueError(f"{name!r} is not a river drift detector name like ADWIN or binary.DDM")
    module_name = ".".join(["river.drift", *parts[:-1]])
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"river has no module {module_name!r} (from {name!r})") from None
    cls = getattr(module, parts[-1], None)
    if not (
        isinstance(cls, type) and issubclass(cls, base.DriftDetector | base.BinaryDriftDetector)
    ):
        raise ValueError(f"{module_name}.{parts[-1]} is not a river drift detector")
    return cls


def build_detector(config: DriftConfig) -> Any:
    cls = detector_class(config.detector)
    try:
        return cls(**config.params)
    except (TypeError, ValueError, OverflowError) as exc:  # clock=1e29 as an int: Overflow
        raise ValueError(f"params: river.drift {cls.__name__}: {exc}") from None


class DriftMonitor:
    """Feeds prequential errors to a river detector and records its detections: how many
    (``events``) and where (``positions``; with ``keep`` the newest ``keep`` only, so that a
    daemon that runs for months on a drifting stream keeps a bounded state)."""

    def __init__(self, config: DriftConfig, learner: str, keep: int | None = None) -> None:
        from river import base

        self.config = config
        self.learner = learner
        self.detector = build_detector(config)
        self._binary = isinstance(self.detector, base.BinaryDriftDetector)
        self._filter = config.direction == "increase" and not _one_sided(self.detector)
        self.events = 0
        self.keep = keep
        self.positions: list[int] = []

    def update(self, errors: np.ndarray, positions: np.ndarray) -> list[int]:
        """Feed ``errors`` (1 wrong, 0 right) of the samples at stream ``positions`` (1-based);
        return the positions where a drift was detected."""
        detector = self.detector
        update = detector.update
        convert = bool if self._binary else float
        found = []
        for error, position in zip(errors.tolist(), positions.tolist(), strict=True):
            before = detector.estimation if self._filter else 0.0
            update(convert(error))
            if detector.drift_detected and (not self._filter or detector.estimation > before):
                found.append(int(position))
        for position in found:
            self.events += 1
            self.positions.append(position)
            if self.keep is not None and len(self.positions) > self.keep:
                del self.positions[: -self.keep]
            log.info(
                "drift_detected",
                learner=self.learner,
                sample=position,
                detector=self.config.detector,
                action=str(self.config.action),
                drift_events=self.events,
            )
        return found

    def state_dict(self) -> dict[str, Any]:
        """Counts and positions as JSON; the detector as a sealed pickle in base64 (river's
        detectors have no other form; a checkpoint holding one must be signed, see
        stream/daemon/checkpoint.py)."""
        data, sealed = seal(self.detector)
        return {
            "events": self.events,
            "positions": list(self.positions),
            "detector": base64.b64encode(data).decode("ascii"),
            "sealed": sealed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        detector = unseal(base64.b64decode(state["detector"]), state["sealed"])
        if type(detector) is not type(self.detector):
            raise ValueError(
                f"checkpointed drift detector is {type(detector).__name__}, "
                f"configured {type(self.detector).__name__}"
            )
        self.detector = detector
        self.events = int(state["events"])
        self.positions = [int(p) for p in state["positions"]][-self.keep if self.keep else 0 :]
