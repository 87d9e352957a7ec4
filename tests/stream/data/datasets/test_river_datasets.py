"""river's datasets as streamcl datasets (stream/datasets/river_datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from river import datasets
from river.datasets import synth

from stream.data.datasets import DatasetError, load_dataset


def river_table(source, n=None):
    rows, labels = [], []
    for i, (x, y) in enumerate(source):
        if n is not None and i >= n:
            break
        rows.append(list(x.values()))
        labels.append(y)
    return np.asarray(rows, dtype=np.float32), labels


def test_bundled_dataset_in_order_with_every_fifth_sample_held_out():
    ds = load_dataset("river:ImageSegments")
    X, labels = river_table(datasets.ImageSegments())
    names = sorted(set(labels))
    y = np.asarray([names.index(label) for label in labels])
    assert ds.class_names == names
    assert np.array_equal(ds.X_train, np.delete(X, np.s_[4::5], axis=0))
    assert np.array_equal(ds.X_test, X[4::5])
    assert np.array_equal(ds.y_train, np.delete(y, np.s_[4::5]))
    assert np.array_equal(ds.y_test, y[4::5])
    assert ds.X_train.dtype == np.float32


def test_no_test_split_keeps_the_whole_stream_for_training():
    ds = load_dataset("river:Phishing?test_every=0")
    X, labels = river_table(datasets.Phishing())
    assert np.array_equal(ds.X_train, X) and len(ds.X_test) == 0
    assert ds.y_train.tolist() == [int(label) for label in labels]
    assert ds.class_names == ["False", "True"]


def test_generator_is_seeded_by_the_spec():
    spec = "river:RandomRBF?n=300&n_classes=4&n_features=5&seed=3&test_every=0"
    ds = load_dataset(spec)
    X, labels = river_table(
        synth.RandomRBF(seed_model=3, seed_sample=3, n_classes=4, n_features=5), 300
    )
    assert np.array_equal(ds.X_train, X) and ds.y_train.tolist() == labels
    assert np.array_equal(load_dataset(spec).X_train, ds.X_train)
    other = load_dataset(spec.replace("seed=3", "seed=4"))
    assert not np.array_equal(other.X_train, ds.X_train)


def test_drift_options_build_river_concept_drift_stream():
    ds = load_dataset(
        "river:SEA?n=400&seed=2&variant=0&drift_position=200&drift_width=50&drift.variant=3&test_every=0"
    )
    reference = synth.ConceptDriftStream(
        synth.SEA(variant=0, seed=2), synth.SEA(variant=3, seed=2), position=200, width=50, seed=2
    )
    X, labels = river_table(reference, 400)
    assert np.array_equal(ds.X_train, X)
    assert ds.y_train.tolist() == [int(label) for label in labels]


def test_integer_coded_categorical_features_stay_numeric():
    ds = load_dataset("river:STAGGER?n=50&seed=1")
    assert ds.input_shape == (3,)
    assert set(np.unique(ds.X_train).tolist()) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("river", "needs a dataset name"),
        ("river:Elec2", "unknown river dataset 'Elec2'"),
        ("river:Phishing?seed=1", "takes only n and test_every"),
        ("river:Agrawal?colour=1", "has no parameter colour"),
        ("river:Agrawal?n=0", r"n must be an integer in \[1, 1000000\]"),
        ("river:SEA?n=10&n=20", "given twice"),
        ("river:SEA?n", "KEY=VALUE"),
        ("river:SEA?drift.variant=2", "need drift_position"),
        ("river:SEA?drift_position=10000&drift_width=5", "drift_width must be at least 58"),
        ("river:SEA?variant=9", "SEA"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_string_features_are_refused_with_the_feature_named(monkeypatch):
    from stream.data.datasets import river_datasets

    class Words:
        def __iter__(self):
            yield {"colour": "red", "size": 1.0}, 0

    monkeypatch.setattr(river_datasets, "_source", lambda spec, name, options: (Words(), None))
    with pytest.raises(DatasetError, match="feature 'colour' of sample 0 is 'red'"):
        load_dataset("river:Phishing")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # each used to generate for ever, or build GBs of Python floats, before any check
        ("river:Agrawal?n=1000000000", r"n must be an integer in \[1, 1000000\], got 1000000000"),
        ("river:Agrawal?n=1&test_every=10000000", r"test_every must be an integer in \[0, "),
        ("river:SEA?n=5&drift_position=10000000", r"drift_position must be an integer in \[1, "),
        ("river:RandomRBF?n=1&n_features=200000000", "parameter n_features must be an integer in"),
        ("river:RandomRBF?n=1&n_features=2.5", "parameter n_features must be an integer in"),
        ("river:RandomRBF?n=1&n_features=100000", r"n_centroids x n_features is 5000000, more"),
        ("river:RandomTree?n=1&max_tree_depth=30", r"node count .* more than 1000000"),
        ("river:Hyperplane?n=1000000&n_features=1000", "more than the 268435456 a generated"),
        ("river:Agrawal?seed=-1", r"seed must be an integer in \[0, 4294967295\], got -1"),
        ("river:Agrawal?seed=null", r"seed must be an integer in \[0, 4294967295\], got None"),
        ("river:RandomRBF?seed_model=4294967296", r"seed_model must be an integer in \[0, 42"),
        ("river:Agrawal?n=" + "9" * 5000, "is 5016 characters, at most 1024"),
        ("river:Agrawal?n=" + "9" * 30, r"n must be an integer in \[1, 1000000\]"),
    ],
)
def test_generator_options_beyond_their_bounds_are_refused_before_generating(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_the_spec_bounds_hold_without_generating():
    """What a recorded stream's header is held to when it is read: no river, no samples."""
    from stream.data.datasets import check_spec

    check_spec("river:Agrawal?n=20000&seed=1&drift_position=10000&drift_width=500")
    with pytest.raises(DatasetError, match="n must be an integer"):
        check_spec("river:Agrawal?n=1000000000")
    with pytest.raises(DatasetError, match="seed must be an integer"):
        check_spec("river:Agrawal?seed=-1")


def test_a_generator_failing_mid_stream_is_one_error_naming_the_spec():
    """river accepts n_classes=0, then fails on the first sample (it was a traceback)."""
    with pytest.raises(DatasetError, match="the generator failed: ValueError: empty range"):
        load_dataset("river:RandomRBF?n=5&n_classes=0")


def test_a_table_is_packed_across_chunks_in_order():
    ds = load_dataset("river:SEA?n=9000&seed=2&test_every=0")
    X, _ = river_table(synth.SEA(seed=2), 9000)
    np.testing.assert_array_equal(ds.X_train, X)
