import numpy as np
import pytest


def label_matrix(counts):
    """Labels with ``counts[c]`` samples of class c, shuffled, as a one-level [n, 1] matrix."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(123).permutation(labels)[:, None]


@pytest.fixture
def balanced_levels():
    return label_matrix([50] * 10)
