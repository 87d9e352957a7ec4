import time

import numpy as np
import pytest
import torch

from stream.engine.batch import Batch
from stream.observe.pacing import Pacer


def test_paces_to_the_rate_and_not_below():
    pacer = Pacer(max_rate=2000)
    batch = Batch(
        x=torch.zeros(50, 1),
        y=torch.zeros(50, dtype=torch.long),
        level=torch.zeros(50, dtype=torch.long),
    )
    started = time.monotonic()
    for _ in range(10):
        pacer.on_batch(None, batch, np.zeros(50, bool), 0.0)
    elapsed = time.monotonic() - started
    # 500 samples at 2000/s: the first batch starts the clock, so at least 450/2000 s
    assert 0.2 <= elapsed < 1.0


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        Pacer(0)
