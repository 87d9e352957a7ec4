"""Running ``streamcl serve`` as a real process in tests: start, read its JSON logs, signal it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.daemon.checkpoint import Checkpoint, CheckpointStore
from stream.sinks.kafka_sink import open_sink

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


def waiting(meta: dict[str, Any]) -> int:
    """How many messages or joined samples a checkpoint holds read but not yet learned."""
    serving = meta.get("serving", {})
    return (
        len(meta.get("pending", []))
        + len(serving.get("pending", []))
        + len(serving.get("loop", {}).get("queue", []))
    )


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
            # a session of its own: a signal to its process group (Ctrl-C) spares pytest
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
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
        """Wait for a checkpoint whose offsets reach ``ends`` (partition -> end offset) and
        whose model learned everything read: nothing waits for a complete micro-batch (the
        daemon learns that once a poll comes back empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            checkpoint = self.latest_checkpoint()
            if checkpoint is not None:
                offsets = {int(p): o for p, o in checkpoint.meta["offsets"].items()}
                if offsets == ends and not waiting(checkpoint.meta):
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

    def interrupt_group(self, signum: int = signal.SIGINT, timeout: float = 60) -> int:
        """``signum`` to the process group the command started (what Ctrl-C in a terminal
        does), then the exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signum)
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Kill the command and everything it started (torchrun and its workers run in a
        process group of their own, which a kill of the command alone would leave running)."""
        if self.process is not None and self.process.poll() is None:
            family = descendants(self.process.pid)
            self.kill9()
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def serve_config(
    tmp_path: Path,
    name: str,
    bootstrap: str,
    topic: str,
    client: str,
    max_bytes: int = 16_384,
    **sections: Any,
) -> dict:
    """A daemon config for a test on a real broker (fast group timeouts, private dirs)."""
    name = f"{name}-{client}"
    kafka = {"bootstrap": bootstrap, "topic": topic, "client": client, "group": name}
    config = {
        "kafka": {**kafka, **FAST_GROUP},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / f"{name}-ckpt"), "every_seconds": 0.3},
        "dead_letter": {"file": str(tmp_path / f"{name}-dead.jsonl")},
        "messages": {"max_bytes": max_bytes},
        "metrics": {"port": free_port(), "stall_seconds": 60},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def scrape(process: ServeProcess) -> dict[str, float]:
    """The daemon's /metrics samples, keyed by ``name{labels}`` as exposed."""
    url = f"http://127.0.0.1:{process.config['metrics']['port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def dead_letters(process: ServeProcess) -> list[tuple[int, int, str]]:
    path = Path(process.config["dead_letter"]["file"])
    return [
        (d["partition"], d["offset"], d["reason"])
        for d in map(json.loads, path.read_text().splitlines())
    ]


class Topic:
    """Sends to a topic, counting offsets per partition (what the dead letters must name)."""

    def __init__(self, bootstrap: str, name: str, partitions: int, exact: bool = True) -> None:
        """``exact``: the topic must have ``partitions`` (else: a topic made before, e.g. by a
        subscription, keeps the partitions it has)."""
        self.name = name
        self.sink = open_sink("confluent", bootstrap)
        found = self.sink.ensure_topic(name, partitions)
        assert found == partitions or not exact, found
        self.ends = dict.fromkeys(range(found), 0)
        self.invalid: list[tuple[int, int, str]] = []

    def send(self, value: bytes, partition: int, reason: str | None = None) -> None:
        self.sink.send(self.name, value, partition=partition)
        if reason is not None:
            self.invalid.append((partition, self.ends[partition], reason))
        self.ends[partition] += 1

    def flush(self) -> None:
        self.sink.flush()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), deepest last."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(c) for c in children.read().split()]
            except OSError:
                continue
            found += kids
            queue += kids
    return found
