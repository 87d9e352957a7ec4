"""An autouse-able fixture that puts the process's logging back as each test found it."""

from __future__ import annotations

import logging

import pytest
import structlog

from stream.observe import log_setup


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = [*log_setup.QUIET_LIBRARIES, *log_setup.CHATTY_CLIENTS]
    levels = {name: logging.getLogger(name).level for name in quieted}
    monkeypatch.setattr(log_setup, "_json_requested", False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in levels.items():
        logging.getLogger(name).setLevel(previous)
    logging.captureWarnings(False)
    structlog.reset_defaults()
