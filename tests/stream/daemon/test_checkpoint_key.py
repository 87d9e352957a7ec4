"""stream/daemon/checkpoint_key.py: the key from the environment or an owner-only file."""

from __future__ import annotations

import pytest

from stream.daemon.checkpoint_key import CheckpointKeyError, load_checkpoint_key

KEY = "0123456789abcdef-key"


def test_the_key_from_the_environment_or_a_file(tmp_path):
    assert load_checkpoint_key(None, {"STREAMCL_CHECKPOINT_KEY": KEY}) == KEY.encode()
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    assert load_checkpoint_key(path, {}) == KEY.encode()
    assert load_checkpoint_key(None, {}) is None


@pytest.mark.parametrize(
    ("mode", "environ", "message"),
    [
        (0o644, {}, "readable by others"),
        (0o600, {"STREAMCL_CHECKPOINT_KEY": KEY}, "give one"),
    ],
)
def test_unsafe_or_ambiguous_keys_are_refused(tmp_path, mode, environ, message):
    path = tmp_path / "key"
    path.write_text(KEY)
    path.chmod(mode)
    with pytest.raises(CheckpointKeyError, match=message):
        load_checkpoint_key(path, environ)


def test_short_or_missing_keys_are_refused(tmp_path):
    with pytest.raises(CheckpointKeyError, match="at least 16"):
        load_checkpoint_key(None, {"STREAMCL_CHECKPOINT_KEY": "short"})
    with pytest.raises(CheckpointKeyError, match="No such file"):
        load_checkpoint_key(tmp_path / "missing", {})
