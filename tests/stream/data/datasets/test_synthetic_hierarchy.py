import numpy as np
import pytest

from stream.data.datasets import DatasetError, load_dataset


def test_same_spec_same_arrays_other_seed_other_arrays():
    a = load_dataset("synthetic-hierarchy:branching=3x2,train=5,test=3,seed=4")
    b = load_dataset("synthetic-hierarchy:branching=3x2,train=5,test=3,seed=4")
    c = load_dataset("synthetic-hierarchy:branching=3x2,train=5,test=3,seed=5")
    for name in ("X_train", "y_train", "X_test", "y_test", "y_train_levels", "y_test_levels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_train, c.X_train)


def test_any_depth_forms_a_tree_with_the_asked_branching():
    ds = load_dataset("synthetic-hierarchy:branching=2x3x2,train=4,test=2,dim=6")
    assert ds.num_levels == 3 and ds.level_names == ["level0", "level1", "level2"]
    assert ds.num_classes_per_level == [2, 6, 12]
    assert ds.parents == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]
    assert ds.input_shape == (6,) and ds.X_train.dtype == np.float32
    assert len(ds.y_train) == 12 * 4 and len(ds.y_test) == 12 * 2
    assert np.bincount(ds.y_train).tolist() == [4] * 12


def test_siblings_are_closer_than_cousins():
    ds = load_dataset("synthetic-hierarchy:branching=4x4,train=200,test=1,dim=16,noise=0.5")
    means = np.stack([ds.X_train[ds.y_train == c].mean(0) for c in range(16)])
    distance = np.linalg.norm(means[:, None] - means[None], axis=2)
    parent = np.array(ds.parents[0])
    same = parent[:, None] == parent[None]
    off_diagonal = ~np.eye(16, dtype=bool)
    assert distance[same & off_diagonal].mean() < 0.7 * distance[~same].mean()


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("branching=3y2", "branching"),
        ("branching=3x0", "at least one child"),
        ("colour=red", "colour"),
        ("dim=-1", "dim"),
        ("train", "KEY=VALUE"),
    ],
)
def test_bad_options_name_the_option(argument, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"synthetic-hierarchy:{argument}")


@pytest.mark.parametrize("argument", ["branching=100000x100000", "dim=1000000000"])
def test_options_too_large_for_the_machine_are_refused_before_generating(argument):
    """Both used to end in 'failed: MemoryError' (74 and 37 GiB)."""
    with pytest.raises(DatasetError, match="more than this machine's"):
        load_dataset(f"synthetic-hierarchy:{argument}")


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("seed=-1", "seed: Input should be greater than or equal to 0"),  # was a ValueError
        ("seed=4294967296", "seed: Input should be less than or equal to 4294967295"),
        ("noise=inf", "noise: Input should be a finite number"),
        ("branching=" + "x".join(["1"] * 300), "branching: List should have at most 64 items"),
        ("branching=5000x5000,train=1,test=1,dim=1", "25000000 leaf classes, more than the"),
        ("dim=" + "9" * 5000, "characters, at most 1024"),
    ],
)
def test_options_beyond_their_bounds_name_the_option(argument, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"synthetic-hierarchy:{argument}")


def test_options_beyond_the_fixed_bound_are_refused_on_any_machine(monkeypatch):
    """100x100 leaves x 11 samples x 2000 features: 5.3 GB to generate, under a big
    machine's memory but over the 4 GiB a dataset may take; checkable from the spec alone."""
    import stream.data.datasets.dataset as dataset
    from stream.data.datasets import check_spec

    monkeypatch.setattr(dataset, "memory_bytes", lambda device: 1 << 40)
    argument = "branching=100x100,dim=2000,train=10,test=1"
    for check in (load_dataset, check_spec):
        with pytest.raises(DatasetError, match="5280000000 bytes, more than the 4294967296"):
            check(f"synthetic-hierarchy:{argument}")
