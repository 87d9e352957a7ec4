"""stream/cli/commands/replay.py: drift detection from the command line, every detector the docs
list (docs/river.md) with its direction and constructor arguments; and errors in the loop and
learner options named as the user gave them (the flag, the config file)."""

from __future__ import annotations

import json

import pytest

from stream.cli.main import main
from tests.support.digits_stream import write_digits_stream


@pytest.fixture(scope="module")
def digits_stream(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "digits.scl"
    write_digits_stream(path)
    return path


def _replay(stream, out, *flags: str) -> int:
    return main(["replay", str(stream), "--learner", "nmc", "--out", str(out), *flags])


@pytest.mark.parametrize(
    "flags",
    [
        # PageHinkley and KSWIN were refused: they need a mode or a direction the command line
        # could not give
        ["--drift", "PageHinkley", "--drift-param", "mode=up", "--drift-param", "threshold=5"],
        ["--drift", "KSWIN", "--drift-direction", "any", "--drift-param", "seed=3"],
        ["--drift", "binary.DDM"],
    ],
)
def test_a_detector_runs_with_its_parameters(digits_stream, tmp_path, flags):
    assert _replay(digits_stream, tmp_path, *flags) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["drift_events"] == len(results["drift_positions"]) >= 0


def test_the_parameters_reach_the_detector(digits_stream, tmp_path):
    """A threshold of 1 sees drift in nearly every error; the default of 50 in few."""
    events = {}
    for threshold in ("1", "50"):
        flags = ["--drift", "PageHinkley", "--drift-param", "mode=up"]
        assert _replay(digits_stream, tmp_path / threshold, *flags, "--drift-param",
                       f"threshold={threshold}") == 0  # fmt: skip
        results = json.loads((tmp_path / threshold / "results.json").read_text())
        events[threshold] = results["drift_events"]
    assert events["1"] > events["50"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drift-direction", "any"], "--drift-direction needs --drift DETECTOR"),
        (["--drift-param", "mode=up"], "--drift-param needs --drift DETECTOR"),
        (["--drift", "ADWIN", "--drift-param", "=2"], "--drift-param: expected NAME=VALUE"),
        (["--drift", "ADWIN", "--drift-param", "delta"], "--drift-param: expected NAME=VALUE"),
        (
            ["--drift", "ADWIN", "--drift-param", "delta=0.1", "--drift-param", "delta=0.2"],
            "--drift-param: delta given twice",
        ),
        (
            ["--drift", "ADWIN", "--drift-param", "bogus=1"],
            "unexpected keyword argument 'bogus'",
        ),
        # NaN passes river's range checks (alpha < 0 or alpha > 1 is false for it)
        (
            ["--drift", "KSWIN", "--drift-direction", "any", "--drift-param", "alpha=NaN"],
            "params: Value error, alpha: nan holds NaN or inf",
        ),
        # river's OverflowError, exit 1 as a failure
        (["--drift", "ADWIN", "--drift-param", "clock=" + "1" * 30], "params: river.drift ADWIN"),
        (
            ["--drift", "PageHinkley"],
            "invalid --drift options (--drift-direction, --drift-param NAME=VALUE): "
            "(root): Value error, detector: PageHinkley detects changes both ways",
        ),
    ],
)
def test_bad_drift_flags_are_one_line_exit_2(digits_stream, tmp_path, capsys, flags, message):
    assert _replay(digits_stream, tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # named the LoopConfig field (online_iter) rather than the flag a user typed
        (["--online-iter", "-1"], "invalid options: --online-iter: Input should be greater"),
        (["--batch-size", "0"], "invalid options: --batch-size: Input should be greater than 0"),
        (["--prequential-window", "0"], "invalid options: --prequential-window: Value error"),
    ],
)
def test_a_bad_loop_flag_is_named_as_typed(digits_stream, tmp_path, capsys, flags, message):
    assert _replay(digits_stream, tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_bad_learner_config_names_its_file(digits_stream, tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text('{"lr": -1}')
    code = main(["replay", str(digits_stream), "--learner", "er", "--config", str(config),
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{config}: invalid learner 'er' config: lr: Input should be greater than 0" in err
