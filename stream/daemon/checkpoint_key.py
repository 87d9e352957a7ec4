"""The checkpoint key: from the environment or a key file, never from the config file.

A config file is copied, templated and logged; a key in it leaks. So the key that signs the
daemon's checkpoints (stream/daemon/checkpoint.py) comes from ``STREAMCL_CHECKPOINT_KEY`` or from
the file named by ``checkpoint.key_file`` (for systemd, ``LoadCredential=``; for compose, a
secret), read once at start. A key file readable by others than its owner is refused, and so
is a key shorter than 16 bytes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from stream.data.secret_file import read_secret_file

ENV_VAR = "STREAMCL_CHECKPOINT_KEY"
MIN_BYTES = 16


class CheckpointKeyError(ValueError):
    """The key cannot be read or is unfit; the message says where it came from."""


def load_checkpoint_key(key_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The key from ``environ`` or ``key_file`` (at most one of them), or None."""
    from_env = environ.get(ENV_VAR)
    if from_env is not None and key_file is not None:
        raise CheckpointKeyError(f"both {ENV_VAR} and checkpoint.key_file are set; give one")
    if from_env is not None:
        return _checked(from_env.encode(), ENV_VAR)
    if key_file is None:
        return None
    where = f"checkpoint.key_file {key_file}"
    try:
        mode = os.stat(key_file).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CheckpointKeyError(
                f"{where}: readable by others (mode {mode & 0o777:o}); chmod 600"
            )
    except OSError as exc:
        raise CheckpointKeyError(f"{where}: {exc.strerror or exc}") from None
    return _checked(read_secret_file(key_file, where, CheckpointKeyError), where)


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < MIN_BYTES:
        raise CheckpointKeyError(
            f"{where}: the key has {len(key)} bytes, at least {MIN_BYTES} needed"
        )
    return key
