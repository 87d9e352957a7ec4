"""stream/data/option_value.py: text options read as JSON where they are JSON."""

import pytest

from stream.data.option_value import option_value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("3", 3), ("0.5", 0.5), ("true", True), ("[1, 2]", [1, 2]), ("reservoir", "reservoir")],
)
def test_json_where_it_parses_text_elsewhere(raw, value):
    assert option_value(raw) == value and type(option_value(raw)) is type(value)


def test_text_nested_deeper_than_python_parses_is_text():
    raw = "[" * 100_000 + "]" * 100_000
    assert option_value(raw) == raw
