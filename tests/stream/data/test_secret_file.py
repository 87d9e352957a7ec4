"""stream/data/secret_file.py: secrets from files, bounded and refused with one clear error."""

from __future__ import annotations

import pytest

from stream.daemon.checkpoint_key import CheckpointKeyError, load_checkpoint_key
from stream.daemon.config import MetricsConfig, ServeConfigError
from stream.daemon.endpoint_security import endpoint_security
from stream.data.secret_file import MAX_SECRET_BYTES, read_secret_file
from stream.sources.kafka_options import KafkaOptionsError, resolve_secrets


def test_a_secret_loses_its_trailing_newline_only(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"  s3cret \n")
    assert read_secret_file(path, "where", ValueError) == b"  s3cret "


def test_dev_zero_named_by_mistake_is_refused_not_read_without_end():
    with pytest.raises(ValueError, match="where: not a regular file: a device"):
        read_secret_file("/dev/zero", "where", ValueError)


def test_every_secret_file_is_bounded_and_text_where_text_is_needed(tmp_path):
    large = tmp_path / "large"
    large.write_bytes(b"k" * (MAX_SECRET_BYTES + 1))
    large.chmod(0o600)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" * 32)
    with pytest.raises(CheckpointKeyError, match="larger than"):
        load_checkpoint_key(large, {})
    for path, problem in ((large, "larger than"), (binary, "byte 0: not UTF-8 text")):
        config = MetricsConfig(auth="bearer", secret_file=path)
        with pytest.raises(ServeConfigError, match=problem):
            endpoint_security(config, {})
        with pytest.raises(KafkaOptionsError, match=problem):
            resolve_secrets({"sasl_plain_password_file": str(path)}, {})
