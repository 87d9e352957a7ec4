"""``streamcl export`` and ``streamcl predict`` on a daemon checkpoint (stream/runs/served_model.py).

The checkpoint is written as the daemon writes one (identity, loop state, learner state), from
an event loop that learned the first part of a digits stream; the rest is then predicted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from learners.registry import create
from stream.cli import main as cli
from stream.daemon.checkpoint import CheckpointStore
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.stream_file import read_stream
from stream.engine.event_loop import EventLoop
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
        (None, {"samples_learned": -3}, "samples_seen -3 is not an integer"),
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
    model.write_bytes(state_to_bytes(LearnerState(state.tensors, state.meta)))
    side = model.with_suffix(".json")
    if sidecar == "deep":
        side.write_text("[" * 100_000 + "]" * 100_000)
    else:
        side.write_text(json.dumps({**json.loads(side.read_text()), **sidecar}))
    capsys.readouterr()
    assert cli.main(["predict", str(stream_path), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(model) in err and message in err
