"""deploy/systemd/streamcl.service: runs `streamcl serve`, stops it with SIGTERM, and parses."""

from __future__ import annotations

import configparser
import re
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


def test_the_unit_is_hardened():
    service = _unit()["Service"]
    for key, value in {
        "CapabilityBoundingSet": "",
        "PrivateDevices": "true",
        "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true",
        "ProtectKernelLogs": "true",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "true",
        "MemoryDenyWriteExecute": "true",
        "UMask": "0077",
    }.items():
        assert service[key] == value, key
    filters = re.findall(r"^SystemCallFilter=(.*)$", UNIT.read_text(), re.MULTILINE)
    assert "@system-service" in filters
    assert service["MemoryMax"].endswith("G")


def test_systemd_rates_the_unit_at_most_2_5(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXECUTABLE, sys.executable))
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout


# What MemoryDenyWriteExecute= enforces, by the kernel's own switch (prctl PR_SET_MDWE, Linux
# 6.3+): no memory both writable and executable. The daemon's work under it: torch training
# (er) and analytic heads, river, a checkpoint written and read.
W_XOR_X_WORKLOAD = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory was allowed: the switch did not take")
except OSError:
    pass
import torch
from learners import registry
from learners.base import Problem
from stream.daemon.checkpoint import CheckpointStore
problem = Problem(input_shape=(16,), num_classes=(4,))
x, y = torch.randn(64, 16), torch.arange(64) % 4
for name in ("nmc", "er", "river:tree.HoeffdingTreeClassifier"):
    learner = registry.create(name, problem)
    learner.learn(x, y, torch.zeros(64, dtype=torch.long))
    learner.predict(x, 0)
    store = CheckpointStore(sys.argv[1] + "/" + name.replace(":", "_"))
    store.write({"n": name}, learner.state_dict())
    registry.create(name, problem).load_state_dict(store.latest().learner)
print("ok")
"""


@pytest.mark.slow
def test_the_daemons_work_runs_without_writable_executable_memory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", W_XOR_X_WORKLOAD, str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=UNIT.parents[2],
    )  # fmt: skip
    if result.returncode == 77:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
