"""``streamcl export`` and ``streamcl predict`` on a daemon checkpoint (stream/runs/served_model.py).

The checkpoint is written as the daemon writes one (identity, loop state, learner state), from
an event loop that learned the first part of a digits stream; the rest is then predicted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from learners.registry import create
from stream.cli import main as cli
from stream.daemon.checkpoint import CheckpointStore
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.stream_file import read_stream
from stream.engine.event_loop import EventLoop
from stream.runs.model_file_schema import problem_section
from stream.sources.file_source import task_batches

LEARNED = 700


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    stream_path = tmp / "digits.scl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(stream_path)]) == 0
    stream = read_stream(stream_path)
    dataset = load_dataset("digits")
    problem = dataset.problem()
    loop = EventLoop(create("nmc", problem), problem)
    for batch in task_batches(stream, dataset, 16):
        if loop.samples_seen >= LEARNED:
            break
        loop.process(batch)
    meta = {
        "identity": {
            "topic": "t",
            "learner": "nmc",
            "learner_config": loop.learner.config.model_dump(mode="json"),
            "input_shape": list(problem.input_shape),
            "num_classes": list(problem.num_classes),
        },
        "offsets": {"0": loop.samples_seen},
        "loop": loop.state_dict(),
    }
    CheckpointStore(tmp / "ckpt").write(meta, loop.learner.state_dict())
    x = as_float_tensor(dataset.X_train[np.asarray(stream.row)])
    return tmp, stream_path, stream, loop, x


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_from_a_checkpoint_serves_what_the_daemon_would(trained, capsys):
    tmp, stream_path, stream, loop, x = trained
    out = tmp / "from-checkpoint.jsonl"
    args = ["predict", str(stream_path), "--checkpoint", str(tmp / "ckpt"), "--out", str(out)]
    assert cli.main(args) == 0
    lines = _lines(out)
    assert [line["id"] for line in lines] == stream.id.tolist()
    expected = loop.masked_scores(x, 0).argmax(1)
    seen = loop.seen[0]
    got = np.array([line["predicted"]["label"] for line in lines])
    np.testing.assert_array_equal(got, expected)
    assert seen[got].all(), "only classes the stream had shown are predicted"
    assert all(line["position"] == loop.samples_seen for line in lines)
    accuracy = np.mean(got == stream.y)
    assert f"accuracy on the stream's labels {100 * accuracy:.2f}%" in capsys.readouterr().out


def test_an_exported_model_predicts_exactly_as_its_checkpoint(trained):
    tmp, stream_path, _, loop, _ = trained
    model = tmp / "export" / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["learner"] == "nmc" and sidecar["samples_learned"] == loop.samples_seen
    assert sidecar["seen_classes"] == [np.flatnonzero(loop.seen[0]).tolist()]
    outs = []
    for source in (["--model", str(model)], ["--checkpoint", str(tmp / "ckpt")]):
        out = tmp / f"{source[0][2:]}.jsonl"
        args = ["predict", str(stream_path), *source, "--top-k", "2", "--out", str(out)]
        assert cli.main(args) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    first = json.loads(outs[0].splitlines()[0])
    assert len(first["top_k"]["label"]) <= 2 and "scores" not in first


def test_the_exported_state_is_the_learners_own(trained):
    from learners.state.safetensors_io import state_from_bytes

    tmp, _, _, loop, x = trained
    model = tmp / "again.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    learner = create("nmc", loop.problem)
    learner.load_state_dict(state_from_bytes(model.read_bytes()))
    torch.testing.assert_close(learner.predict(x[:50]), loop.learner.predict(x[:50]))


def test_missing_or_foreign_inputs_are_one_line_errors(trained, tmp_path, capsys):
    _, stream_path, _, _, _ = trained
    assert cli.main(["export", "--checkpoint", str(tmp_path / "none"), "--out", "m.st"]) == 2
    assert "does not exist" in capsys.readouterr().err
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(b"not a model")
    assert cli.main(["predict", str(stream_path), "--model", str(lonely)]) == 2
    assert "lonely.json does not exist" in capsys.readouterr().err
    lonely.with_suffix(".json").write_text('{"format": "other"}')
    assert cli.main(["predict", str(stream_path), "--model", str(lonely)]) == 2
    assert "not a streamcl-model/1 sidecar" in capsys.readouterr().err


@pytest.mark.parametrize(
    "tensor, sidecar, message",
    [
        ("nan", {}, "tensor 'sums.0' holds NaN or inf"),
        ("shape", {}, "tensor 'sums.0' has shape (3, 3)"),
        (None, {"seen_classes": [[1000]]}, "class 1000 is not an integer in [0, 10)"),
        (
            None,
            {"samples_learned": -3},
            "samples_learned: Input should be greater than or equal to 0",
        ),
        (None, "deep", "RecursionError"),
    ],
)
def test_an_exported_model_no_daemon_writes_is_one_line_error(
    trained, tmp_path, capsys, tensor, sidecar, message
):
    """A model file is outside bytes: NaN weights used to be served (exit 0, every prediction
    wrong), a tensor of another shape or a forged sidecar ended in 'failed: ValueError'."""
    from learners.state.learner_state import LearnerState
    from learners.state.safetensors_io import state_from_bytes, state_to_bytes

    tmp, stream_path, _, _, _ = trained
    model = tmp_path / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    state = state_from_bytes(model.read_bytes())
    sums = state.tensors["sums.0"]
    if tensor == "nan":
        state.tensors["sums.0"] = torch.full_like(sums, float("nan"))
    elif tensor == "shape":
        state.tensors["sums.0"] = torch.zeros(3, 3, dtype=sums.dtype)
    data = state_to_bytes(LearnerState(state.tensors, state.meta))
    model.write_bytes(data)
    side = model.with_suffix(".json")
    if sidecar == "deep":
        side.write_text("[" * 100_000 + "]" * 100_000)
    else:
        # a forger recomputes the digest that ties the sidecar to its model file
        digest = {"model_sha256": hashlib.sha256(data).hexdigest()}
        side.write_text(json.dumps({**json.loads(side.read_text()), **digest, **sidecar}))
    capsys.readouterr()
    assert cli.main(["predict", str(stream_path), "--model", str(model)]) == 2
    err = capsys.readouterr().err  # names the model or, for its sidecar's fields, the sidecar
    assert err.count("\n") == 1 and str(model.with_suffix("")) in err and message in err


# -- outside bytes: checkpoints and models no daemon wrote ------------------------------------


def _checkpoint_meta(loop, learner="nmc"):
    problem = loop.problem
    return {
        "identity": {
            "topic": "t",
            "learner": learner,
            "learner_config": loop.learner.config.model_dump(mode="json"),
            "input_shape": list(problem.input_shape),
            "num_classes": list(problem.num_classes),
        },
        "offsets": {"0": loop.samples_seen},
        "loop": loop.state_dict(),
    }


def test_a_model_file_of_another_export_is_refused_and_an_older_sidecar_still_loads(
    trained, tmp_path, capsys
):
    """The model file and its sidecar are renamed into place one after the other: an export
    cut off between the two leaves a new model beside the old sidecar."""
    tmp, stream_path, _, loop, _ = trained
    first, second = tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(first)]) == 0
    state = loop.learner.state_dict()
    state.tensors["sums.0"] = state.tensors["sums.0"] * 2
    CheckpointStore(tmp_path / "ckpt").write(_checkpoint_meta(loop), state)
    assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(second)]) == 0
    sidecar = json.loads(first.with_suffix(".json").read_text())
    assert sidecar["model_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    first.write_bytes(second.read_bytes())  # the new model beside the old sidecar
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(stream_path), "--model", str(first), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its SHA-256 differs" in err and "export again" in err
    # a sidecar written before the digest existed has none: the pair loads as before
    del sidecar["model_sha256"]
    first.with_suffix(".json").write_text(json.dumps(sidecar))
    assert cli.main(["predict", str(stream_path), "--model", str(first), "--out", str(out)]) == 0


def test_predict_and_export_pass_over_a_checkpoint_they_cannot_serve_for_the_one_before(
    trained, tmp_path, capsys
):
    """As the daemon resumes from the checkpoint before a newest one whose content it cannot
    use, so do predict and export; they used to stop at the newest."""
    tmp, stream_path, _, loop, _ = trained
    store = CheckpointStore(tmp_path / "ckpt", keep=3)
    store.write(_checkpoint_meta(loop), loop.learner.state_dict())
    broken = loop.learner.state_dict()
    broken.tensors["sums.0"] = torch.zeros(3, 3, dtype=broken.tensors["sums.0"].dtype)
    newest = store.write(_checkpoint_meta(loop), broken)
    reference = tmp_path / "reference.jsonl"
    args = ["predict", str(stream_path), "--checkpoint", str(tmp / "ckpt")]
    assert cli.main([*args, "--out", str(reference)]) == 0
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    args = ["predict", str(stream_path), "--checkpoint", str(tmp_path / "ckpt")]
    assert cli.main([*args, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "checkpoint_unusable" in err and newest.name in err and "cannot serve it" in err
    assert out.read_text() == reference.read_text()
    model = tmp_path / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(model)]) == 0
    assert "checkpoint_unusable" in capsys.readouterr().err
    exported = tmp_path / "exported.jsonl"
    assert (
        cli.main(["predict", str(stream_path), "--model", str(model), "--out", str(exported)]) == 0
    )
    assert _lines(exported) == _lines(reference)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda meta: meta.pop("identity"), "identity: Field required"),
        (lambda meta: meta["identity"].update(learner=5), "identity.learner: Input should be"),
        (lambda meta: meta["identity"].update(learner=["nmc"]), "identity.learner: Input should"),
        (lambda meta: meta["identity"].update(learner_config=0.5), "identity.learner_config:"),
        (lambda meta: meta["loop"].update(samples_seen=-5), "loop.samples_seen: Input should be"),
        (lambda meta: meta["loop"].update(seen={"a": 1}), "loop.seen: Input should be"),
    ],
    ids=["no-identity", "learner-5", "learner-list", "config-float", "samples-neg", "seen-dict"],
)
def test_a_checkpoint_no_daemon_writes_is_one_line_error_for_predict_and_export(
    trained, tmp_path, capsys, change, message
):
    """These ended in 'failed: KeyError: identity' or 'TypeError' (exit 1), and export wrote
    a model of learner 5 or of -5 samples."""
    _, stream_path, _, loop, _ = trained
    meta = _checkpoint_meta(loop)
    change(meta)
    CheckpointStore(tmp_path / "ckpt").write(meta, loop.learner.state_dict())
    model = tmp_path / "out" / "model.safetensors"
    for args in (
        ["predict", str(stream_path), "--checkpoint", str(tmp_path / "ckpt")],
        ["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(model)],
    ):
        capsys.readouterr()
        assert (
            cli.main([*args, "--out", str(tmp_path / "p.jsonl")] if args[0] == "predict" else args)
            == 2
        )
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "checkpoint-" in err and message in err
    assert not model.exists()


def test_export_refuses_a_state_the_learner_cannot_load_before_writing(trained, tmp_path, capsys):
    _, _, _, loop, _ = trained
    state = loop.learner.state_dict()
    state.tensors["sums.0"] = torch.zeros(3, 3, dtype=state.tensors["sums.0"].dtype)
    CheckpointStore(tmp_path / "ckpt").write(_checkpoint_meta(loop), state)
    model = tmp_path / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(model)]) == 2
    assert "cannot serve it" in capsys.readouterr().err
    assert not model.exists()


@pytest.mark.parametrize(
    "sidecar, message",
    [
        ({"learner": ["nmc"]}, "learner: Input should be a valid string"),
        ({"learner_config": 0.5}, "learner_config: Input should be a valid dictionary"),
        ({"problem": {"input_shape": [64], "num_classes": [10]}}, "problem.level_names: Field"),
        ({"seen_classes": {"a": 1}}, "seen_classes: Input should be a valid list"),
        ({"samples_learned": 1.5}, "samples_learned: Input should be a valid integer"),
        ({"learner": "er"}, "cannot serve it (LearnerConfigError: invalid learner 'er'"),
    ],
)
def test_a_sidecar_no_export_writes_is_one_line_error(trained, tmp_path, capsys, sidecar, message):
    """A list for the learner's name was 'TypeError: unhashable', a float for its config
    "'float' object is not iterable" (exit 1)."""
    tmp, stream_path, _, _, _ = trained
    model = tmp_path / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    side = model.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), **sidecar}))
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(model.with_suffix("")) in err and message in err


def test_a_model_of_other_tensor_shapes_is_one_line_error(tmp_path, capsys):
    """An er head of 11 classes for 10 ended in 'failed: RuntimeError: ... size mismatch'."""
    from learners.state.safetensors_io import state_to_bytes
    from stream.runs.served_model import ServedModel, export

    problem = load_dataset("digits").problem()
    learner = create("er", problem)
    state = learner.state_dict()
    state.tensors["model.heads.0.bias"] = torch.zeros(11)
    model = tmp_path / "er.safetensors"
    config = learner.config.model_dump(mode="json")
    export(ServedModel("er", config, problem, [list(range(10))], 0, state, "x"), model)
    model.write_bytes(state_to_bytes(state))
    stream_path = tmp_path / "digits.scl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(stream_path)]) == 0
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "er.safetensors: cannot serve it (RuntimeError" in err
    assert "size mismatch for heads.0.bias" in err


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:100],  # truncated
        lambda data: (10**15).to_bytes(8, "little") + data[8:],  # a header length beyond it
        lambda data: b"\x80\x04\x95" + data[3:],  # a pickle's opening
    ],
    ids=["truncated", "header-length", "pickle"],
)
def test_a_model_file_that_is_not_safetensors_is_one_line_error_naming_it(
    trained, tmp_path, capsys, damage
):
    """With its digest recomputed (or a sidecar from before digests), a damaged model file
    ended in 'failed: SafetensorError: ... invalid header length', exit 1, naming no file."""
    tmp, stream_path, _, _, _ = trained
    model = tmp_path / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    data = damage(model.read_bytes())
    model.write_bytes(data)
    side = model.with_suffix(".json")
    digest = {"model_sha256": hashlib.sha256(data).hexdigest()}
    side.write_text(json.dumps({**json.loads(side.read_text()), **digest}))
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{model}: cannot load" in err and "not a safetensors" in err


def test_an_export_is_readable_as_the_umask_allows(trained, tmp_path):
    """mkstemp's 0600 kept an export 'for another service' from any other user."""
    tmp = trained[0]
    model = tmp_path / "model.safetensors"
    old = os.umask(0o022)
    try:
        assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    finally:
        os.umask(old)
    for path in (model, model.with_suffix(".json")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_errors_about_unreadable_inputs_say_what_is_wrong_with_them(trained, tmp_path, capsys):
    """Every checkpoint truncated was "none has a valid seal ... a signed checkpoint needs its
    key" (no key was involved); a directory or a device given for a model or sidecar "does not
    exist"; a sidecar too deep for JSON was blamed on the model file."""
    tmp, stream_path, _, _, _ = trained
    directory = tmp_path / "unsigned"  # a word in the path is no reason for the key hint
    shutil.copytree(tmp / "ckpt", directory)
    for file in directory.glob("*.sclckpt"):
        file.write_bytes(file.read_bytes()[:-10])
    out = str(tmp_path / "p.jsonl")
    capsys.readouterr()
    assert (
        cli.main(["predict", str(stream_path), "--checkpoint", str(directory), "--out", out]) == 2
    )
    err = capsys.readouterr().err
    assert "none can be read" in err and "truncated" in err and "checkpoint key" not in err, err
    model = tmp_path / "m" / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(stream_path), "--model", str(model.parent), "--out", out]) == 2
    assert "is a directory: give the model file" in capsys.readouterr().err
    sidecar = model.with_suffix(".json")
    text = sidecar.read_text()
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", out]) == 2
    assert f"{sidecar}: cannot load (RecursionError" in capsys.readouterr().err
    sidecar.unlink()
    os.mkfifo(sidecar)
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", out]) == 2
    assert f"{sidecar} is not a regular file" in capsys.readouterr().err
    sidecar.unlink()
    sidecar.write_text(text)
    assert cli.main(["predict", str(stream_path), "--model", str(model), "--out", out]) == 0


