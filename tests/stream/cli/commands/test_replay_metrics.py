"""stream/commands/replay.py: the metrics endpoint, its linger, and the JSON logs of a replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.cli.main import main
from stream.observe.http_endpoint import start_metrics_server
from stream.observe.telemetry import Telemetry
from tests.support.digits_stream import write_digits_stream
from tests.support.logging_state import restore_logging  # noqa: F401 - autouse fixture
from tests.support.paths import REPO
from tests.support.prometheus_server import get_json

ROOT = REPO


def _wait_for_line(path: Path, event: str, process: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == event:
                return record
        assert process.poll() is None, f"replay exited {process.returncode}: {path.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no {event} line after {timeout} s: {path.read_text()}")


def test_replay_serves_metrics_lingers_and_logs_json(tmp_path):
    task_sizes = write_digits_stream(tmp_path / "digits.scl")
    logs, out = tmp_path / "stderr.log", tmp_path / "stdout.txt"
    command = [
        sys.executable, "-m", "stream", "replay", str(tmp_path / "digits.scl"), "--learner", "nmc",
        "--eval-period", "400", "--out", str(tmp_path / "run"), "--metrics-port", "0",
        "--metrics-linger", "300",
    ]  # fmt: skip
    # stderr is a file, not a terminal: the default (auto) log format is JSON lines.
    with logs.open("w") as stderr, out.open("w") as stdout:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        url = _wait_for_line(logs, "metrics_server_started", process)["url"]
        assert url.startswith("http://127.0.0.1:")
        _wait_for_line(logs, "metrics_linger", process)
        assert get_json(f"{url}/healthz")["state"] == "finished"
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 20, "SIGTERM should end the linger"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "| learner |" in out.read_text() and "results in" in out.read_text()
    lines = [json.loads(line) for line in logs.read_text().splitlines()]
    assert all({"timestamp", "level", "logger", "event"} <= set(line) for line in lines)
    assert all(line["learner"] == "nmc" for line in lines)
    loop = [line for line in lines if line["logger"] == "streamcl.loop"]
    assert [line["samples"] for line in loop if line["event"] == "task_end"] == [
        sum(task_sizes[: t + 1]) for t in range(len(task_sizes))
    ]
    assert [line["samples"] for line in loop if line["event"] == "stream_finished"] == [
        sum(task_sizes)
    ]


@pytest.fixture(scope="module")
def digits_stream(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "digits.scl"
    write_digits_stream(path)
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metrics-linger", "5"], "--metrics-linger needs --metrics-port"),
        (["--metrics-host", "0.0.0.0"], "--metrics-host needs --metrics-port"),
        # accepted and ignored before: nothing serves /healthz without a port
        (["--health-stall", "30"], "--health-stall needs --metrics-port"),
        (
            ["--metrics-port", "0", "--metrics-linger", "-1"],
            "--metrics-linger must be 0 to 9.22337e+09 seconds, got -1",
        ),
        (["--metrics-port", "70000"], "metrics port must be in 0..65535, got 70000"),
        (
            ["--metrics-port", "0", "--health-stall", "0"],
            "--health-stall must be > 0 seconds, got 0",
        ),
        # NaN passed checks written as ``x <= 0``; infinity lingered or stalled for ever
        (
            ["--metrics-port", "0", "--metrics-linger", "nan"],
            "--metrics-linger must be 0 to 9.22337e+09 seconds, got nan",
        ),
        (
            ["--metrics-port", "0", "--health-stall", "nan"],
            "--health-stall must be > 0 seconds, got nan",
        ),
        (
            ["--metrics-port", "0", "--health-stall", "inf"],
            "--health-stall must be > 0 seconds, got inf",
        ),
        # a wait beyond threading.TIMEOUT_MAX overflowed after the run (exit 1)
        (
            ["--metrics-port", "0", "--metrics-linger", "1e10"],
            "--metrics-linger must be 0 to 9.22337e+09 seconds, got 1e+10",
        ),
        (["--max-rate", "nan"], "--max-rate must be > 0 samples/s, got nan"),
        (["--max-rate", "inf"], "--max-rate must be > 0 samples/s, got inf"),
    ],
)
def test_bad_metrics_options_are_one_line_exit_2(digits_stream, tmp_path, capsys, flags, message):
    code = main(["replay", str(digits_stream), "--learner", "nmc", "--out", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err == f"streamcl: error: {message}\n"
    assert not (tmp_path / "results.json").exists()


def test_a_taken_port_is_one_line_exit_2(digits_stream, tmp_path, capsys):
    with start_metrics_server(Telemetry(), port=0) as taken:
        code = main(["replay", str(digits_stream), "--learner", "nmc", "--out", str(tmp_path),
                     "--metrics-port", str(taken.port)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    address = f"127.0.0.1:{taken.port}"
    assert err == f"streamcl: error: cannot serve metrics on {address}: Address already in use\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learner", "nope"], "unknown learner 'nope'"),
        (["--learner", "nmc", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_with_metrics_is_still_one_line(digits_stream, tmp_path, capsys, flags, message):
    """No log line (metrics server, replay start) comes before the error."""
    code = main(
        ["replay", str(digits_stream), "--metrics-port", "0", "--out", str(tmp_path), *flags]
    )
    err = capsys.readouterr().err.splitlines()
    assert (
        code == 2 and len(err) == 1 and err[0].startswith("streamcl: error: ") and message in err[0]
    )


def test_a_diverged_learner_scores_no_hit_and_says_so_once(digits_stream, tmp_path, capsys):
    """``er`` with lr 1e30: finite weights (about 1e30) whose scores are NaN, every later step
    skipped. Evaluations took each NaN row's argmax, class 0, so every class-0 test sample
    counted as a hit (A_last .0986 where prequential accuracy, which leaves such rows out,
    read null) and nothing said why. Such samples now count as wrong, and the log says once
    that the learner gave no prediction."""
    config = tmp_path / "er.json"
    config.write_text('{"lr": 1e30}')
    run = ["replay", str(digits_stream), "--learner", "er", "--config", str(config)]
    code = main(
        [*run, "--out", str(tmp_path / "run"), "--eval-period", "500", "--log-format", "json"]
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert code == 0 and results["A_last"] == 0.0 and results["A_auc"] == 0.0
    assert results["prequential_accuracy"] is None
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    warned = [line for line in lines if line["event"] == "learner_gave_no_prediction"]
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    assert warned[0]["unanswered_test_samples"] > 0
