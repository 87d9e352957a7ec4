import numpy as np

from stream.data.datasets import load_dataset


def test_digits_split_is_stratified_and_deterministic():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.num_classes == 10 and a.input_shape == (1, 8, 8)
    assert np.array_equal(a.y_train, b.y_train) and np.array_equal(a.X_test, b.X_test)
    assert len(a.y_train) + len(a.y_test) == 1797
    test_share = np.bincount(a.y_test) / (np.bincount(a.y_test) + np.bincount(a.y_train))
    assert np.all(np.abs(test_share - 0.2) < 0.01)
    assert a.X_train.min() >= 0 and a.X_train.max() <= 1
    assert a.class_names == [str(d) for d in range(10)]
    assert a.problem().num_classes == (10,)