def test_a_model_trained_from_a_weights_file_is_served_without_that_file(trained, tmp_path):
    """An export (and a checkpoint) holds the backbone's tensors, but loading it read the
    weights file named in its config again: moved to another machine it failed ("backbone
    weights file ... does not exist"), and with another file there it loaded other weights."""
    from safetensors.torch import save_file

    _, stream_path, stream, _, x = trained
    problem = load_dataset("digits").problem()
    options = {"backbone": {"name": "mlp", "hidden": [32], "out_dim": 16}}
    shapes = create("nmc", problem, options).backbone.state_dict()
    weights = tmp_path / "w" / "mlp.safetensors"
    weights.parent.mkdir()
    save_file(
        {
            k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
            for k, v in shapes.items()
        },
        weights,
    )
    options["backbone"]["weights"] = str(weights)
    loop = EventLoop(create("nmc", problem, options), problem)
    for batch in task_batches(stream, load_dataset("digits"), 16):
        if loop.samples_seen >= LEARNED:
            break
        loop.process(batch)
    CheckpointStore(tmp_path / "ckpt").write(_checkpoint_meta(loop), loop.learner.state_dict())
    model = tmp_path / "export" / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(model)]) == 0
    # other weights in its place, then none at all
    save_file({k: torch.zeros(v.shape) for k, v in shapes.items()}, weights)
    expected = loop.masked_scores(x, 0).argmax(1)
    for args in (["--model", str(model)], ["--checkpoint", str(tmp_path / "ckpt")]):
        for present in (True, False):
            if not present:
                weights.unlink(missing_ok=True)
            out = tmp_path / "p.jsonl"
            assert cli.main(["predict", str(stream_path), *args, "--out", str(out)]) == 0
            got = np.array([line["predicted"]["label"] for line in _lines(out)])
            np.testing.assert_array_equal(got, expected)


