"""The numbers of a daemon checkpoint's JSON section (stream/daemon/checkpoint_meta.py)."""

from __future__ import annotations

import pytest

from stream.daemon.checkpoint_meta import (
    MAX_REASONS,
    restored_counters,
    restored_history_position,
    restored_offsets,
)


def test_what_a_daemon_writes_reads_back():
    assert restored_offsets({"0": 12, "3": 0}) == {0: 12, 3: 0}
    messages, invalid = restored_counters(
        {"messages": 40, "invalid": {"truncated": 2, "learner_error": 1}}
    )
    assert messages == 40 and invalid == {"truncated": 2, "learner_error": 1}
    assert restored_history_position({"file": 3, "bytes": 0}) == {"file": 3, "bytes": 0}


@pytest.mark.parametrize(
    "offsets",
    [{"0": -3}, {"0": "5"}, {"-1": 4}, {"x": 1}, {"0": 1.5}, {"0": True}, [], None],
)
def test_offsets_no_daemon_writes_are_refused(offsets):
    with pytest.raises(ValueError, match="checkpoint offsets"):
        restored_offsets(offsets)


@pytest.mark.parametrize(
    "counters",
    [
        {"messages": -1, "invalid": {}},
        {"messages": 3, "invalid": {"truncated": -2}},
        {"messages": 3, "invalid": {"Truncated!": 1}},
        {"messages": 3, "invalid": {"x" * 200: 1}},
        {"messages": 3, "invalid": {f"r{i}": 1 for i in range(MAX_REASONS + 1)}},
        {"messages": 3},
        {"invalid": {}},
    ],
)
def test_counters_no_daemon_writes_are_refused(counters):
    """Each reason becomes a Prometheus label: a forged table of many keys is refused."""
    with pytest.raises(ValueError, match="checkpoint counters"):
        restored_counters(counters)


@pytest.mark.parametrize(
    "position",
    [{"file": 0, "bytes": 0}, {"file": -2, "bytes": 0}, {"file": 1, "bytes": -1}, {"file": 1}],
)
def test_history_positions_no_daemon_writes_are_refused(position):
    """History file 0 would unlink every history file (all are "after" it) on resume."""
    with pytest.raises(ValueError, match="history position"):
        restored_history_position(position)
