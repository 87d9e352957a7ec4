"""deploy/grafana/dashboards/streamcl.json: valid Grafana JSON, and every query returns data.

The structural tests read the JSON. The end-to-end tests start a real Prometheus (Debian
package ``prometheus``) scraping, every 250 ms, a running ``streamcl replay --metrics-port`` and
a ``streamcl serve`` daemon learning a published stream (with malformed messages) from a real
Kafka-compatible broker (tansu), then run every panel query and every variable query through
Prometheus' HTTP API, and each must return finite data.

Which process answers which query: a replay exports every series except the daemon's
(``DAEMON_METRICS``: consumer lag, invalid messages, checkpoint time, broker state), which it
leaves absent rather than faking; the daemon exports those too. The tests check both.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.data.datasets import load_dataset
from stream.data.stream_file import read_stream
from stream.observe.serving_telemetry import ServingTelemetry
from stream.observe.telemetry import Telemetry
from stream.sinks.kafka_sink import open_sink
from stream.sources.serving_wire import encode_label_json, encode_requests
from stream.sources.wire import encode_binary
from tests.support.digits_stream import write_digits_stream
from tests.support.malformed import malformed_messages
from tests.support.prometheus_server import PrometheusServer, all_finite, free_port, get_json
from tests.support.serve_process import FAST_GROUP, ServeProcess

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "deploy" / "grafana" / "dashboards" / "streamcl.json"
# The metrics of docs/metrics.md, as exported (counters with _total).
SPEC_METRICS = {
    "streamcl_samples_total", "streamcl_invalid_messages_total", "streamcl_anytime_accuracy",
    "streamcl_auc_accuracy", "streamcl_prequential_accuracy", "streamcl_forgetting",
    "streamcl_seen_classes", "streamcl_memory_samples", "streamcl_update_seconds",
    "streamcl_consumer_lag", "streamcl_last_checkpoint_timestamp_seconds", "streamcl_build_info",
}  # fmt: skip
# Serving (docs/serving.md): only a daemon with [predictions] exports these (histograms by the
# series the panels query).
SERVING_METRICS = {
    "streamcl_predictions_total", "streamcl_prediction_latency_seconds_bucket",
    "streamcl_label_delay_seconds_bucket", "streamcl_unlabelled_expired_total",
    "streamcl_labels_unmatched_total", "streamcl_pending_requests",
    "streamcl_predict_http_errors_total",
}  # fmt: skip
DAEMON_METRICS = {
    "streamcl_consumer_lag", "streamcl_invalid_messages_total",
    "streamcl_last_checkpoint_timestamp_seconds", "streamcl_broker_up", *SERVING_METRICS,
    "streamcl_storage_failures_total", "streamcl_dead_letters_spilled_total",
    "streamcl_offset_resets_total",
}  # fmt: skip
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
# What Grafana puts for $__rate_interval here: a window over the whole replay, so a rate taken
# after the end still sees its samples. Grafana derives it from the scrape interval and the range.
RATE_INTERVAL = "10m"
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "gauge", "text"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(id, expr)`` of every panel target, the id as ``panel<id>-<refId>``."""
    return [
        (f"panel{panel['id']}-{target['refId']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard["templating"]["list"]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamcl_[a-z_]+", expr))


def exported_names(metric: str) -> set[str]:
    """The series names a metric family produces (histograms: _bucket, _count, _sum)."""
    return {metric, f"{metric}_bucket", f"{metric}_count", f"{metric}_sum"}


