"""A daemon's model outside the daemon: loaded from a checkpoint, exported, loaded back.

``streamcl export --checkpoint DIR --out model.safetensors`` writes the learner's state as
safetensors (tensors, with the learner's JSON state in the safetensors metadata; no pickle) and
a JSON sidecar ``model.json`` next to it that says what it is and how to load it: learner name
and config, the problem (input shape, classes and names per level), the classes the stream had
shown (a served prediction never names another), and how many samples it had learned.
``streamcl predict`` loads either a checkpoint directory or such a file.

Trust: both are outside bytes. Their JSON is checked against a schema before use
(stream/runs/model_file_schema.py), and building the learner from them or loading its state
either works or is one :class:`ModelFileError` naming the file. A river learner's state is a
pickle (learners/state/sealed_pickle.py), and it is unpickled only from bytes the checkpoint
key vouches for: a checkpoint signed with it (an HMAC over the whole file,
stream/daemon/checkpoint.py), or an exported model whose sidecar holds the HMAC of its bytes
(``model_hmac_sha256``, written by an export given the key). Without the key such a state is
refused before anything is unpickled; its SHA-256 digest vouches for nothing, since anyone can
recompute it. A learner whose state is tensors and JSON only needs no key.

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

import errno
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from learners import registry
from learners.backbones.backbone import weights_from_state
from learners.base import Problem
from learners.state.learner_state import LearnerState, non_finite
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from learners.state.sealed_pickle import holds_sealed_pickles
from stream.daemon.aligned_checkpoint import AlignedCheckpoints, shard_name
from stream.daemon.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    checkpoint_bytes,
)
from stream.daemon.checkpoint_key import ENV_VAR, CheckpointKeyError, load_checkpoint_key
from stream.data.regular_file import FileTooLarge, read_regular
from stream.engine.event_loop import EventLoop
from stream.engine.serving import ServingLoop
from stream.runs.model_file_schema import (
    SIDECAR_FORMAT,
    CheckpointSections,
    Sidecar,
    problem_section,
    problems,
)

MAX_SIDECAR_BYTES = 64 << 20  # a sidecar lists the seen classes: kilobytes, megabytes at most
log = structlog.get_logger("streamcl.served_model")
KEY_HINT = f"give the checkpoint key with --key-file FILE or {ENV_VAR}"


class ModelFileError(ValueError):
    """An exported model, or a checkpoint's model, that cannot be loaded or written; the
    message names the file and the problem."""


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
    _loop: ServingLoop | None = field(default=None, repr=False, compare=False)

    def serving(self) -> ServingLoop:
        """A serving loop that predicts as the daemon did (unseen classes masked); built once
        (the learner loaded with the state), then the same loop."""
        if self._loop is not None:
            return self._loop
        try:
            # the state holds the backbone: the weights file it was trained from is not needed
            with weights_from_state():
                learner = registry.create(self.learner_name, self.problem, self.learner_config)
            loop = EventLoop(learner, self.problem)
            learner.load_state_dict(self.state)
            loop.load_state_dict(
                {**loop.state_dict(), "seen": self.seen, "samples_seen": self.samples}
            )
        except Exception as exc:  # built from the file's content: any failure is the file's
            raise ModelFileError(
                f"{self.source}: cannot serve it ({type(exc).__name__}: {_one_line(exc)})"
            ) from None
        self._loop = ServingLoop(loop)
        return self._loop

    def sidecar(self, model_sha256: str, model_hmac: str | None = None) -> dict[str, Any]:
        """The sidecar's JSON; ``model_sha256``: the digest of the model file's bytes (which
        model file the sidecar belongs to); ``model_hmac``: their HMAC under the checkpoint key,
        which a model holding pickled objects needs to be loaded again."""
        return {
            "format": SIDECAR_FORMAT,
            "learner": self.learner_name,
            "learner_config": self.learner_config,
            "problem": {
                "input_shape": list(self.problem.input_shape),
                "num_classes": list(self.problem.num_classes),
                **problem_section(self.problem),
            },
            "seen_classes": self.seen,
            "samples_learned": self.samples,
            "source": self.source,
            "load": "with learners.backbones.backbone.weights_from_state(): learner = "
            "learners.registry.create(learner, Problem(input_shape, num_classes, level_names), "
            "learner_config); learner.load_state_dict(learners.state.safetensors_io."
            "state_from_bytes(<this file's model bytes>)); mask classes not in seen_classes "
            "(the model file holds the backbone: backbone.weights is not read)",
            "model_sha256": model_sha256,
            **({"model_hmac_sha256": model_hmac} if model_hmac is not None else {}),
        }


def read_key(key_file: str | Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The checkpoint key of ``--key-file`` or the environment, as the daemon reads it
    (stream/daemon/checkpoint_key.py); None when neither gives one."""
    try:
        return load_checkpoint_key(None if key_file is None else Path(key_file), environ)
    except CheckpointKeyError as exc:
        raise CheckpointKeyError(str(exc).replace("checkpoint.key_file", "--key-file")) from None


