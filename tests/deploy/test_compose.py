"""deploy/compose.yaml and the files it mounts: structure and consistency (Docker is not run here).

Checks that the compose file parses, has the services, mounts files that exist, and that the
addresses agree across files: the daemon's config, Prometheus' scrape target, Grafana's
provisioning and the dashboard path. ``promtool`` (Debian package prometheus) checks the
Prometheus config where it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


COMPOSE = _yaml(DEPLOY / "compose.yaml")
SERVICES = COMPOSE["services"]
SERVE = tomllib.loads((DEPLOY / "streamcl" / "serve.toml").read_text(encoding="utf-8"))
PROMETHEUS = _yaml(DEPLOY / "prometheus" / "prometheus.yml")


def _mounts(service: str) -> dict[str, str]:
    """Container path -> source (host paths relative to deploy/, or a named volume)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def _host(source: str) -> Path | None:
    return (DEPLOY / source).resolve() if source.startswith((".", "/")) else None


def test_the_services_are_there():
    assert {"kafka", "streamcl", "prometheus", "grafana"} <= set(SERVICES)
    local = SERVICES["streamcl"]["image"]
    for name, service in SERVICES.items():
        image = service["image"]
        if image != local:
            assert ":" in image and not image.endswith(":latest"), (
                f"{name}: pin the image, got {image}"
            )
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_every_mounted_file_exists_and_every_volume_is_declared():
    declared = set(COMPOSE.get("volumes") or {})
    for name in SERVICES:
        for target, source in _mounts(name).items():
            host = _host(source)
            if host is None:
                assert source in declared, f"{name}: volume {source} is not declared"
            else:
                assert host.exists(), (
                    f"{name}: {source} (mounted at {target}) is not in the repository"
                )
                assert ROOT in host.parents, f"{name}: {source} is outside the repository"


def test_the_image_builds_from_files_in_the_repository():
    build = SERVICES["streamcl"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.is_file()
    copied = [
        line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")
    ]
    assert copied and all((context / source).exists() for source in copied)
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    assert "*" in ignore, "the context holds only what the image copies"
    for source in copied:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, (
            f"{source} is excluded from the context"
        )


def test_streamcl_serves_the_mounted_config():
    service = SERVICES["streamcl"]
    assert service["command"] == ["serve", "--config", "/etc/streamcl/serve.toml"]
    assert (
        _host(_mounts("streamcl")["/etc/streamcl/serve.toml"]) == DEPLOY / "streamcl" / "serve.toml"
    )
    # SIGTERM: finish the batch and checkpoint; the checkpoint dir is on the persistent volume.
    assert SERVE["checkpoint"]["dir"].startswith("/var/lib/streamcl")
    assert _mounts("streamcl")["/var/lib/streamcl"] in COMPOSE["volumes"]


def test_addresses_agree_across_files():
    metrics = SERVE["metrics"]
    assert metrics["host"] == "0.0.0.0", "Prometheus scrapes from another container"
    (job,) = PROMETHEUS["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"streamcl:{metrics['port']}"]
    assert f"127.0.0.1:{metrics['port']}/healthz" in " ".join(
        SERVICES["streamcl"]["healthcheck"]["test"]
    )
    kafka = SERVICES["kafka"]["environment"]
    assert f"PLAINTEXT://{SERVE['kafka']['bootstrap']}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    created = " ".join(SERVICES["kafka-topics"]["command"])
    for topic in (SERVE["kafka"]["topic"], SERVE["dead_letter"]["topic"]):
        assert f"--topic {topic} " in created
    assert f"--topic {SERVE['kafka']['topic']} " in " ".join(SERVICES["publisher"]["command"])


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard():
    mounts = _mounts("grafana")
    provisioning = _host(mounts["/etc/grafana/provisioning"])
    (datasource,) = _yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"][0]
    (provider,) = _yaml(provisioning / "dashboards" / "streamcl.yaml")["providers"]
    dashboards_in_container = provider["options"]["path"]
    dashboards = _host(mounts[dashboards_in_container])
    assert dashboards == DEPLOY / "grafana" / "dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_in_container + "/")
    assert (dashboards / home.removeprefix(dashboards_in_container + "/")).is_file()


def test_promtool_accepts_the_prometheus_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("STREAMCL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# Kafka's image writes its server.properties from the environment when it starts.
WRITES_ITS_ROOT = {"kafka", "kafka-topics"}


def test_every_container_is_hardened():
    for name, service in SERVICES.items():
        assert service.get("cap_drop") == ["ALL"], f"{name}: drop every capability"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert re.fullmatch(r"\d+[mg]", str(service.get("mem_limit", ""))), f"{name}: mem_limit"
        logging = service.get("logging", {})
        assert logging.get("options", {}).get("max-size"), f"{name}: a rotated log"
        if name not in WRITES_ITS_ROOT:
            assert service.get("read_only") is True, f"{name}: read-only root filesystem"
    # our own image is pinned too: a full Python version, not a moving tag
    base = next(
        line.split()[1]
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    )
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