def substitute(expr: str) -> str:
    """The expression Grafana sends with every variable at its default, All (``.*``)."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


DASHBOARD = load_dashboard()
QUERIES = panel_queries(DASHBOARD)
DAEMON_QUERIES = [(qid, e) for qid, e in QUERIES if metrics_in(e) & DAEMON_METRICS]
REPLAY_QUERIES = [(qid, e) for qid, e in QUERIES if not metrics_in(e) & DAEMON_METRICS]
LABEL_VARIABLES = [v for v in variables(DASHBOARD) if v["type"] == "query"]


# -- the dashboard JSON -------------------------------------------------------------------


def test_no_object_repeats_a_key():
    """Grafana keeps the last of two equal keys: the first would be dead text."""

    def refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
        return dict(pairs)

    json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"), object_pairs_hook=refuse_repeats)


def test_top_level_fields():
    d = DASHBOARD
    assert isinstance(d["title"], str) and d["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["id"] is None, "a provisioned dashboard must not carry a database id"
    assert isinstance(d["version"], int)
    assert set(d["time"]) == {"from", "to"}
    assert isinstance(d["panels"], list) and d["panels"]
    assert isinstance(d["templating"]["list"], list)
    assert d["editable"] in (True, False)


def test_panel_ids_are_unique_integers():
    ids = [panel["id"] for panel in all_panels(DASHBOARD)]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)


def test_panels_fit_the_grid_without_overlapping():
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(DASHBOARD):
        assert panel["type"] in PANEL_TYPES, panel["type"]
        g = panel["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_every_query_uses_the_datasource_variable():
    (datasource,) = [v for v in variables(DASHBOARD) if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": f"${{{datasource['name']}}}"}
    for panel in all_panels(DASHBOARD):
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == ref and t["expr"].strip(), panel["title"]
    for variable in LABEL_VARIABLES:
        assert variable["datasource"] == ref, variable["name"]


def test_every_variable_used_is_defined():
    defined = {v["name"] for v in variables(DASHBOARD)} | GRAFANA_BUILTINS
    texts = [e for _, e in QUERIES] + [variable_query(v) for v in LABEL_VARIABLES]
    used = {name for text in texts for name in re.findall(r"\$\{?(\w+)\}?", text)}
    assert used <= defined, used - defined


def test_dashboard_shows_every_spec_metric_and_only_exported_ones():
    telemetry = Telemetry()
    # The daemon-reported gauges join the registry when first set.
    telemetry.checkpoint_written()
    telemetry.set_broker_up(True)
    telemetry.watch_dead_letters()
    ServingTelemetry(telemetry)
    exported = set()
    for family in telemetry.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        exported |= exported_names(name)
    queried = set().union(*(metrics_in(e) for _, e in QUERIES))
    assert queried <= exported, queried - exported
    shown = {m for m in SPEC_METRICS if exported_names(m) & queried}
    assert shown == SPEC_METRICS, SPEC_METRICS - shown


def test_queries_split_into_replay_and_daemon_ones():
    assert {q for q, _ in DAEMON_QUERIES} == {
        q for q, e in QUERIES if metrics_in(e) & DAEMON_METRICS
    }
    daemon_metrics_shown = set().union(*(metrics_in(e) for _, e in DAEMON_QUERIES))
    assert daemon_metrics_shown == DAEMON_METRICS
    assert len(REPLAY_QUERIES) + len(DAEMON_QUERIES) == len(QUERIES)


# -- every query against a real Prometheus scraping a replay ----------------------------------


class ScrapedReplay:
    """A replay lingering after its stream, a daemon idle after its topic, and the Prometheus
    that scraped both."""

    def __init__(
        self, prometheus: PrometheusServer, port: int, logs: Path, task_sizes: list[int]
    ) -> None:
        self.prometheus = prometheus
        self.port = port
        self.logs = logs
        self.task_sizes = task_sizes
        self.results: dict[str, Any] = {}
        self.daemon_port = 0
        self.invalid_reasons: dict[str, int] = {}


DAEMON_TOPIC = "dashboard"
SERVED = 40  # prediction requests and their labels, sent with the second half
MAX_BYTES = 16_384  # the daemon's message size limit, so the "oversized" bad message is one


class Publisher:
    """Sends the recorded stream to the daemon's topic in binary micro-batches of 32, with
    malformed messages before and after it."""

    def __init__(self, bootstrap: str, stream_path: Path) -> None:
        self.sink = open_sink("confluent", bootstrap)
        assert self.sink.ensure_topic(DAEMON_TOPIC, 1) == 1
        dataset = load_dataset("digits")
        stream = read_stream(stream_path)
        x = dataset.X_train[np.asarray(stream.row)]
        y, level = np.asarray(stream.y), np.asarray(stream.level)
        self.messages = [
            encode_binary(x[i : i + 32], y[i : i + 32], level[i : i + 32])
            for i in range(0, len(y), 32)
        ]
        self.requests = encode_requests(x[:SERVED], np.arange(SERVED))
        self.labels = [encode_label_json(i, int(y[i])) for i in range(SERVED)]
        self.bad = malformed_messages(dataset.problem(), MAX_BYTES)[:4]
        self.reasons: dict[str, int] = {}
        for reason, _ in self.bad:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def send(self, part: int) -> None:
        """Part 0: two bad messages and the first half; part 1: the prediction requests, the
        rest, the requests' labels and two bad ones. Part 1 goes out after Prometheus scraped
        the daemon, so every serving series is scraped before it first changes and its rate has
        an increase to show."""
        half = len(self.messages) // 2
        chosen = (
            [m for _, m in self.bad[:2]] + self.messages[:half]
            if part == 0
            else [self.requests, *self.messages[half:], *self.labels] + [m for _, m in self.bad[2:]]
        )
        for message in chosen:
            self.sink.send(DAEMON_TOPIC, message, partition=0)
        self.sink.flush()


def start_daemon(tmp: Path, bootstrap: str, port: int) -> ServeProcess:
    """``streamcl serve`` (nmc) on the dashboard topic, with its metrics on ``port``."""
    config = {
        "kafka": {"bootstrap": bootstrap, "topic": DAEMON_TOPIC, "group": "dashboard",
                  "client": "confluent", **FAST_GROUP},
        "problem": {"input_shape": [1, 8, 8], "num_classes": [10]},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp / "daemon-ckpt"), "every_seconds": 0.3},
        "dead_letter": {"file": str(tmp / "daemon-dead.jsonl")},
        "messages": {"max_bytes": MAX_BYTES},
        "metrics": {"port": port, "stall_seconds": 60},
        "predictions": {"topic": f"{DAEMON_TOPIC}-predictions"},
    }  # fmt: skip
    daemon = ServeProcess(config, tmp, "daemon")
    daemon.start()
    return daemon


@pytest.fixture(scope="module")
def scraped_replay(tmp_path_factory, kafka_broker):
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    port, daemon_port = free_port(), free_port()
    prometheus = PrometheusServer(
        tmp / "prometheus", [f"127.0.0.1:{port}", f"127.0.0.1:{daemon_port}"]
    )
    process: subprocess.Popen | None = None
    daemon: ServeProcess | None = None
    try:
        task_sizes = write_digits_stream(tmp / "digits.scl")
        out = tmp / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # drift detection and an ivf-searched memory, so their panels have series to show
        learner_config = tmp / "er.json"
        learner_config.write_text(json.dumps({"memory": {"index": "ivf", "retrieval": "nearest"}}))
        command = [
            sys.executable, "-m", "stream", "replay", str(tmp / "digits.scl"), "--learner", "er",
            "--config", str(learner_config), "--drift", "ADWIN",
            "--eval-period", "100", "--out", str(out), "--metrics-port", str(port),
            "--metrics-linger", "300", "--log-format", "json",
            # paced to ~6 s, so scrapes every 250 ms see the run mid-stream (at ~3 s a loaded
            # machine's Prometheus caught it once or not at all)
            "--max-rate", "250",
        ]  # fmt: skip
        logs = tmp / "replay.log"
        with logs.open("w") as stderr:
            process = subprocess.Popen(
                command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        replay = ScrapedReplay(prometheus, port, logs, task_sizes)
        # The daemon learns the stream in two halves with a scrape between them, so its
        # update-latency rates have an increase to show, as a live daemon's do.
        publisher = Publisher(kafka_broker.bootstrap, tmp / "digits.scl")
        replay.invalid_reasons = publisher.reasons
        replay.daemon_port = daemon_port
        daemon = start_daemon(tmp, kafka_broker.bootstrap, daemon_port)
        publisher.send(0)
        prometheus.wait_for('streamcl_samples_total{learner="nmc"}', bool, timeout=120)
        # One POST /predict, so the HTTP latency series has an observation to show.
        samples = [{"x": [0.0] * 64}, {"id": 7, "x": [0.5] * 64}]
        request = urllib.request.Request(
            f"http://127.0.0.1:{daemon_port}/predict", json.dumps({"samples": samples}).encode()
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert [p["id"] for p in json.loads(answer.read())["predictions"]] == [None, 7]
        # and one refused, so the refusals panel has a reason to show
        refused = urllib.request.Request(
            f"http://127.0.0.1:{daemon_port}/predict", b'{"samples": [{"x": [NaN]}]}'
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(refused, timeout=10)
        assert answer.value.code == 400
        publisher.send(1)
        deadline = time.monotonic() + 300
        # The replay logs metrics_linger once results.json is written.
        while '"metrics_linger"' not in logs.read_text():
            if process.poll() is not None:
                raise AssertionError(f"replay exited {process.returncode}: {logs.read_text()}")
            assert time.monotonic() < deadline, "replay did not finish in 300 s"
            time.sleep(0.2)
        replay.results = json.loads((out / "results.json").read_text())
        samples = replay.results["samples"]
        # The final values are in Prometheus once a scrape after the end has happened: the
        # replay's, and the daemon's once it has learned the whole topic and checkpointed.
        prometheus.wait_for(
            'streamcl_samples_total{learner="er"}', lambda v: v == [samples], timeout=60
        )
        prometheus.wait_for(
            'streamcl_samples_total{learner="nmc"}', lambda v: v == [samples + SERVED], timeout=120
        )
        prometheus.wait_for("streamcl_last_checkpoint_timestamp_seconds", bool, timeout=60)
        prometheus.wait_for(
            "sum(streamcl_invalid_messages_total)",
            lambda v: v == [sum(replay.invalid_reasons.values())],
            timeout=60,
        )
        yield replay
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if daemon is not None:
            daemon.stop()
        prometheus.stop()


@pytest.mark.prometheus
def test_replay_scraped_while_learning(scraped_replay):
    """Scrapes caught the replay mid-stream, so rates and latency quantiles mean something."""
    p = scraped_replay.prometheus
    total = scraped_replay.results["samples"]
    during = p.values(
        f'count_over_time((streamcl_samples_total{{learner="er"}} > 0 < {total})'
        f"[{RATE_INTERVAL}:250ms])"
    )
    assert during and during[0] >= 2, during


@pytest.mark.prometheus
@pytest.mark.parametrize(("query_id", "expr"), REPLAY_QUERIES, ids=[q for q, _ in REPLAY_QUERIES])
def test_replay_query_returns_data(scraped_replay, query_id, expr):
    values = scraped_replay.prometheus.values(substitute(expr))
    assert all_finite(values), f"{query_id}: {substitute(expr)} -> {values}"


@pytest.mark.prometheus
@pytest.mark.parametrize(("query_id", "expr"), DAEMON_QUERIES, ids=[q for q, _ in DAEMON_QUERIES])
def test_daemon_query_returns_data(scraped_replay, query_id, expr):
    values = scraped_replay.prometheus.values(substitute(expr))
    assert all_finite(values), f"{query_id}: {substitute(expr)} -> {values}"


@pytest.mark.prometheus
@pytest.mark.parametrize("metric", sorted(DAEMON_METRICS))
def test_the_replay_exports_no_daemon_series(scraped_replay, metric):
    """A replay has no consumer, dead letters, broker or checkpoints, and fakes none of them."""
    replay = f'{{instance="127.0.0.1:{scraped_replay.port}"}}'
    daemon = f'{{instance="127.0.0.1:{scraped_replay.daemon_port}"}}'
    assert scraped_replay.prometheus.query(f"{metric}{replay}") == []
    assert scraped_replay.prometheus.query(f"{metric}{daemon}") != []


@pytest.mark.prometheus
def test_the_daemon_counts_invalid_messages_by_reason(scraped_replay):
    p = scraped_replay.prometheus
    for reason, count in scraped_replay.invalid_reasons.items():
        assert p.values(f'streamcl_invalid_messages_total{{reason="{reason}"}}') == [count]
    (up,) = p.values("streamcl_broker_up")
    assert up == 1.0


@pytest.mark.prometheus
@pytest.mark.parametrize("variable", LABEL_VARIABLES, ids=[v["name"] for v in LABEL_VARIABLES])
def test_variable_query_lists_values(scraped_replay, variable):
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable_query(variable))
    assert match, variable_query(variable)
    selector, label = substitute(match.group(1)), match.group(2)
    values = scraped_replay.prometheus.api(f"label/{label}/values", **{"match[]": selector})
    expected = {
        "instance": sorted(
            f"127.0.0.1:{port}" for port in (scraped_replay.port, scraped_replay.daemon_port)
        ),
        "learner": ["er", "nmc"],
        "level": ["all", "label"],
    }[variable["name"]]
    assert sorted(values) == expected


@pytest.mark.prometheus
def test_scraped_values_are_the_runs_results(scraped_replay):
    p, results = scraped_replay.prometheus, scraped_replay.results

    def value(expr: str) -> float:
        """The replay's single series of ``expr`` (the daemon exports the same names)."""
        selector = f'instance="127.0.0.1:{scraped_replay.port}"'
        if "{" in expr:
            expr = expr.replace("{", "{" + selector + ",")
        else:
            expr = expr + "{" + selector + "}"
        (v,) = p.values(expr)
        return v

    assert value('streamcl_auc_accuracy{level="all"}') == results["A_auc"]
    # The last evaluation is the task end that closes the stream.
    assert value('streamcl_anytime_accuracy{level="all"}') == results["A_last"]
    assert (
        value('streamcl_prequential_accuracy{window="cumulative"}')
        == results["prequential_accuracy"]
    )
    assert (
        value('streamcl_prequential_accuracy{window="1000"}')
        == results["prequential_accuracy_rolling"]
    )
    assert value("streamcl_memory_samples") == results["config"]["memory"]["capacity"]
    assert value("streamcl_seen_classes") == 10
    batches = sum(math.ceil(size / 16) for size in scraped_replay.task_sizes)
    assert value("streamcl_update_seconds_count") == batches
    assert value('streamcl_update_seconds_bucket{le="+Inf"}') == batches
    assert value("streamcl_update_seconds_sum") == pytest.approx(results["learn_seconds"], rel=1e-9)


