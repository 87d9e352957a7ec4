"""Fixtures for the learner tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.support.learner_streams import Digits


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run torch on one thread: streams of tiny batches are dominated by thread hand-offs, which
    on a shared machine cost far more than the arithmetic (docs/performance-notes.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> Digits:
    return Digits()
