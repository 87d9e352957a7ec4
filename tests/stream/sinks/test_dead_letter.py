"""Dead-letter sinks: what a letter holds, and the file sink's exactly-once resume."""

from __future__ import annotations

import base64
import json

from stream.sinks.dead_letter import FileDeadLetters


def _letters(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_letter_has_origin_reason_and_the_value(tmp_path):
    sink = FileDeadLetters(tmp_path / "dead.jsonl", max_value_bytes=4)
    sink.write("samples", 2, 17, b"\x00\x01abcdef", "undecodable", "not JSON")
    sink.write("samples", 0, 3, None, "empty", "no value")
    sink.close()
    first, second = _letters(tmp_path / "dead.jsonl")
    assert (first["topic"], first["partition"], first["offset"]) == ("samples", 2, 17)
    assert (first["reason"], first["detail"], first["value_bytes"]) == (
        "undecodable",
        "not JSON",
        8,
    )
    assert base64.b64decode(first["value_base64"]) == b"\x00\x01ab"
    assert (second["reason"], second["value_bytes"], second["value_base64"]) == ("empty", 0, "")


def test_resuming_cuts_letters_written_after_the_checkpoint(tmp_path):
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetters(path, 64)
    sink.write("t", 0, 1, b"a", "empty", "")
    sink.sync()
    checkpointed = sink.position()
    sink.write("t", 0, 5, b"b", "empty", "")  # then the daemon is killed
    sink.close()
    resumed = FileDeadLetters(path, 64, resume_at=checkpointed)
    resumed.write("t", 0, 5, b"b", "empty", "")  # the same message, judged again after restart
    resumed.close()
    assert [letter["offset"] for letter in _letters(path)] == [1, 5]


def test_without_a_checkpoint_an_existing_file_is_appended_to(tmp_path):
    path = tmp_path / "dead.jsonl"
    FileDeadLetters(path, 64).write("t", 0, 1, b"a", "empty", "")
    sink = FileDeadLetters(path, 64)
    sink.write("t", 0, 2, b"b", "empty", "")
    sink.close()
    assert [letter["offset"] for letter in _letters(path)] == [1, 2]
