"""The JSON a served model is read from, checked before any of it is used.

An exported model's sidecar and a checkpoint's identity and loop sections are outside bytes:
``streamcl predict`` and ``streamcl export`` take them from files anyone may have written. Each
is validated here once, for types and ranges, so that a missing section, a learner name that is
a list or a negative sample count is one error naming the file and the field, not a
``KeyError`` or a ``TypeError`` deep in the code that used it. Whether the learner accepts its
config and state is the learner's to say (stream/runs/served_model.py).

>>> try:
...     CheckpointLoop.model_validate({"seen": [[0, 1]], "samples_seen": -5})
... except ValidationError as exc:
...     print(problems(exc))
samples_seen: Input should be greater than or equal to 0
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from learners.base import MAX_LEVELS

SIDECAR_FORMAT = "streamcl-model/1"

# Strict: JSON's 5.0 or "5" is not a size, and true is not a count.
_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Size = Annotated[int, Field(gt=0, lt=2**31)]
Count = Annotated[int, Field(ge=0, lt=2**63)]
Classes = Annotated[list[Annotated[int, Field(ge=0, lt=2**31)]], Field(max_length=2**31)]
Shape = Annotated[list[Size], Field(min_length=1, max_length=8)]
Levels = Annotated[list[Size], Field(min_length=1, max_length=MAX_LEVELS)]
HexDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
LevelNames = Annotated[list[Name], Field(min_length=1, max_length=MAX_LEVELS)]
# parents[l][c]: the class at level l of class c at level l + 1 (learners.base.Problem)
Parents = Annotated[list[Classes], Field(max_length=MAX_LEVELS - 1)]


def problem_section(problem: Any) -> dict[str, Any]:
    """What a checkpoint keeps of a :class:`~learners.base.Problem` beyond its identity: the
    level names its predictions are keyed by, and the hierarchy's parent maps."""
    return {
        "level_names": list(problem.level_names),
        "parents": [[int(c) for c in level] for level in problem.parents],
    }


class SidecarProblem(BaseModel):
    model_config = _STRICT

    input_shape: Shape
    num_classes: Levels
    level_names: LevelNames
    parents: Parents = []  # sidecars written before it have none


class Sidecar(BaseModel):
    """``model.json`` next to an exported ``model.safetensors``."""

    model_config = _STRICT

    format: Literal["streamcl-model/1"]
    learner: Name
    learner_config: dict[str, Any]
    problem: SidecarProblem
    seen_classes: list[Classes]
    samples_learned: Count
    model_sha256: HexDigest | None = None
    """SHA-256 of the model file's bytes: tells a model file from another export's (the two
    files are renamed into place one after the other). Sidecars written before it have none."""
    model_hmac_sha256: HexDigest | None = None
    """HMAC-SHA256 of the model file's bytes under the checkpoint key; written when the export
    was given one, required to load a model that holds pickled Python objects (river)."""


class CheckpointIdentity(BaseModel):
    """What a daemon's checkpoint says it is a checkpoint of."""

    model_config = _STRICT

    learner: Name
    learner_config: dict[str, Any]
    input_shape: Shape
    num_classes: Levels


class CheckpointLoop(BaseModel):
    """The parts of a checkpoint's loop state a served model takes."""

    model_config = _STRICT

    seen: list[Classes]
    samples_seen: Count


class CheckpointProblem(BaseModel):
    """The problem's level names and parents (:func:`problem_section`)."""

    model_config = _STRICT

    level_names: LevelNames
    parents: Parents = []


class CheckpointSections(BaseModel):
    model_config = _STRICT

    identity: CheckpointIdentity
    loop: CheckpointLoop
    # checkpoints written before it have none: their levels are named label / level0, ...
    problem: CheckpointProblem | None = None


def problems(exc: ValidationError, limit: int = 3) -> str:
    """The first few problems of ``exc``, each as ``field.path: message``."""
    errors = exc.errors(include_url=False, include_input=False)
    shown = [
        f"{'.'.join(str(part) for part in error['loc']) or 'the document'}: {error['msg']}"
        for error in errors[:limit]
    ]
    more = len(errors) - limit
    return "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")