def test_export_over_a_sidecar_name_taken_by_a_directory_writes_nothing(trained, tmp_path, capsys):
    """It wrote the model, then failed with IsADirectoryError (exit 1): half an export."""
    from stream.runs.served_model import ModelFileError, export, from_checkpoint

    tmp = trained[0]
    model = tmp_path / "model.safetensors"
    model.with_suffix(".json").mkdir()
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 2
    assert "model.json: is a directory" in capsys.readouterr().err
    with pytest.raises(ModelFileError, match=r"model\.json: exists and is not a file"):
        export(from_checkpoint(tmp / "ckpt"), model)
    assert not model.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


# -- river learners: pickled state is loaded only under the checkpoint key --------------------

RIVER = "river:tree.HoeffdingTreeClassifier"


@pytest.fixture(scope="module")
def river(tmp_path_factory):
    """A river learner's checkpoints: one signed with a key, one a keyless store wrote."""
    tmp = tmp_path_factory.mktemp("river")
    stream_path = tmp / "digits.scl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(stream_path)]) == 0
    stream, dataset = read_stream(stream_path), load_dataset("digits")
    problem = dataset.problem()
    loop = EventLoop(create(RIVER, problem), problem)
    for batch in task_batches(stream, dataset, 16):
        if loop.samples_seen >= 200:
            break
        loop.process(batch)
    key = b"k" * 32
    key_file = tmp / "key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    meta = _checkpoint_meta(loop, RIVER)
    CheckpointStore(tmp / "signed", key=key).write(meta, loop.learner.state_dict())
    CheckpointStore(tmp / "digest").write(meta, loop.learner.state_dict())
    return tmp, stream_path, key_file


