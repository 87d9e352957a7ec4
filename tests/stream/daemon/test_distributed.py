"""Who a worker is (torchrun's environment) and which partitions it reads."""

from __future__ import annotations

import pytest
import torch

from stream.daemon.distributed import Collectives, World, assign_partitions, backend_for


def test_a_world_is_read_from_torchruns_environment():
    environ = {
        "RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29400", "TORCHELASTIC_RESTART_COUNT": "1",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }  # fmt: skip
    world = World.from_environment(environ)
    assert world == World(2, 3, 0, "10.0.0.1", 29400, restart=1, agent_store=True)
    assert World.from_environment({}) is None


@pytest.mark.parametrize(
    "environ", [{"RANK": "3", "WORLD_SIZE": "3"}, {"RANK": "x", "WORLD_SIZE": "2"}]
)
def test_a_wrong_environment_is_one_clear_error(environ):
    with pytest.raises(ValueError, match="torchrun environment"):
        World.from_environment(environ)


@pytest.mark.parametrize(("partitions", "size"), [(6, 3), (5, 3), (2, 3), (8, 1)])
def test_partitions_are_dealt_disjointly_and_completely_by_rank(partitions, size):
    topic = list(range(partitions))[::-1]  # the order the broker lists them in does not matter
    dealt = [assign_partitions(topic, World(rank, size)) for rank in range(size)]
    assert sorted(p for mine in dealt for p in mine) == list(range(partitions))
    assert all(len(mine) in {partitions // size, -(-partitions // size)} for mine in dealt)
    assert dealt == [assign_partitions(sorted(topic), World(rank, size)) for rank in range(size)]


def test_gloo_on_cpu_nccl_on_cuda():
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda")) == "nccl"


def test_a_world_of_one_needs_no_process_group():
    collectives = Collectives(World(0, 1), torch.device("cpu"))
    assert collectives.sum([1.0, 2.5]) == [1.0, 2.5]
    assert collectives.gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]
    assert collectives.broadcast_int(7) == 7
