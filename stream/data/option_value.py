"""How a value given as text (``--param KEY=VALUE``, a dataset spec's ``?KEY=VALUE``) is read."""

from __future__ import annotations

import json
from typing import Any


def option_value(raw: str) -> Any:
    """The JSON value ``raw`` spells (``3``, ``0.5``, ``true``, ``[1, 2]``), or ``raw`` itself
    as a string when it is not JSON (``reservoir``) or is nested deeper than Python parses."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw
