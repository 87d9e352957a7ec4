"""A JSON or TOML integer of more digits than Python converts (4300 by default) makes the
parser raise a plain ValueError, not its decode error: every file this room parses says so as
one error naming the file (and line or byte), exit 2, not "failed: ValueError", exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli import main as cli
from stream.cli.config_file import ConfigFileError, load_config_file
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import MAGIC, StreamFileError, read_stream, record_schedule

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("name", "text"), [("c.json", f'{{"seed": {HUGE}}}'), ("c.toml", f"seed = {HUGE}\n")]
)
def test_a_config_file_with_a_huge_integer_is_one_clear_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=f"{path}: a number of more than 4300 digits"):
        load_config_file(path)


@pytest.fixture(scope="module")
def header_text() -> str:
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {"tasks": 2}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1)
    return json.dumps(stream.header.model_dump()).replace('"seed": 1', f'"seed": {HUGE}')


def test_a_binary_stream_header_with_a_huge_integer_is_refused_at_its_byte(
    tmp_path, header_text, capsys
):
    path = tmp_path / "huge.scl"
    data = header_text.encode()
    path.write_bytes(MAGIC + len(data).to_bytes(8, "little") + data)
    with pytest.raises(StreamFileError, match="byte 16: corrupt stream header"):
        read_stream(path)
    assert cli.main(["replay", str(path), "--learner", "nmc"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"{path}: byte 16: corrupt stream header (a number of more than 4300 digits)" in line


def test_a_jsonl_stream_header_with_a_huge_integer_is_refused_at_its_line(tmp_path, header_text):
    path = Path(tmp_path / "huge.jsonl")
    path.write_text(f'{{"streamcl_stream": {header_text}}}\n')
    with pytest.raises(StreamFileError) as refused:
        read_stream(path)
    assert str(refused.value) == (
        f"{path}:1: corrupt stream header (a number of more than 4300 digits)"
    )