def _model_hmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _one_line(exc: Exception, limit: int = 400) -> str:
    """``exc``'s message on one line, cut to ``limit`` characters (torch lists every
    mismatched tensor, each on its own line)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problem(
    input_shape: Sequence[int],
    num_classes: Sequence[int],
    level_names: Sequence[str],
    parents: Sequence[Sequence[int]],
    where: Path,
) -> Problem:
    """The problem a model file declares, checked as a whole (:class:`ModelFileError`: level
    names or parent maps that do not fit its levels)."""
    try:
        return Problem(
            tuple(input_shape),
            tuple(num_classes),
            tuple(level_names),
            tuple(tuple(level) for level in parents),
        )
    except ValueError as exc:
        raise ModelFileError(f"{where}: {exc}") from None


def _level_names(levels: int) -> tuple[str, ...]:
    return ("label",) if levels == 1 else tuple(f"level{i}" for i in range(levels))


def from_checkpoint(directory: str | Path, key: bytes | None = None) -> ServedModel:
    """The model of the newest usable checkpoint in ``directory``; with ``key``, only a
    checkpoint signed with it is valid (as for the daemon).

    As the daemon does when it resumes, a checkpoint whose content cannot be served (not a
    daemon's, a state the learner cannot load, pickled objects without the key) is passed over
    for the one before it, each such one logged (``checkpoint_unusable``); when none can be
    served, the newest one's problem is the error. The model returned has been loaded into its
    learner once already (:meth:`ServedModel.serving` returns that loop)."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if AlignedCheckpoints.found_in(path):
        return _from_epochs(path, key)
    store = CheckpointStore(path, key=key)
    model = _first_servable(store.candidates(), key)
    if model is not None:
        return model
    if store.skipped:
        # the newest one's problem, and a word on keys where a key is the problem
        why = ""
        if any(problem.keyed for problem in store.skipped):
            why = (
                "; with a key, only checkpoints signed with it are read"
                if key is not None
                else f"; a signed checkpoint needs its key: {KEY_HINT}"
            )
        raise CheckpointError(
            f"no usable checkpoint in {path}: none can be read (each is logged above; the "
            f"newest: {store.skipped[0]})" + why
        )
    raise CheckpointError(f"no checkpoint in {path}")


def _first_servable(
    candidates: Iterable[Checkpoint | ModelFileError], key: bytes | None
) -> ServedModel | None:
    """The model of the first of ``candidates`` (newest first) that can be served, each one
    passed over before it logged (``checkpoint_unusable``); None when there is no candidate;
    the newest one's problem when none can be served (a candidate may be that problem)."""
    unusable: list[ModelFileError] = []
    for candidate in candidates:
        try:
            if isinstance(candidate, ModelFileError):
                raise candidate
            model = _served_checkpoint(candidate, key)
        except ModelFileError as exc:
            unusable.append(exc)
            continue
        for problem in unusable:
            log.warning("checkpoint_unusable", problem=str(problem), used=str(candidate.path))
        return model
    if unusable:
        raise unusable[0]
    return None


def _from_epochs(path: Path, key: bytes | None) -> ServedModel:
    """The model of the newest complete epoch a scaled-out group wrote in ``path`` that can be
    served: its rank 0 shard's (every rank holds the same model after a sync point; rank 0's
    shard carries it), with the samples every rank learned. A group's directory may also hold
    the checkpoints of the single daemon it scaled out: older, and not served (the group
    resumed from them and went on), as the daemon itself resumes from the epochs."""
    model = _first_servable(_epoch_checkpoints(AlignedCheckpoints(path, key=key)), key)
    if model is None:
        raise CheckpointError(f"no complete global checkpoint in {path}")
    return model


def _epoch_checkpoints(epochs: AlignedCheckpoints) -> Iterator[Checkpoint | ModelFileError]:
    """Each complete epoch, newest first, as the checkpoint rank 0's shard makes of it (the
    samples summed over the ranks), or the reason it cannot be one."""
    for manifest in epochs.manifests():
        epoch = int(manifest["epoch"])
        shard = epochs.load_shard(manifest, 0)
        where = epochs.epoch_dir(epoch) / shard_name(0)
        if shard.learner is None:
            yield ModelFileError(f"{where}: rank 0's shard carries no learner")
            continue
        meta = dict(shard.meta)
        loops = [meta.get("loop")] + [
            epochs.load_shard(manifest, rank).meta.get("loop")
            for rank in range(1, int(manifest["world_size"]))
        ]
        samples = [loop.get("samples_seen") if isinstance(loop, dict) else None for loop in loops]
        if all(type(n) is int and n >= 0 for n in samples):  # the group's count, not rank 0's
            meta["loop"] = {**meta["loop"], "samples_seen": sum(samples)}
        yield Checkpoint(epoch, meta, shard.learner, where)


def _served_checkpoint(checkpoint: Checkpoint, key: bytes | None) -> ServedModel:
    """The model of one checkpoint, loaded into its learner (:class:`ModelFileError` naming
    the file if it cannot be)."""
    where = checkpoint.path
    if key is None and _pickled(checkpoint.learner, where):
        raise ModelFileError(
            f"{where}: the learner's state is pickled Python objects (river) under a SHA-256 "
            "digest only, which anyone who can write the file can recompute; it is unpickled "
            f"only from a checkpoint signed with the checkpoint key: {KEY_HINT}"
        )
    try:
        sections = CheckpointSections.model_validate(checkpoint.meta)
    except ValidationError as exc:
        raise ModelFileError(f"{where}: not a daemon's checkpoint: {problems(exc)}") from None
    identity, loop, kept = sections.identity, sections.loop, sections.problem
    model = ServedModel(
        identity.learner,
        identity.learner_config,
        _problem(
            identity.input_shape,
            identity.num_classes,
            _level_names(len(identity.num_classes)) if kept is None else kept.level_names,
            [] if kept is None else kept.parents,
            where,
        ),
        [list(classes) for classes in loop.seen],
        loop.samples_seen,
        checkpoint.learner,
        str(where),
    )
    model.serving()
    return model


def export(model: ServedModel, out: str | Path, key: bytes | None = None) -> tuple[Path, Path]:
    """Write ``model`` to ``out`` (safetensors) and its sidecar; both paths. With ``key`` the
    sidecar carries the HMAC of the model file, without which a model holding pickled objects
    (river) is not loaded again; such a model is therefore not exported without one.

    Nothing is written until both names are checked (a directory where the sidecar goes used
    to fail after the model was written); both are then written to temporaries beside them and
    renamed into place, so a failed write leaves no half-written file. The two renames are not
    one step: the sidecar names the SHA-256 of its model file, so a model file and a sidecar of
    different exports are refused when loaded."""
    out = Path(out)
    sidecar_path = out.with_suffix(".json")
    if sidecar_path == out:
        raise ModelFileError(f"{out}: the model file must not end in .json (the sidecar does)")
    if key is None and _pickled(model.state, model.source):
        raise ModelFileError(
            f"{model.source}: the learner's state is pickled Python objects (river); it is "
            "exported only signed, so that it can be loaded again: " + KEY_HINT
        )
    for target in (out, sidecar_path):
        if target.exists() and not target.is_file():
            raise ModelFileError(f"{target}: exists and is not a file; nothing was written")
    data = state_to_bytes(model.state)
    sidecar = model.sidecar(
        hashlib.sha256(data).hexdigest(), None if key is None else _model_hmac(key, data)
    )
    text = json.dumps(sidecar, indent=2) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for target, content in ((out, data), (sidecar_path, text.encode("utf-8"))):
            written.append(_temporary_beside(target, content))
        for temporary, target in zip(written, (out, sidecar_path), strict=True):
            os.replace(temporary, target)
    except OSError as exc:
        raise ModelFileError(
            f"{out}: cannot write the export ({exc.strerror or exc}: {exc.filename or out})"
        ) from None
    finally:
        for temporary in written:
            temporary.unlink(missing_ok=True)
    return out, sidecar_path


def _temporary_beside(target: Path, content: bytes) -> Path:
    """A new file beside ``target`` holding ``content``, readable as the umask allows (an
    export is for another service; mkstemp's 0600 kept it from any other user)."""
    for _ in range(100):
        name = target.parent / f".{target.name}.{secrets.token_hex(8)}.partial"
        try:
            handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
        except BaseException:
            name.unlink(missing_ok=True)
            raise
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def from_file(path: str | Path, key: bytes | None = None) -> ServedModel:
    """A model written by :func:`export` (its sidecar next to it). A model holding pickled
    objects (river) is loaded only with ``key``, the key its export was given."""
    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    for needed in (path, sidecar_path):
        if needed.is_dir():
            raise ModelFileError(f"{needed} is a directory: give the model file export wrote")
        if not needed.exists():
            raise ModelFileError(f"{needed} does not exist (export writes both)")
        if not needed.is_file():
            raise ModelFileError(f"{needed} is not a regular file (a device, a FIFO, a socket)")
    try:
        text = read_regular(sidecar_path, MAX_SIDECAR_BYTES).decode("utf-8")
        document = json.loads(text)
    except FileTooLarge as exc:
        raise ModelFileError(f"{exc.filename}: {exc.strerror} bytes; not a sidecar") from None
    except (ValueError, RecursionError, OSError) as exc:
        raise ModelFileError(f"{sidecar_path}: cannot load ({type(exc).__name__}: {exc})") from None
    try:
        if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
            raise ModelFileError(f"{sidecar_path}: not a {SIDECAR_FORMAT} sidecar")
        try:
            sidecar = Sidecar.model_validate(document)
        except ValidationError as exc:
            raise ModelFileError(f"{sidecar_path}: {problems(exc)}") from None
        declared = sidecar.problem
        problem = _problem(
            declared.input_shape,
            declared.num_classes,
            declared.level_names,
            declared.parents,
            sidecar_path,
        )
        data = read_regular(path, checkpoint_bytes())
        if sidecar.model_sha256 is not None and not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), sidecar.model_sha256
        ):
            raise ModelFileError(
                f"{path}: not the model file {sidecar_path} was written with (its SHA-256 "
                "differs): an export cut off between its two files, or one of them replaced; "
                "export again"
            )
        signed = _verified(data, sidecar.model_hmac_sha256, key, path)
        state = state_from_bytes(data)
        if not signed and _pickled(state, path):
            raise ModelFileError(
                f"{path}: the learner's state is pickled Python objects (river); it is "
                "unpickled only from a model exported with the checkpoint key and loaded with "
                f"the same key ({'not signed' if key else 'no key given'}): {KEY_HINT}"
            )
        problem_in_state = non_finite(state)
        if problem_in_state is not None:
            raise ModelFileError(f"{path}: {problem_in_state}; no daemon exports such a model")
        return ServedModel(
            sidecar.learner,
            sidecar.learner_config,
            problem,
            [list(classes) for classes in sidecar.seen_classes],
            sidecar.samples_learned,
            state,
            str(path),
        )
    except FileTooLarge as exc:
        raise ModelFileError(f"{exc.filename}: {exc.strerror} bytes; not a model file") from None
    except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from None


def _pickled(state: LearnerState, where: str | Path) -> bool:
    """Whether ``state`` holds sealed pickles (metadata nested past what can be searched is
    no state any learner writes)."""
    try:
        return holds_sealed_pickles(state.meta)
    except RecursionError:
        raise ModelFileError(f"{where}: the learner's metadata is nested too deep") from None


def _verified(data: bytes, declared: str | None, key: bytes | None, path: Path) -> bool:
    """Whether ``data`` is signed with ``key``; a signature that does not verify is refused."""
    if key is None or declared is None:
        return False
    if not hmac.compare_digest(_model_hmac(key, data), declared):
        raise ModelFileError(
            f"{path}: its HMAC (in {path.with_suffix('.json')}) does not verify under the "
            "given key: altered, or exported with another key"
        )
    return True
