"""Reading config files (JSON or TOML) into plain dicts, with errors that name the file."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from stream.data.regular_file import FileTooLarge, read_regular

MAX_CONFIG_BYTES = 4 << 20
"""Bytes a config file may hold (the largest real one is a few kilobytes)."""


class ConfigFileError(ValueError):
    """A config file that is missing or does not parse."""


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a ``.json`` or ``.toml`` file: at most :data:`MAX_CONFIG_BYTES`
    of UTF-8, nested no deeper than Python parses."""
    path = Path(path)
    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except FileTooLarge:
        raise ConfigFileError(
            f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file"
        ) from None
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: byte {exc.start}: not UTF-8 text") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigFileError(f"{path}: nested deeper than a config can be") from None
    except ValueError:  # json and tomllib refuse integers of more digits than Python converts
        raise ConfigFileError(
            f"{path}: a number of more than {sys.get_int_max_str_digits()} digits; "
            "not a config value"
        ) from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a mapping of options")
    return data