def test_a_river_checkpoint_is_read_only_signed_and_with_its_key(river, capsys, monkeypatch):
    """predict and export used to unpickle a river state under a SHA-256 anyone recomputes."""
    monkeypatch.delenv("STREAMCL_CHECKPOINT_KEY", raising=False)
    tmp, stream_path, key_file = river
    out = str(tmp / "p.jsonl")
    digest, signed = str(tmp / "digest"), str(tmp / "signed")
    for args in (
        ["predict", str(stream_path), "--checkpoint", digest, "--out", out],
        [
            "predict",
            str(stream_path),
            "--checkpoint",
            digest,
            "--out",
            out,
            "--key-file",
            str(key_file),
        ],
        ["predict", str(stream_path), "--checkpoint", signed, "--out", out],
        ["export", "--checkpoint", digest, "--out", str(tmp / "m.safetensors")],
    ):
        capsys.readouterr()
        assert cli.main(args) == 2
        error = capsys.readouterr().err.splitlines()[-1]  # after the store's warnings, if any
        assert "key" in error and error.startswith("streamcl: error: ")
    assert not (tmp / "m.safetensors").exists()
    monkeypatch.setenv("STREAMCL_CHECKPOINT_KEY", key_file.read_text())
    assert cli.main(["predict", str(stream_path), "--checkpoint", signed, "--out", out]) == 0


