"""scikit-learn's bundled 8x8 digits (10 classes, 1797 images, no download): the default dataset.

The bundle has no train/test split; every fifth image of each class (in file order) is held out
for testing, which is deterministic and stratified (1442 train, 355 test).
"""

from __future__ import annotations

import numpy as np

from stream.data.datasets.dataset import Dataset

TEST_EVERY = 5


def load(spec: str, argument: str | None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # [n, 1, 8, 8] in [0, 1]
    labels = bunch.target.astype(np.int64)
    test = np.zeros(len(labels), dtype=bool)
    for klass in np.unique(labels):
        members = np.flatnonzero(labels == klass)
        test[members[TEST_EVERY - 1 :: TEST_EVERY]] = True
    return Dataset(
        spec=spec,
        X_train=images[~test],
        y_train=labels[~test],
        X_test=images[test],
        y_test=labels[test],
        class_names=[str(d) for d in range(10)],
    )
