"""deploy/systemd/streamcl.service: runs `streamcl serve`, stops it with SIGTERM, and parses."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "streamcl.service"
EXECUTABLE = "/opt/streamcl/.venv/bin/streamcl"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_runs_the_daemon_and_stops_it_gracefully():
    unit = _unit()
    service = unit["Service"]
    assert service["ExecStart"] == f"{EXECUTABLE} serve --config /etc/streamcl/serve.toml"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 30
    assert service["Restart"] == "on-failure"
    # Exit 2 is a bad config (README, "Watching it"): restarting cannot fix it.
    assert service["RestartPreventExitStatus"] == "2"
    assert service["User"] == "streamcl" and service["StateDirectory"] == "streamcl"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The daemon is not installed here: point ExecStart at an executable that exists.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXECUTABLE, sys.executable))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
