"""The base of every config model read from a user's file: no boolean where a number goes.

Pydantic's lax mode reads ``true`` as 1 and ``false`` as 0 for an int or float field, so
``port = false`` (what a TOML user writes to turn the endpoint off, TOML having no null) served
on a random port, and ``blurry = true`` became a percent of 1. A config model derived from
:class:`ConfigModel` refuses a boolean for every field that does not take one; fields named in
``false_is_null`` read ``false`` as ``null`` (their "off"), so TOML can say it.

>>> class Section(ConfigModel):
...     false_is_null: ClassVar[frozenset[str]] = frozenset({"port"})
...     port: int | None = 9100
...     workers: int = 1
>>> Section.model_validate({"port": False}).port is None
True
>>> try:
...     Section.model_validate({"workers": True})
... except ValueError as exc:
...     print(exc.errors()[0]["msg"])
Value error, workers: true is not a number
"""

from __future__ import annotations

import types
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, model_validator


class ConfigModel(BaseModel):
    """A config model that refuses booleans for fields that do not take one."""

    false_is_null: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        checked = data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if not isinstance(value, bool) or not _lax_number(field.annotation):
                continue
            if name in cls.false_is_null and value is False:
                if checked is data:
                    checked = dict(data)
                checked[name] = None
                continue
            raise ValueError(f"{name}: {str(value).lower()} is not a number")
        return checked


def _lax_number(annotation: Any) -> bool:
    """Whether pydantic would read a boolean as a number in a field of ``annotation``: it takes
    an int or a float and no boolean (other types refuse a boolean with their own message)."""
    return _takes(annotation, (int, float)) and not _takes(annotation, (bool,))


def _takes(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a field of ``annotation`` holds values of one of ``kinds`` (or anything)."""
    if annotation is Any or annotation in kinds:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes(get_args(annotation)[0], kinds)
    if origin is Union or origin is types.UnionType:
        return any(_takes(arg, kinds) for arg in get_args(annotation))
    if origin is Literal:
        return any(type(arg) in kinds for arg in get_args(annotation))
    return False
