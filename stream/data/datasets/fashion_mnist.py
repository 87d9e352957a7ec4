"""Fashion-MNIST from its standard IDX files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

from pathlib import Path

from stream.data.datasets.dataset import Dataset, DatasetError
from stream.data.datasets.idx import read_idx

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FILES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(
        f"fashion-mnist: {directory} has no {stem}[.gz]; install the Debian package "
        f"dataset-fashion-mnist or pass fashion-mnist:DIR"
    )


def load(spec: str, argument: str | None) -> Dataset:
    directory = Path(argument or DEFAULT_DIR)
    if not directory.is_dir():
        raise DatasetError(
            f"fashion-mnist: directory {directory} does not exist; install the Debian package "
            f"dataset-fashion-mnist or pass fashion-mnist:DIR"
        )
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        if arrays[f"X_{split}"].ndim != 3:
            raise DatasetError(f"fashion-mnist: {FILES['X_' + split]} must hold [n, 28, 28] images")
    return Dataset(
        spec=spec,
        X_train=arrays["X_train"],
        y_train=arrays["y_train"].astype("int64"),
        X_test=arrays["X_test"],
        y_test=arrays["y_test"].astype("int64"),
        class_names=CLASS_NAMES if int(arrays["y_train"].max()) < 10 else [],
    )
