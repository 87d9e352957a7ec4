"""A daemon's model outside the daemon: loaded from a checkpoint, exported, loaded back.

``streamcl export --checkpoint DIR --out model.safetensors`` writes the learner's state as
safetensors (tensors, with the learner's JSON state in the safetensors metadata; no pickle) and
a JSON sidecar ``model.json`` next to it that says what it is and how to load it: learner name
and config, the problem (input shape, classes and names per level), the classes the stream had
shown (a served prediction never names another), and how many samples it had learned.
``streamcl predict`` loads either a checkpoint directory or such a file.

Loading it in another service, in Python::

    sidecar = json.loads(Path("model.json").read_text())
    problem = Problem(tuple(sidecar["problem"]["input_shape"]),
                      tuple(sidecar["problem"]["num_classes"]),
                      tuple(sidecar["problem"]["level_names"]))
    learner = learners.registry.create(sidecar["learner"], problem, sidecar["learner_config"])
    learner.load_state_dict(state_from_bytes(Path("model.safetensors").read_bytes()))
    scores = learner.predict(x, level)   # then -inf for classes not in sidecar["seen_classes"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learners import registry
from learners.base import Problem
from learners.state.learner_state import LearnerState, non_finite
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from stream.daemon.checkpoint import CheckpointError, CheckpointStore, checkpoint_bytes
from stream.data.regular_file import FileTooLarge, read_regular
from stream.engine.event_loop import EventLoop
from stream.engine.serving import ServingLoop

SIDECAR_FORMAT = "streamcl-model/1"
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar lists the seen classes: kilobytes, megabytes at most


class ModelFileError(ValueError):
    """An exported model that cannot be loaded; the message names the file and the problem."""


@dataclass
class ServedModel:
    """A learner with the problem it learns and the classes the stream had shown."""

    learner_name: str
    learner_config: dict[str, Any]
    problem: Problem
    seen: list[list[int]]
    samples: int
    state: LearnerState
    source: str

    def serving(self) -> ServingLoop:
        """A serving loop that predicts as the daemon did (unseen classes masked)."""
        learner = registry.create(self.learner_name, self.problem, self.learner_config)
        loop = EventLoop(learner, self.problem)
        try:
            learner.load_state_dict(self.state)
            loop.load_state_dict(
                {**loop.state_dict(), "seen": self.seen, "samples_seen": self.samples}
            )
        except (ValueError, KeyError, TypeError) as exc:  # a state no daemon writes
            raise ModelFileError(f"{self.source}: cannot serve it ({exc})") from None
        return ServingLoop(loop)

    def sidecar(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT,
            "learner": self.learner_name,
            "learner_config": self.learner_config,
            "problem": {
                "input_shape": list(self.problem.input_shape),
                "num_classes": list(self.problem.num_classes),
                "level_names": list(self.problem.level_names),
            },
            "seen_classes": self.seen,
            "samples_learned": self.samples,
            "source": self.source,
            "load": "learners.registry.create(learner, Problem(input_shape, num_classes, "
            "level_names), learner_config).load_state_dict(learners.state.safetensors_io."
            "state_from_bytes(<this file's model bytes>)); mask classes not in seen_classes",
        }


def _level_names(levels: int) -> tuple[str, ...]:
    return ("label",) if levels == 1 else tuple(f"level{i}" for i in range(levels))


def from_checkpoint(directory: str | Path) -> ServedModel:
    """The model of the newest valid checkpoint in ``directory``."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    checkpoint = CheckpointStore(path).latest()
    if checkpoint is None:
        raise CheckpointError(f"no checkpoint in {path}")
    identity = checkpoint.meta["identity"]
    levels = len(identity["num_classes"])
    problem = Problem(
        tuple(identity["input_shape"]), tuple(identity["num_classes"]), _level_names(levels)
    )
    loop = checkpoint.meta["loop"]
    return ServedModel(
        identity["learner"],
        identity["learner_config"],
        problem,
        [list(map(int, s)) for s in loop["seen"]],
        int(loop["samples_seen"]),
        checkpoint.learner,
        str(checkpoint.path),
    )


def export(model: ServedModel, out: str | Path) -> tuple[Path, Path]:
    """Write ``model`` to ``out`` (safetensors) and its sidecar; both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out.with_suffix(".json")
    if sidecar == out:
        raise ModelFileError(f"{out}: the model file must not end in .json (the sidecar does)")
    out.write_bytes(state_to_bytes(model.state))
    sidecar.write_text(json.dumps(model.sidecar(), indent=2) + "\n", encoding="utf-8")
    return out, sidecar


def from_file(path: str | Path) -> ServedModel:
    """A model written by :func:`export` (its sidecar next to it)."""
    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    for needed in (path, sidecar_path):
        if not needed.is_file():
            raise ModelFileError(f"{needed} does not exist (export writes both)")
    try:
        sidecar = json.loads(read_regular(sidecar_path, MAX_SIDECAR_BYTES).decode("utf-8"))
        if sidecar.get("format") != SIDECAR_FORMAT:
            raise ModelFileError(f"{sidecar_path}: not a {SIDECAR_FORMAT} sidecar")
        declared = sidecar["problem"]
        problem = Problem(
            tuple(declared["input_shape"]),
            tuple(declared["num_classes"]),
            tuple(declared["level_names"]),
        )
        state = state_from_bytes(read_regular(path, checkpoint_bytes()))
        problem_in_state = non_finite(state)
        if problem_in_state is not None:
            raise ModelFileError(f"{path}: {problem_in_state}; no daemon exports such a model")
        return ServedModel(
            sidecar["learner"],
            sidecar["learner_config"],
            problem,
            [list(map(int, s)) for s in sidecar["seen_classes"]],
            int(sidecar["samples_learned"]),
            state,
            str(path),
        )
    except FileTooLarge as exc:
        raise ModelFileError(f"{exc.filename}: {exc.strerror} bytes; not a model file") from None
    except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from None
