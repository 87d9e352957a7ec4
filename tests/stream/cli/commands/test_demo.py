import json

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
