import numpy as np
import pytest

from stream.data.datasets import DatasetError, load_dataset


def save(path, **arrays):
    base = {
        "X_train": np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32),
        "y_train": np.arange(20) % 4,
        "X_test": np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32),
        "y_test": np.arange(8) % 4,
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def test_features_with_class_names(tmp_path):
    spec = save(tmp_path / "d.npz", class_names=np.array(["a", "b", "c", "d"]), extra=np.zeros(3))
    ds = load_dataset(spec)
    assert ds.input_shape == (5,) and ds.num_classes == 4 and ds.class_names == ["a", "b", "c", "d"]
    assert ds.num_levels == 1 and ds.level_names == ["label"]


def test_images_gain_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    spec = save(
        tmp_path / "img.npz",
        X_train=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8),
        X_test=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8),
    )
    assert load_dataset(spec).input_shape == (1, 6, 6)


def test_hierarchy_levels_and_parents(tmp_path):
    y_train, y_test = np.arange(20) % 4, np.arange(8) % 4
    spec = save(
        tmp_path / "h.npz",
        y_train_levels=np.stack([y_train // 2, y_train], 1),
        y_test_levels=np.stack([y_test // 2, y_test], 1),
        level_names=np.array(["coarse", "fine"]),
    )
    ds = load_dataset(spec)
    assert ds.num_classes_per_level == [2, 4] and ds.parents == [[0, 0, 1, 1]]
    assert ds.problem().parents == ((0, 0, 1, 1),)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y_test": None}, "lacks the keys y_test"),
        ({"y_train": np.arange(19)}, "y_train must be"),
        ({"y_train": np.linspace(0, 1, 20)}, "integers"),
        ({"y_train": -(np.arange(20) % 4)}, "negative"),
        ({"X_test": np.zeros((8, 6), np.float32)}, "differ in shape"),
        ({"X_train": np.full((20, 5), np.nan, np.float32)}, "NaN"),
        ({"X_train": np.zeros((20,), np.float32)}, "must be"),
        ({"X_train": np.array([["a"] * 5] * 20)}, "uint8 or float"),
        ({"class_names": np.array(["a"])}, "class names"),
        ({"y_train_levels": np.zeros((20, 2), int)}, "both"),
        # a class count built from one huge label used to allocate GBs of class names
        ({"y_train": np.r_[np.arange(19) % 4, 2**24]}, "holds the label 16777216"),
        ({"y_train": np.r_[np.arange(19) % 4, 10**10]}, "holds the label 10000000000"),
        # uint64 labels used to wrap negative after the check, when cast to int64
        ({"y_test": np.array([0, 1, 2, 3, 0, 1, 2, 2**63], "u8")}, "9223372036854775808"),
        ({"y_test": np.array([0, 1, 2, 3, 0, 1, 2, 2**64 - 1], "u8")}, "18446744073709551615"),
        # zero-width inputs used to end in a multi-line pydantic ValidationError
        (
            {"X_train": np.zeros((20, 0), np.float32), "X_test": np.zeros((8, 0), np.float32)},
            r"X_train has shape \(20, 0\); every input dimension",
        ),
        (
            {
                "y_train_levels": np.zeros((20, 0), int),
                "y_test_levels": np.zeros((8, 0), int),
            },
            "L >= 1",
        ),
        (
            {
                "y_train_levels": np.stack([np.full(20, 2**40), np.arange(20) % 4], 1),
                "y_test_levels": np.stack([np.zeros(8, int), np.arange(8) % 4], 1),
            },
            "y_train_levels holds the label 1099511627776",
        ),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, arrays, message):
    spec = save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_levels_must_form_a_tree(tmp_path):
    y_train, y_test = np.arange(20) % 4, np.arange(8) % 4
    coarse = y_train // 2
    coarse[0] = 1  # fine class 0 now has parents 0 and 1
    spec = save(
        tmp_path / "t.npz",
        y_train_levels=np.stack([coarse, y_train], 1),
        y_test_levels=np.stack([y_test // 2, y_test], 1),
    )
    with pytest.raises(DatasetError, match="two parents"):
        load_dataset(spec)


def test_object_arrays_are_refused(tmp_path):
    spec = save(tmp_path / "o.npz", X_train=np.array([object()] * 20).reshape(20, 1))
    with pytest.raises(DatasetError, match="object arrays"):
        load_dataset(spec)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DatasetError, match=r"known: .*digits"):
        load_dataset("imagenet")


def _with_member(path, name, header_shape, data=b"\0" * 64):
    """``path`` (an npz) with member ``name`` replaced by a float32 .npy whose header declares
    ``header_shape`` over ``data``."""
    import io
    import zipfile

    npy = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": header_shape}
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(data)
    with zipfile.ZipFile(path) as source:
        members = {i.filename: source.read(i) for i in source.infolist()}
    members[f"{name}.npy"] = npy.getvalue()
    with zipfile.ZipFile(path, "w") as out:
        for member, content in members.items():
            out.writestr(member, content)


def test_a_header_declaring_more_data_than_the_file_holds_is_refused_before_allocating(
    tmp_path,
):
    """numpy allocates an array's declared shape before reading it: 20 TB here."""
    spec = save(tmp_path / "d.npz")
    _with_member(tmp_path / "d.npz", "X_train", (10**12, 5))
    with pytest.raises(DatasetError, match=r"X_train: its header declares 20000000000000 bytes"):
        load_dataset(spec)


def test_arrays_larger_than_the_machine_are_refused(tmp_path, monkeypatch):
    import stream.data.datasets.dataset as dataset

    spec = save(tmp_path / "d.npz")
    monkeypatch.setattr(dataset, "memory_bytes", lambda device: 500)
    with pytest.raises(DatasetError, match="more than this machine's 500"):
        load_dataset(spec)


def test_arrays_larger_than_a_dataset_may_take_are_refused(tmp_path, monkeypatch):
    """The fixed bound (4 GiB), here lowered under this file's 1600 bytes (labels as int64
    counted): it holds on a machine with memory to spare."""
    import stream.data.datasets.dataset as dataset

    spec = save(tmp_path / "d.npz")
    monkeypatch.setattr(dataset, "MAX_DATASET_BYTES", 1000)
    with pytest.raises(
        DatasetError, match=r"its arrays need about 1\d{3} bytes, more than the 1000"
    ):
        load_dataset(spec)


def test_more_names_than_a_dataset_may_have_are_refused_before_reading(tmp_path):
    """Each name becomes a Python string, tens of bytes apiece: counted from the header."""
    spec = save(tmp_path / "d.npz")
    _with_member(tmp_path / "d.npz", "class_names", (2**24 + 1,))
    with pytest.raises(DatasetError, match="class_names holds 16777217 names, more than the"):
        load_dataset(spec)


def test_a_zip_bomb_is_refused_before_decompressing(tmp_path):
    """68 MB of zeros packs into 68 KB, a 1024-fold expansion: a zip bomb (a 2.3 MB file used
    to be inflated whole, to 2.4 GB)."""
    path = tmp_path / "bomb.npz"
    zeros = np.zeros((1 << 22, 4), np.float32)
    np.savez_compressed(
        path,
        X_train=zeros,
        y_train=np.zeros(1 << 22, np.int8),
        X_test=zeros[:8],
        y_test=zeros[:8, 0].astype(int),
    )
    del zeros
    with pytest.raises(DatasetError, match=r"expand from \d+ to \d+ bytes, more than 1000 times"):
        load_dataset(f"npz:{path}")


def test_compressed_real_data_loads(tmp_path, monkeypatch):
    import stream.data.datasets.npz as npz

    rng = np.random.default_rng(0)
    path = tmp_path / "packed.npz"
    np.savez_compressed(
        path,
        X_train=rng.normal(size=(200, 8)).astype(np.float32),
        y_train=np.arange(200) % 3,
        X_test=rng.normal(size=(8, 8)),
        y_test=np.arange(8) % 3,
    )
    monkeypatch.setattr(npz, "EXPANSION_FLOOR", 0)  # the expansion is checked, and passes
    assert load_dataset(f"npz:{path}").num_classes == 3


def test_members_the_dataset_does_not_read_are_not_loaded(tmp_path):
    spec = save(tmp_path / "d.npz", extra=np.zeros(3))
    _with_member(tmp_path / "d.npz", "extra", (10**12, 5))
    assert load_dataset(spec).input_shape == (5,)
