"""stream/observe/log_setup.py: JSON lines or key=value lines, stdlib logging and context included."""

from __future__ import annotations

import argparse
import io
import json
import logging
import warnings

import pytest
import structlog

from stream.observe import log_setup
from tests.support.logging_state import restore_logging  # noqa: F401 - autouse fixture


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_time_and_fields():
    out = io.StringIO()
    assert log_setup.configure_logging("json", stream=out) == "json"
    structlog.get_logger("streamcl.test").info("hello", samples=3, accuracy=0.5)
    (line,) = _json_lines(out)
    assert line["event"] == "hello" and line["samples"] == 3 and line["accuracy"] == 0.5
    assert line["level"] == "info" and line["logger"] == "streamcl.test"
    assert line["timestamp"].endswith("Z")


def test_stdlib_logging_and_warnings_become_json_lines():
    out = io.StringIO()
    log_setup.configure_logging("json", stream=out)
    logging.getLogger("kafka.conn").warning("broker %s unreachable", "b1:9092")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = _json_lines(out)
    assert lines[0] == {
        **lines[0],
        "event": "broker b1:9092 unreachable",
        "level": "warning",
        "logger": "kafka.conn",
    }
    assert "careful" in lines[1]["event"] and lines[1]["logger"] == "py.warnings"


def test_context_bound_by_a_caller_is_on_every_line():
    out = io.StringIO()
    log_setup.configure_logging("json", stream=out)
    log = structlog.get_logger("streamcl.loop").bind(learner="nmc")
    with structlog.contextvars.bound_contextvars(topic="samples", partition=2, offset=41):
        log.info("task_end", samples=10)
        logging.getLogger("kafka").warning("fetch retried")
    log.info("after", samples=11)
    first, second, third = _json_lines(out)
    for line in (first, second):
        assert (line["topic"], line["partition"], line["offset"]) == ("samples", 2, 41)
    assert first["learner"] == "nmc" and "topic" not in third


def test_exceptions_are_structured_in_json():
    out = io.StringIO()
    log_setup.configure_logging("json", stream=out)
    try:
        raise ValueError("bad batch")
    except ValueError:
        structlog.get_logger("x").exception("batch_failed")
    (line,) = _json_lines(out)
    assert line["exception"][0]["exc_type"] == "ValueError"
    assert line["exception"][0]["exc_value"] == "bad batch"


def test_console_lines_are_key_value():
    out = io.StringIO()
    assert log_setup.configure_logging("console", stream=out) == "console"
    structlog.get_logger("streamcl.loop").info("task_end", learner="er", samples=149)
    text = out.getvalue()
    assert "task_end" in text and "learner=er" in text and "samples=149" in text
    assert "\x1b[" not in text  # no colours where the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_is_console_on_a_terminal_and_json_elsewhere():
    assert log_setup.configure_logging("auto", stream=io.StringIO()) == "json"
    assert log_setup.configure_logging("auto", stream=Terminal()) == "console"


def test_level_filters_structlog_and_stdlib():
    out = io.StringIO()
    log_setup.configure_logging("json", "warning", stream=out)
    structlog.get_logger("a").info("dropped")
    logging.getLogger("b").info("dropped too")
    structlog.get_logger("a").warning("kept")
    assert [line["event"] for line in _json_lines(out)] == ["kept"]


def test_kafka_python_info_records_show_only_at_debug():
    chatty = logging.getLogger("kafka.net.manager")
    out = io.StringIO()
    log_setup.configure_logging("json", stream=out)  # the default level, info
    chatty.info("Attempting bootstrap to bootstrap-0")
    chatty.warning("bootstrap failed")
    logging.getLogger("streamcl.publish").info("published")
    assert [line["event"] for line in _json_lines(out)] == ["bootstrap failed", "published"]
    out = io.StringIO()
    log_setup.configure_logging("json", "debug", stream=out)
    chatty.info("Attempting bootstrap to bootstrap-0")
    chatty.debug("Added sensor")
    assert [line["event"] for line in _json_lines(out)] == [
        "Attempting bootstrap to bootstrap-0",
        "Added sensor",
    ]
    out = io.StringIO()
    log_setup.configure_logging("json", "info", stream=out)  # a later call quiets them again
    chatty.info("Attempting bootstrap to bootstrap-0")
    assert out.getvalue() == ""
    out = io.StringIO()
    log_setup.configure_logging("json", "error", stream=out)  # and hides their warnings too
    chatty.warning("bootstrap failed")
    chatty.error("bootstrap failed for good")
    assert [line["event"] for line in _json_lines(out)] == ["bootstrap failed for good"]


def test_default_stream_is_stderr_at_the_time_of_logging(capsys):
    log_setup.configure_logging("json")
    structlog.get_logger("a").info("to the current stderr")
    assert json.loads(capsys.readouterr().err)["event"] == "to the current stderr"


def test_failure_line_is_json_only_where_json_was_asked_for(capsys):
    log_setup.configure_logging("auto", stream=io.StringIO())
    log_setup.report_failure("streamcl: error: bad thing")
    assert capsys.readouterr().err == "streamcl: error: bad thing\n"
    log_setup.configure_logging("json")
    log_setup.report_failure("streamcl: error: bad thing")
    line = json.loads(capsys.readouterr().err)
    assert (line["event"], line["error"], line["level"]) == (
        "command_failed",
        "streamcl: error: bad thing",
        "error",
    )


def test_a_command_can_default_to_json():
    parser = argparse.ArgumentParser()
    parser.set_defaults(log_format="json")
    log_setup.add_logging_arguments(parser)
    assert parser.parse_args([]).log_format == "json"
    assert parser.parse_args(["--log-format", "console"]).log_format == "console"
    plain = argparse.ArgumentParser()
    log_setup.add_logging_arguments(plain)
    assert (plain.parse_args([]).log_format, plain.parse_args([]).log_level) == ("auto", "info")


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "loud")])
def test_bad_format_or_level(fmt, level):
    with pytest.raises(ValueError, match="must be one of"):
        log_setup.configure_logging(fmt, level, stream=io.StringIO())
