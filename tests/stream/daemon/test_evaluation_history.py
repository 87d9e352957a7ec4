"""stream/daemon/evaluation_history.py: append-only, rotated, cut back to a checkpoint's place."""

from __future__ import annotations

import os

import numpy as np
import pytest

import stream.daemon.evaluation_history as history_module
from stream.daemon.evaluation_history import EvaluationHistory, read_history
from stream.data.regular_file import NotRegularFile
from stream.engine.evaluation import Evaluation


def _evaluation(samples: int) -> Evaluation:
    return Evaluation(samples, 0.5, [0.5], [np.full(10, 0.5)])


def test_files_rotate_and_only_the_newest_are_kept(tmp_path):
    history = EvaluationHistory(tmp_path, file_bytes=1000, files=3)
    for samples in range(1, 101):
        history.on_evaluation(None, _evaluation(samples), "periodic")
    history.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[-1] > names[0]
    kept = [line["samples_seen"] for line in read_history(tmp_path)]
    assert kept == list(range(kept[0], 101)) and kept[0] > 1
    assert all(p.stat().st_size < 1000 + 400 for p in tmp_path.iterdir())


def test_files_past_number_999999_are_still_rotated_out(tmp_path):
    """Files are numbered with six digits at least; the seventh made them strangers that
    were never pruned nor read."""
    history = EvaluationHistory(
        tmp_path, file_bytes=1, files=2, resume_at={"file": 999990, "bytes": 0}
    )
    for samples in range(1, 31):
        history.on_evaluation(None, _evaluation(samples), "periodic")
    history.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) <= 3 and "evaluations-1000020.jsonl" in names
    assert [line["samples_seen"] for line in read_history(tmp_path)][-1] == 30


def test_resuming_cuts_back_what_no_checkpoint_covers(tmp_path):
    history = EvaluationHistory(tmp_path, file_bytes=600, files=10)
    for samples in range(1, 6):
        history.on_evaluation(None, _evaluation(samples), "periodic")
    history.sync()
    checkpointed = history.position()
    for samples in range(6, 20):  # evaluations after the checkpoint, across a rotation
        history.on_evaluation(None, _evaluation(samples), "task_end")
    history.close()  # a crash
    resumed = EvaluationHistory(tmp_path, file_bytes=600, files=10, resume_at=checkpointed)
    resumed.on_evaluation(None, _evaluation(6), "periodic")
    resumed.close()
    assert [line["samples_seen"] for line in read_history(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_a_reader_beside_the_daemon_skips_a_line_being_written_and_a_pruned_file(
    tmp_path, monkeypatch
):
    history = EvaluationHistory(tmp_path, file_bytes=10_000, files=3)
    for samples in range(1, 4):
        history.on_evaluation(None, _evaluation(samples), "periodic")
    history.close()
    newest = sorted(tmp_path.iterdir())[-1]
    with newest.open("ab") as out:
        out.write(b'{"kind":"periodic","samples_se')  # the daemon's write, half done
    listed = history_module._files

    def listing_with_a_file_pruned_since(directory):
        return [(0, tmp_path / "evaluations-000000.jsonl"), *listed(directory)]

    monkeypatch.setattr(history_module, "_files", listing_with_a_file_pruned_since)
    assert [line["samples_seen"] for line in read_history(tmp_path)] == [1, 2, 3]


@pytest.mark.timeout(20)  # the old code waited for the FIFO's writer
def test_a_history_file_that_is_a_fifo_is_one_error_naming_it_not_a_wait(tmp_path):
    os.mkfifo(tmp_path / "evaluations-000001.jsonl")
    with pytest.raises(NotRegularFile, match=r"evaluations-000001\.jsonl"):
        list(read_history(tmp_path))