def test_an_exported_river_model_is_signed_and_loads_only_with_its_key(river, capsys, monkeypatch):
    monkeypatch.delenv("STREAMCL_CHECKPOINT_KEY", raising=False)
    tmp, stream_path, key_file = river
    key = ["--key-file", str(key_file)]
    model = tmp / "river.safetensors"
    args = ["export", "--checkpoint", str(tmp / "signed"), "--out", str(model)]
    assert cli.main([*args, *key]) == 0
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert len(sidecar["model_hmac_sha256"]) == 64
    predictions = {}
    for source in ("--checkpoint", "--model"):
        out = tmp / f"{source[2:]}.jsonl"
        path = str(tmp / "signed") if source == "--checkpoint" else str(model)
        assert cli.main(["predict", str(stream_path), source, path, "--out", str(out), *key]) == 0
        predictions[source] = out.read_text()
    assert predictions["--model"] == predictions["--checkpoint"]
    capsys.readouterr()
    predict = ["predict", str(stream_path), "--model", str(model), "--out", str(tmp / "q.jsonl")]
    assert cli.main(predict) == 2
    assert "(no key given)" in capsys.readouterr().err
    other = tmp / "other-key"
    other.write_bytes(b"o" * 32)
    other.chmod(0o600)
    assert cli.main([*predict, "--key-file", str(other)]) == 2
    assert "does not verify under the given key" in capsys.readouterr().err


