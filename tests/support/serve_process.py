"""Running ``streamcl serve`` as a real process in tests: start, read its JSON logs, signal it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.daemon.checkpoint import Checkpoint, CheckpointStore

REPO = Path(__file__).resolve().parents[2]
# Short group timeouts: tansu waits a whole rebalance timeout before it assigns partitions, and
# a killed daemon's member must expire before its successor is assigned.
FAST_GROUP = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 2000,
    "request_timeout_ms": 2000,
    "probe_interval_seconds": 1.0,
    "retry_backoff_seconds": 0.5,
    "retry_backoff_max_seconds": 2.0,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServeProcess:
    """One daemon config; each :meth:`start` is a new process appending to the same log."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str) -> None:
        self.config = config
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def reconfigure(self, **sections: dict[str, Any]) -> None:
        """Change config sections for the next start (same checkpoint, same group)."""
        for section, values in sections.items():
            self.config[section] = {**self.config.get(section, {}), **values}
        self.config_path.write_text(json.dumps(self.config))

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.config["checkpoint"]["dir"])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "stream", "serve", "--config", str(self.config_path)]

    def start(self) -> None:
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def events(self, since_start: bool = True) -> list[dict[str, Any]]:
        """The JSON log events (of this process only, by default); other lines are skipped."""
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as log:
            log.seek(self._log_start if since_start else 0)
            lines = log.read().splitlines()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                events.append(event)
        return events

    def wait_for(self, accept: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if accept(event):
                    return event
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            time.sleep(0.02)
        raise AssertionError(f"no such event within {timeout} s: {self.tail()}")

    def latest_checkpoint(self) -> Checkpoint | None:
        return CheckpointStore(self.checkpoint_dir).latest()

    def wait_until_learned(self, ends: dict[int, int], timeout: float) -> Checkpoint:
        """Wait for a checkpoint whose offsets reach ``ends`` (partition -> end offset)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            checkpoint = self.latest_checkpoint()
            if checkpoint is not None:
                offsets = {int(p): o for p, o in checkpoint.meta["offsets"].items()}
                if offsets == ends:
                    return checkpoint
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"offsets {ends} not checkpointed within {timeout} s: {self.tail()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """SIGTERM (or ``signum``), then the exit code."""
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill9()

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
