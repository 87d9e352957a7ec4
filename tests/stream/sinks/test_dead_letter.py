"""Dead-letter sinks: what a letter holds, and the file sink's exactly-once resume."""

from __future__ import annotations

import base64
import json

import pytest

from stream.sinks.dead_letter import DeadLetterFileInUse, FileDeadLetters


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
    first = FileDeadLetters(path, 64)
    first.write("t", 0, 1, b"a", "empty", "")
    first.close()
    sink = FileDeadLetters(path, 64)
    sink.write("t", 0, 2, b"b", "empty", "")
    sink.close()
    assert [letter["offset"] for letter in _letters(path)] == [1, 2]


def _kept(path) -> list[int]:
    """The offsets of every letter kept, oldest first: rotated files by number, then the file."""
    rotated = sorted((int(p.name.rsplit(".", 1)[1]), p) for p in path.parent.glob(path.name + ".*"))
    files = [p for _, p in rotated] + ([path] if path.exists() else [])
    return [letter["offset"] for p in files for letter in _letters(p)]


def test_the_file_rotates_at_its_size_and_keeps_the_newest_files(tmp_path):
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetters(path, 64, file_bytes=_three_letters(tmp_path), files=2)
    for offset in range(20):
        sink.write("t", 0, offset, b"a", "empty", "")
    sink.sync()
    assert sink.position() == {"rotations": 6, "bytes": path.stat().st_size}
    sink.close()
    assert len(_letters(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dead")) == [
        "dead.jsonl", "dead.jsonl.5", "dead.jsonl.6",
    ]  # fmt: skip
    assert _kept(path) == list(range(12, 20))  # the two newest rotated files and the current


def test_a_restart_undoes_the_rotations_after_the_checkpoint(tmp_path):
    """Killed after two rotations past its checkpoint: the restarted sink holds exactly what an
    uninterrupted one does once the same messages are judged again."""
    path = tmp_path / "dead.jsonl"
    size = _three_letters(tmp_path)
    sink = FileDeadLetters(path, 64, file_bytes=size, files=8)
    for offset in range(4):
        sink.write("t", 0, offset, b"a", "empty", "")
    checkpointed = sink.position()
    assert checkpointed == {"rotations": 1, "bytes": path.stat().st_size}
    for offset in range(4, 11):  # two more rotations, then the daemon is killed
        sink.write("t", 0, offset, b"a", "empty", "")
    sink.close()
    resumed = FileDeadLetters(path, 64, resume_at=checkpointed, file_bytes=size, files=8)
    assert resumed.position() == checkpointed
    for offset in range(4, 13):
        resumed.write("t", 0, offset, b"a", "empty", "")
    resumed.close()
    assert _kept(path) == list(range(13))
    alone = tmp_path / "alone" / "dead.jsonl"
    uninterrupted = FileDeadLetters(alone, 64, file_bytes=size, files=8)
    for offset in range(13):
        uninterrupted.write("t", 0, offset, b"a", "empty", "")
    uninterrupted.close()
    names = sorted(p.name for p in alone.parent.iterdir() if p.name.startswith("dead"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dead")) == names


def test_a_length_from_a_checkpoint_before_rotation_still_resumes(tmp_path):
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetters(path, 64)
    sink.write("t", 0, 1, b"a", "empty", "")
    length = sink.position()["bytes"]
    sink.write("t", 0, 2, b"b", "empty", "")
    sink.close()
    FileDeadLetters(path, 64, resume_at=length).close()
    assert [letter["offset"] for letter in _letters(path)] == [1]


@pytest.mark.parametrize(
    "position", ["12", {"rotations": -1, "bytes": 0}, {"bytes": 3}, {"rotations": 0, "bytes": 1.5}]
)
def test_a_position_no_checkpoint_writes_is_refused(tmp_path, position):
    with pytest.raises(ValueError, match="dead-letter position"):
        FileDeadLetters(tmp_path / "dead.jsonl", 64, resume_at=position)


def _three_letters(tmp_path) -> int:
    """A file size that three letters as the tests above write reach and two do not (their
    lengths differ by a few bytes: the offset's digits, the timestamp's)."""
    probe = tmp_path / "probe" / "dead.jsonl"
    sink = FileDeadLetters(probe, 64)
    sink.write("t", 0, 10, b"a", "empty", "")
    sink.close()
    return int(2.5 * probe.stat().st_size)


def test_a_file_another_sink_holds_is_refused_and_kept_whole(tmp_path):
    """Two daemons started in one folder with the same relative file shared it; a restart of one
    cut the file back to its own checkpoint, and the other's letters were gone."""
    path = tmp_path / "dead.jsonl"
    holder = FileDeadLetters(path, 64)
    holder.write("t", 0, 1, b"a", "empty", "")
    holder.sync()
    with pytest.raises(DeadLetterFileInUse, match=f"dead_letter.file {path} is in use"):
        FileDeadLetters(path, 64, resume_at={"rotations": 0, "bytes": 0})
    holder.write("t", 0, 2, b"b", "empty", "")
    holder.close()
    assert [letter["offset"] for letter in _letters(path)] == [1, 2]
    FileDeadLetters(path, 64).close()  # free again once closed


def test_a_spill_file_may_be_shared(tmp_path):
    """The ranks of a scaled-out daemon append to one spill file, which is never cut back."""
    path = tmp_path / "spill.jsonl"
    ranks = [FileDeadLetters(path, 64, exclusive=False) for _ in range(2)]
    for offset, sink in enumerate(ranks):
        sink.write("t", offset, offset, b"a", "too_large", "")
        sink.sync()
        sink.close()
    assert sorted(letter["offset"] for letter in _letters(path)) == [0, 1]


def test_a_sink_that_fails_to_open_lets_go_of_the_lock(tmp_path):
    """It kept the lock, so the next open in this process was refused as another daemon's."""
    path = tmp_path / "dead.jsonl"
    with pytest.raises(ValueError, match="not one a checkpoint writes"):
        FileDeadLetters(path, 64, resume_at={"rotations": -1, "bytes": 0})
    FileDeadLetters(path, 64).close()
