"""The recorded stream that CLI tests replay: digits under Si-Blurry (T=5, N=50, M=10), seed 1
(another seed where a test asks for one)."""

from __future__ import annotations

from pathlib import Path

from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream


def write_digits_stream(path: Path, seed: int = 1) -> list[int]:
    """Write the stream to ``path``; returns the size of each task."""
    dataset = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", dataset, {}, seed)
    write_stream(
        path, record_schedule(dataset, schedule, "si-blurry", params.model_dump(mode="json"), seed)
    )
    return [int((schedule.task == t).sum()) for t in range(schedule.num_tasks)]
