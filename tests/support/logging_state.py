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
    monkeypatch.setattr(log_setup, "_json_requested", False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()
