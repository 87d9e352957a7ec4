import pickle

import numpy as np
import pytest

from stream.data.datasets import DatasetError, load_dataset


def write_cifar100(directory, n_train=120, n_test=20):
    """Small files in the CIFAR-100 "python version" layout (bytes keys, as the real ones),
    every fine class in the training split (as in the real files)."""
    rng = np.random.default_rng(0)
    fine_to_coarse = np.arange(100) // 5  # 20 coarse classes of 5 fine classes each
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        fine[:2] = [0, 99]
        if name == "train":
            fine[:100] = np.arange(100)
        content = {
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
            b"fine_labels": fine.tolist(),
            b"coarse_labels": fine_to_coarse[fine].tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(directory / name, "wb") as out:
            pickle.dump(content, out, protocol=2)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    with open(directory / "meta", "wb") as out:
        pickle.dump(meta, out, protocol=2)
    return fine_to_coarse


def test_reads_cifar100_with_two_levels(tmp_path):
    fine_to_coarse = write_cifar100(tmp_path)
    ds = load_dataset(f"cifar100:{tmp_path}")
    assert ds.input_shape == (3, 32, 32)
    assert ds.num_levels == 2 and ds.level_names == ["coarse", "fine"]
    assert ds.num_classes_per_level == [20, 100]
    assert ds.class_names[99] == "fine99"
    assert np.array_equal(ds.y_train_levels[:, 1], ds.y_train)
    assert np.array_equal(ds.y_train_levels[:, 0], fine_to_coarse[ds.y_train])
    seen = np.unique(np.concatenate([ds.y_train, ds.y_test]))
    assert all(ds.parents[0][c] == fine_to_coarse[c] for c in seen)


def test_refuses_pickles_that_would_run_code(tmp_path):
    write_cifar100(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "train", "wb") as out:
        pickle.dump({b"data": Evil()}, out)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset(f"cifar100:{tmp_path}")


def test_needs_a_directory_and_all_files(tmp_path):
    with pytest.raises(DatasetError, match="needs a directory"):
        load_dataset("cifar100")
    write_cifar100(tmp_path)
    (tmp_path / "meta").unlink()
    with pytest.raises(DatasetError, match="meta"):
        load_dataset(f"cifar100:{tmp_path}")


def test_wrong_image_size_is_refused(tmp_path):
    write_cifar100(tmp_path)
    with open(tmp_path / "test", "wb") as out:
        pickle.dump(
            {
                b"data": np.zeros((2, 100), np.uint8),
                b"fine_labels": [0, 1],
                b"coarse_labels": [0, 0],
            },
            out,
        )
    with pytest.raises(DatasetError, match="3072"):
        load_dataset(f"cifar100:{tmp_path}")


def _rewrite(directory, name, **changes):
    with open(directory / name, "rb") as handle:
        content = pickle.load(handle)
    content.update({key.encode(): value for key, value in changes.items()})
    with open(directory / name, "wb") as out:
        pickle.dump(content, out, protocol=2)


def _nested(depth):
    """A list that numpy would expand into 2**depth labels, from a pickle of a few hundred bytes."""
    value = [1, 2]
    for _ in range(depth):
        value = [value, value]
    return value


# Each was an exit 1 with a traceback-born message (OverflowError, TypeError, numpy's own), or
# (float labels) silently truncated.
MALFORMED = [
    ("train", {"fine_labels": [2**70] * 120}, r"fine_labels\[0\] is 1180591620717411303424"),
    ("train", {"fine_labels": ["3"] * 120}, r"fine_labels\[0\] is '3'; labels are integers"),
    ("train", {"fine_labels": [3.5] * 120}, r"fine_labels\[0\] is 3.5"),
    ("train", {"fine_labels": [True] * 120}, r"fine_labels\[0\] is True"),
    ("train", {"coarse_labels": [[3]] * 120}, r"coarse_labels\[0\] is \[3\]"),
    ("train", {"coarse_labels": np.zeros((120, 1), np.int64)}, "got an array of int64"),
    ("train", {"fine_labels": np.full(120, -1)}, "holds a label outside"),
    ("train", {"fine_labels": {"a": 1}}, "must be a flat list of integers, got dict"),
    ("train", {"data": [[300] * 3072] * 120}, "must be a \\[n, 3072\\] uint8 array, got list"),
    ("train", {"data": np.zeros((120, 3072), np.float32)}, "uint8 array, got float32"),
    ("meta", {"fine_label_names": 5}, "fine_label_names must be a list of names"),
]


@pytest.mark.parametrize(("name", "changes", "message"), MALFORMED)
def test_malformed_contents_are_one_clear_error(tmp_path, name, changes, message):
    write_cifar100(tmp_path)
    _rewrite(tmp_path, name, **changes)
    with pytest.raises(DatasetError, match=message) as refused:
        load_dataset(f"cifar100:{tmp_path}")
    assert str(tmp_path) in str(refused.value)


def test_a_nested_label_list_sharing_its_parts_is_refused_not_expanded(tmp_path):
    """numpy turned a few hundred pickled bytes into 2**40 labels (or died trying)."""
    write_cifar100(tmp_path)
    _rewrite(tmp_path, "train", coarse_labels=_nested(40))
    with pytest.raises(DatasetError, match=r"coarse_labels\[0\] is \[\[\[\[\.\.\.\], "):
        load_dataset(f"cifar100:{tmp_path}")


def test_an_empty_test_split_is_refused(tmp_path):
    write_cifar100(tmp_path)
    with open(tmp_path / "test", "wb") as out:  # protocol 4: an empty array pickles as bytes
        pickle.dump({b"data": np.zeros((0, 3072), np.uint8), b"fine_labels": [],
                     b"coarse_labels": []}, out, protocol=4)  # fmt: skip
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(f"cifar100:{tmp_path}")


def test_a_fine_class_without_samples_is_refused_not_a_crash_later(tmp_path):
    """Its coarse class is unknown: replay and serve failed on the parent map with exit 1."""
    write_cifar100(tmp_path)
    labels = [c if c != 7 else 8 for c in range(100)] + [8] * 20
    _rewrite(tmp_path, "train", fine_labels=labels, coarse_labels=[c // 5 for c in labels])
    _rewrite(tmp_path, "test", fine_labels=[8] * 20, coarse_labels=[1] * 20)
    with pytest.raises(DatasetError, match="class 7 of level 1 has no samples"):
        load_dataset(f"cifar100:{tmp_path}")


def test_a_pickle_of_many_small_objects_is_refused_while_it_is_read(tmp_path, monkeypatch):
    """Empty lists pickle in two bytes and take some seventy in memory: a file within the bound
    on a dataset expanded far beyond it before any check of what it held."""
    import stream.data.datasets.cifar100 as cifar100

    write_cifar100(tmp_path)
    monkeypatch.setattr(cifar100, "MAX_DATASET_BYTES", 4 << 20)  # the real bound, scaled down
    _rewrite(tmp_path, "train", filenames=[[] for _ in range(100_000)])  # 0.8 MB of them on disk
    assert (tmp_path / "train").stat().st_size < 2 << 20
    with pytest.raises(DatasetError, match="its objects would take more than the 4194304 bytes"):
        load_dataset(f"cifar100:{tmp_path}")
