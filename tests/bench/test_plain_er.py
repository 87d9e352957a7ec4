"""The plain PyTorch ER loop that ``bench/loop.py`` holds ``er`` against: it must do the work it
claims (a full reservoir, every sample predicted, the evaluation of seen classes)."""

import torch

from bench._plain_er import plain_er
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule
from stream.sources.file_source import task_batches


def test_plain_er_learns_a_digits_stream_as_er_does():
    torch.set_num_threads(1)
    ds = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", ds, {}, seed=1)
    stream = record_schedule(ds, schedule, "si-blurry", params.model_dump(), 1)
    batches = [(b.x, b.y, int(b.task[0])) for b in task_batches(stream, ds, 16)]
    result = plain_er(
        batches,
        as_float_tensor(ds.X_test),
        torch.from_numpy(ds.y_test),
        ds.num_classes,
        memory_size=200,
        eval_period=300,
    )
    assert result.samples == len(stream)
    assert result.train_cpu > 0 and result.train_seconds < result.seconds
    # er with the same memory reaches 0.42 here (tests/learners/test_replay_training.py); a loop
    # without replay ends near the last task's share of the classes
    assert result.A_last > 0.3
    assert 0.2 < result.prequential_accuracy < 1
