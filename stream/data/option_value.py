"""How a value given as text (``--param KEY=VALUE``, a dataset spec's ``?KEY=VALUE``) is read."""

from __future__ import annotations

import json
from typing import Any


def option_value(raw: str) -> Any:
    """The JSON value ``raw`` spells (``3``, ``0.5``, ``true``, ``[1, 2]``), or ``raw`` itself
    as a string when it is not JSON (``reservoir``), is nested deeper than Python parses or is
    an integer of more digits than Python converts (whoever reads the option then refuses it
    as a string, by its name).

    >>> option_value("3"), option_value("reservoir"), type(option_value("9" * 5000))
    (3, 'reservoir', <class 'str'>)
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, and the digit limit's ValueError
        return raw
