import pickle

import numpy as np
import pytest

from stream.data.datasets import DatasetError, load_dataset


def write_cifar100(directory, n_train=40, n_test=20):
    """Small files in the CIFAR-100 "python version" layout (bytes keys, as the real ones)."""
    rng = np.random.default_rng(0)
    fine_to_coarse = np.arange(100) // 5  # 20 coarse classes of 5 fine classes each
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        fine[:2] = [0, 99]
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
