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
    import stream.data.datasets.npz as npz

    spec = save(tmp_path / "d.npz")
    monkeypatch.setattr(npz, "memory_bytes", lambda device: 500)
    with pytest.raises(DatasetError, match="more than this machine's 500"):
        load_dataset(spec)


def test_members_the_dataset_does_not_read_are_not_loaded(tmp_path):
    spec = save(tmp_path / "d.npz", extra=np.zeros(3))
    _with_member(tmp_path / "d.npz", "extra", (10**12, 5))
    assert load_dataset(spec).input_shape == (5,)