def test_a_forged_river_model_is_refused_before_anything_is_unpickled(
    river, tmp_path, capsys, monkeypatch
):
    """376 bytes asking for list(range(150_000_000)) under a recomputed SHA-256 took 6 GB."""
    import hashlib
    import pickle

    import learners.river_learner
    from learners.state.learner_state import LearnerState
    from learners.state.safetensors_io import state_from_bytes, state_to_bytes

    monkeypatch.delenv("STREAMCL_CHECKPOINT_KEY", raising=False)
    tmp, stream_path, key_file = river
    model = tmp_path / "evil.safetensors"
    args = ["export", "--checkpoint", str(tmp / "signed"), "--out", str(model)]
    assert cli.main([*args, "--key-file", str(key_file)]) == 0
    bomb = pickle.dumps([1, 2, 3], protocol=5)
    state = state_from_bytes(model.read_bytes())
    sealed = {**state.meta["sealed"], "sha256": hashlib.sha256(bomb).hexdigest()}
    forged = state_to_bytes(
        LearnerState(
            {"models": torch.frombuffer(bytearray(bomb), dtype=torch.uint8)},
            {**state.meta, "sealed": sealed},
        )
    )
    model.write_bytes(forged)
    # the SHA-256 that ties a sidecar to its model file vouches for nothing: a forger recomputes it
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["model_sha256"] = hashlib.sha256(forged).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(sidecar))

    def unpickled(*_):
        raise AssertionError("UNSEAL CALLED")

    monkeypatch.setattr(learners.river_learner, "unseal", unpickled)
    predict = ["predict", str(stream_path), "--model", str(model), "--out", str(tmp_path / "p")]
    with_key = [*predict, "--key-file", str(key_file)]
    for args, message, unsigned in (
        (predict, "(no key given)", False),
        (with_key, "does not verify under the given key", False),  # the export's, now stale
        (with_key, "(not signed)", True),
    ):
        if unsigned:
            sidecar = json.loads(model.with_suffix(".json").read_text())
            sidecar.pop("model_hmac_sha256")
            model.with_suffix(".json").write_text(json.dumps(sidecar))
        capsys.readouterr()
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "evil.safetensors" in err and message in err and "UNSEAL CALLED" not in err


