"""Reading a secret from a file an operator names (a checkpoint key, a metrics token, a Kafka
password): bounded, so that a path named by mistake (``/dev/zero``, a log file) is refused
instead of read without end."""

from __future__ import annotations

from pathlib import Path

from stream.data.regular_file import FileTooLarge, read_regular

MAX_SECRET_BYTES = 64 << 10
"""Bytes a secret file may hold (keys and passwords are tens of bytes)."""


def read_secret_file(path: str | Path, where: str, error: type[ValueError]) -> bytes:
    """The bytes of secret file ``path``, its trailing newline dropped; ``error(message)``
    naming ``where`` when it cannot be read or is larger than :data:`MAX_SECRET_BYTES`."""
    try:
        data = read_regular(path, MAX_SECRET_BYTES)
    except FileTooLarge:
        raise error(f"{where}: larger than {MAX_SECRET_BYTES} bytes; not a secret file") from None
    except OSError as exc:
        raise error(f"{where}: {exc.strerror or exc}") from None
    return data.rstrip(b"\r\n")


def read_secret_text(path: str | Path, where: str, error: type[ValueError]) -> str:
    """:func:`read_secret_file` as UTF-8 text."""
    data = read_secret_file(path, where, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: byte {exc.start}: not UTF-8 text") from None
