import gzip

import numpy as np
import pytest

from stream.data.datasets import DatasetError, load_dataset
from stream.data.datasets.idx import read_idx


def write_idx(path, array, compress=True):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as out:
            out.write(payload)
    else:
        path.write_bytes(payload)


def make_fashion(directory, n_train=30, n_test=10, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_reads_fashion_mnist_idx_files(tmp_path, compress):
    make_fashion(tmp_path, compress=compress)
    ds = load_dataset(f"fashion-mnist:{tmp_path}")
    assert ds.input_shape == (1, 28, 28) and ds.X_train.dtype == np.uint8
    assert len(ds.y_train) == 30 and len(ds.y_test) == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    assert np.array_equal(ds.X_train[:, 0], raw)


def test_missing_directory_says_where(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nope'}")


def test_missing_file_names_it(tmp_path):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_truncated_idx_is_refused(tmp_path):
    make_fashion(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="payload"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_bad_magic_is_refused(tmp_path):
    make_fashion(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"hello world")
    with pytest.raises(DatasetError, match="magic"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_a_gzip_bomb_is_read_only_as_far_as_its_header_declares(tmp_path):
    """A compressed IDX file was decompressed whole before its size was checked: 1 GiB of
    zeros behind a header of 10 bytes, compressed to 1 MB, went into memory."""
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big"))
        zeros = bytes(1 << 20)
        for _ in range(1024):
            out.write(zeros)
    with pytest.raises(DatasetError, match="payload has more than 10 bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    "header, message",
    [
        (bytes([0, 0, 0x08, 0]), "declares 0 dimensions"),
        (bytes([0, 0, 0x08, 3]) + b"\xff\xff\xff\xff" * 3, "more than 17,179,869,184"),
        (bytes([0, 0, 0x08, 2]) + b"\x00\x00\x00\x02", "header truncated"),
    ],
)
def test_idx_headers_no_dataset_has_are_refused(tmp_path, header, message):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(header)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)