@pytest.mark.prometheus
def test_health_while_lingering_after_the_stream(scraped_replay):
    health = get_json(f"http://127.0.0.1:{scraped_replay.port}/healthz")
    assert health["status"] == "ok" and health["state"] == "finished"
    with urllib.request.urlopen(f"http://127.0.0.1:{scraped_replay.port}/metrics", timeout=10) as r:
        assert r.status == 200 and b"streamcl_build_info" in r.read()


@pytest.mark.prometheus
def test_replay_logs_are_json_lines_with_learner_and_samples(scraped_replay):
    lines = [
        json.loads(line) for line in scraped_replay.logs.read_text().splitlines() if line.strip()
    ]
    assert lines and all({"timestamp", "level", "event", "learner"} <= set(line) for line in lines)
    assert {line["learner"] for line in lines} == {"er"}
    loop = [line for line in lines if line["logger"] == "streamcl.loop"]
    assert all(isinstance(line["samples"], int) for line in loop)
    task_ends = [line["samples"] for line in loop if line["event"] == "task_end"]
    assert task_ends == np.cumsum(scraped_replay.task_sizes).tolist()
    (finished,) = [line for line in loop if line["event"] == "stream_finished"]
    assert finished["samples"] == scraped_replay.results["samples"]
    assert finished["A_auc"] == round(scraped_replay.results["A_auc"], 4)