def _with_nan(path, out):
    """A copy of the inline binary stream ``path`` whose event 7 has a NaN input."""
    raw = bytearray(path.read_bytes())
    size = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16 : 16 + size])
    x = header["arrays"]["x"]
    row = int(np.prod(read_stream(path).x.shape[1:])) * 4
    at = (16 + size + 63) // 64 * 64 + x["offset"] + 7 * row
    raw[at : at + 4] = np.float32("nan").tobytes()
    out.write_bytes(bytes(raw))
    return out


def test_predict_refuses_to_write_over_what_it_reads_and_keeps_a_previous_output(
    trained, tmp_path, capsys
):
    """``--out`` naming the stream overwrote the memory-mapped stream while reading it: a bus
    error and an empty stream file. A failed run now leaves an earlier output as it was."""
    tmp, _, _, _, _ = trained
    stream_path = tmp_path / "inline.scl"
    schedule = ["schedule", "disjoint", "--dataset", "digits", "--inline", "--out"]
    assert cli.main([*schedule, str(stream_path)]) == 0
    before = stream_path.read_bytes()
    checkpoint = ["--checkpoint", str(tmp / "ckpt")]
    assert cli.main(["predict", str(stream_path), *checkpoint, "--out", str(stream_path)]) == 2
    assert "is the stream being predicted" in capsys.readouterr().err
    assert stream_path.read_bytes() == before
    model = tmp_path / "m.safetensors"
    assert cli.main(["export", *checkpoint, "--out", str(model)]) == 0
    for taken in (model, model.with_suffix(".json")):
        args = ["predict", str(stream_path), "--model", str(model), "--out", str(taken)]
        assert cli.main(args) == 2
        assert "name another file" in capsys.readouterr().err
    out = tmp_path / "predictions.jsonl"
    assert cli.main(["predict", str(stream_path), *checkpoint, "--out", str(out)]) == 0
    done = out.read_text()
    # an inline input with NaN: refused as replay refuses it (it was predicted as null)
    poisoned = _with_nan(stream_path, tmp_path / "nan.scl")
    assert cli.main(["predict", str(poisoned), *checkpoint, "--out", str(out)]) == 2
    assert "event 7 has NaN or inf in its input" in capsys.readouterr().err
    assert out.read_text() == done and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["inline.scl", "m.safetensors", "m.json", "predictions.jsonl", "nan.scl"]
    )


