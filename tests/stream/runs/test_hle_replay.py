"""Learners with one head per level replayed over recorded HLE streams: results per level."""

import pytest

from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import prepare, replay

SPEC = "synthetic-hierarchy:branching=4x3,train=40,test=20,dim=8,separation=2"
LEARNERS = {
    "acil": {"buffer_size": 256},
    "er": {"lr": 3e-3, "memory": {"capacity": 100}},
    "pl-fms": {"lr": 3e-3, "memory": {"capacity": 100, "policy": "class_balanced"}},
}


@pytest.fixture(scope="module")
def hle_stream(tmp_path_factory):
    def make(scenario):
        dataset = load_dataset(SPEC)
        schedule, params = make_schedule("hle", dataset, {"scenario": scenario, "tasks": 3}, 1)
        recorded = record_schedule(dataset, schedule, "hle", params.model_dump(mode="json"), 1)
        path = tmp_path_factory.mktemp(scenario) / "hle.scl"
        return prepare(write_stream(path, recorded), dataset)

    return make


@pytest.mark.parametrize("scenario", ["single", "dual"])
@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_learns_both_levels_of_an_hle_stream(hle_stream, learner, scenario):
    prepared = hle_stream(scenario)
    loop = LoopConfig(batch_size=16, online_iter=2, eval_period=120)
    results = replay(prepared, learner, LEARNERS[learner], loop, "cpu")
    coarse, fine = results["per_level"]["coarse"], results["per_level"]["fine"]
    # Chance is 1/4 for the coarse level and 1/12 for the fine one.
    assert coarse["A_last"] > 0.8 and fine["A_last"] > 0.6, (coarse, fine)
    assert coarse["A_last_either"] >= coarse["A_last"] - 1e-12
    # Fine classes appear only after task 0, so the fine curve starts with no accuracy.
    assert fine["curve"][0][1] is None and coarse["curve"][0][1] is not None
    assert results["task_end_accuracies"][-1] == results["A_last"]
    # SPEC: per_level has the same keys as the top level, per level
    spec_keys = {"A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy", "samples"}
    spec_keys |= {"seconds", "samples_per_second", "curve"}
    assert spec_keys <= set(coarse) and spec_keys <= set(fine)
    assert coarse["samples"] + fine["samples"] == results["samples"]
    assert coarse["seconds"] == results["seconds"]
    assert 0 < fine["prequential_accuracy"] < 1


def test_acil_coarse_head_is_untouched_by_the_fine_tasks(hle_stream):
    """In ``single`` no coarse label arrives after task 0, and ACIL's per-level ridge heads over
    a frozen backbone only absorb their own level: coarse predictions stay exactly the same."""
    loop = LoopConfig(batch_size=16, eval_period=120)
    results = replay(hle_stream("single"), "acil", LEARNERS["acil"], loop, "cpu")
    coarse = results["per_level"]["coarse"]
    fine_curve = results["per_level"]["fine"]["curve"]
    first_fine = next(i for i, (_, acc) in enumerate(fine_curve) if acc is not None)
    after_task_0 = {acc for _, acc in coarse["curve"][first_fine:]}
    assert len(after_task_0) == 1 and coarse["F_last"] == 0.0
