"""A real Prometheus server for tests: a free loopback port, a generated config, stopped after.

The binary is the Debian package ``prometheus`` (scripts/test.sh installs it). Where it is
missing the tests that need it skip, unless ``STREAMCL_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """The path of ``name``; skip the test without it, or fail where services are required."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not installed (Debian package prometheus; scripts/test.sh installs it)"
        )
        if os.environ.get("STREAMCL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class PrometheusServer:
    """One Prometheus process scraping ``targets`` every ``scrape_interval``."""

    def __init__(
        self, workdir: Path, targets: Sequence[str], scrape_interval: str = "250ms"
    ) -> None:
        self.binary = require_binary("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
            "scrape_configs": [
                {"job_name": "streamcl", "static_configs": [{"targets": list(targets)}]}
            ],
        }
        # JSON is YAML: no YAML writer needed.
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited {self.process.returncode}: {self.log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout} s: {self.log_path.read_text()}")

    def api(self, endpoint: str, **params: str) -> Any:
        """``/api/v1/<endpoint>``'s ``data``; an error answer raises with Prometheus' message."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            answer = get_json(f"{self.url}/api/v1/{endpoint}?{query}")
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read())
        if answer.get("status") != "success":
            raise AssertionError(
                f"{endpoint} {params}: {answer.get('errorType')}: {answer.get('error')}"
            )
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (``/api/v1/query``)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]

    def wait_for(self, expr: str, accept: Any, timeout: float) -> list[float]:
        """Poll ``expr`` until ``accept(values)``; the last values in the failure message."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            values = self.values(expr)
            if accept(values):
                return values
            time.sleep(0.25)
        raise AssertionError(f"{expr}: still {values} after {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def all_finite(values: Sequence[float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values)