def test_predict_and_export_write_neither_into_the_checkpoint_directory_nor_over_a_device(
    trained, tmp_path, capsys
):
    """``--out`` naming the newest checkpoint replaced it with JSON lines (or the export's
    safetensors), and a FIFO or a device such as /dev/full was replaced by a regular file."""
    tmp, stream_path, _, _, _ = trained
    directory = tmp_path / "ckpt"
    shutil.copytree(tmp / "ckpt", directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    listed = sorted(p.relative_to(directory) for p in directory.rglob("*"))
    newest = directory / max(name for name in before if name.endswith(".sclckpt"))
    checkpoint = ["--checkpoint", str(directory)]
    for command in (["predict", str(stream_path)], ["export"]):
        for out in (newest, directory / "lineage", directory / "sub" / "model.safetensors"):
            assert cli.main([*command, *checkpoint, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "is inside the checkpoint directory" in err
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before
    assert sorted(p.relative_to(directory) for p in directory.rglob("*")) == listed  # no sub/
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # (a FIFO of the test's own: a device tried as root would be replaced if this regressed)
    assert cli.main(["predict", str(stream_path), *checkpoint, "--out", str(fifo)]) == 2
    assert "exists and is not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.stat().st_mode)


HIERARCHY = "synthetic-hierarchy:branching=2x3,train=20,test=5,dim=4"


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory):
    """A hierarchy checkpoint whose levels the daemon's config named kingdom and species."""
    tmp = tmp_path_factory.mktemp("hierarchy")
    stream_path = tmp / "hle.scl"
    args = ["schedule", "hle", "--dataset", HIERARCHY, "--out", str(stream_path)]
    assert cli.main(args) == 0
    dataset = load_dataset(HIERARCHY)
    problem = dataclasses.replace(dataset.problem(), level_names=("kingdom", "species"))
    loop = EventLoop(create("nmc", problem), problem)
    for batch in task_batches(read_stream(stream_path), dataset, 16):
        loop.process(batch)
    meta = {**_checkpoint_meta(loop), "problem": problem_section(problem)}
    CheckpointStore(tmp / "ckpt").write(meta, loop.learner.state_dict())
    return tmp, stream_path, loop


def test_predict_and_export_key_a_hierarchy_by_the_level_names_the_daemon_served(hierarchy):
    """The daemon publishes ``{"kingdom": 4, "species": 19}``; predict and export from its
    checkpoint wrote ``{"level0": ..., "level1": ...}`` and a sidecar without the names or the
    parent maps, so a consumer keyed on level names broke when it moved to offline output."""
    tmp, stream_path, loop = hierarchy
    model = tmp / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(tmp / "ckpt"), "--out", str(model)]) == 0
    declared = json.loads(model.with_suffix(".json").read_text())["problem"]
    assert declared["level_names"] == ["kingdom", "species"]
    assert declared["parents"] == [list(loop.problem.parents[0])]
    outs = []
    for source in (["--model", str(model)], ["--checkpoint", str(tmp / "ckpt")]):
        out = tmp / f"{source[0][2:]}.jsonl"
        assert cli.main(["predict", str(stream_path), *source, "--out", str(out)]) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert set(json.loads(outs[0].splitlines()[0])["predicted"]) == {"kingdom", "species"}


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        (None, None),  # a checkpoint from before the section: levels named level0, level1
        ({"level_names": ["a", "b", "c"]}, "level_names has 3 names for 2 levels"),
        ({"level_names": ["a", "b"], "parents": [[0, 9, 0, 0, 0, 0]]}, "names class 9"),
        ({"level_names": ["a", 5]}, "problem.level_names.1"),
    ],
)
def test_a_checkpoints_level_names_are_optional_and_checked(
    hierarchy, tmp_path, capsys, problem, message
):
    _, stream_path, loop = hierarchy
    meta = _checkpoint_meta(loop)
    if problem is not None:
        meta["problem"] = problem
    CheckpointStore(tmp_path / "ckpt").write(meta, loop.learner.state_dict())
    out = tmp_path / "p.jsonl"
    ckpt = str(tmp_path / "ckpt")
    code = cli.main(["predict", str(stream_path), "--checkpoint", ckpt, "--out", str(out)])
    if message is None:
        assert code == 0
        assert set(json.loads(out.read_text().splitlines()[0])["predicted"]) == {"level0", "level1"}
    else:
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
