"""The bounded replay memory (memory/replay_memory.py): byte bound, stored ids and arrivals,
stale-embedding refresh, checkpoints without pickle, and the errors of a bad setup."""

from __future__ import annotations

import itertools

import pytest
import torch

from learners.registry import LearnerConfigError, validate_config
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from memory import MemoryConfig, MemoryConfigError, ReplayMemory, build_memory


class Backbone:
    """A stand-in for a learner's backbone whose weights (``scale``) change as it trains."""

    def __init__(self) -> None:
        self.scale = 1.0
        self.calls = 0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += len(x)
        return x[:, :4] * self.scale

    def loss(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * self.scale - y.float()).abs()


def stream(n: int, seed: int, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    x = y[:, None].float() + 0.3 * torch.randn(n, dim, generator=g)
    return x, y, torch.randint(0, 2, (n,), generator=g)


def test_byte_bound_fixes_the_slot_count_and_holds():
    backbone = Backbone()
    config = MemoryConfig(capacity=1000, max_bytes=20_000, retrieval="nearest", policy="clib")
    memory = ReplayMemory(config, seed=0, embed=backbone.embed, loss=backbone.loss)
    x, y, level = stream(400, seed=1)
    for i in range(0, 400, 16):
        memory.add(x[i : i + 16], y[i : i + 16], level[i : i + 16])
        memory.sample_batch(8, query=x[i : i + 16])
        assert memory.nbytes <= 20_000
    # 6 float32 inputs (24) + 5 int64 (40) + embedding 4 float32, embedded_at, faiss's copy and
    # id (16 + 8 + 16 + 8) + clib's importance, loss and flag (9) = 121 bytes a sample.
    assert memory.slot_bytes(24, 4) == 121
    assert memory.slots == len(memory) == 20_000 // 121
    unbounded = ReplayMemory(MemoryConfig(capacity=50), seed=0)
    unbounded.add(x, y, level)
    assert unbounded.slots == len(unbounded) == 50


def test_a_byte_bound_below_one_sample_is_a_clear_error():
    memory = ReplayMemory(MemoryConfig(capacity=10, max_bytes=50), seed=0)
    x, y, level = stream(3, seed=2)
    with pytest.raises(ValueError, match="max_bytes=50 cannot hold one sample"):
        memory.add(x, y, level)


def test_a_byte_bound_below_one_input_is_refused_as_a_config_error_before_any_sample():
    """``memory.max_bytes: 1`` was found at the first sample, and ``streamcl replay`` ended
    with ``failed: ValueError`` (exit 1) where a bad config is one error line (exit 2)."""
    config = MemoryConfig(capacity=10, max_bytes=1)
    with pytest.raises(MemoryConfigError, match=r"memory\.max_bytes: 1 bytes cannot hold one"):
        build_memory(config, seed=0, input_shape=(1, 8, 8))
    build_memory(config.model_copy(update={"capacity": 0}), seed=0, input_shape=(1, 8, 8))
    per_sample = ReplayMemory.slot_bytes_of(4 * 64, None, config)
    roomy = config.model_copy(update={"max_bytes": per_sample})
    build_memory(roomy, seed=0, input_shape=(1, 8, 8))


def test_stored_samples_keep_their_ids_and_arrival():
    memory = ReplayMemory(MemoryConfig(capacity=5), seed=0)
    x, y, level = stream(5, seed=3)
    memory.add(x[:2], y[:2], level[:2], ids=torch.tensor([100, 101]))
    memory.add(x[2:], y[2:], level[2:])
    assert memory.ids[:5].tolist() == [100, 101, 2, 3, 4]
    assert memory.arrival[:5].tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(memory.x[:5], x) and torch.equal(memory.y[:5], y)


def test_stale_embeddings_are_refreshed_oldest_first():
    backbone = Backbone()
    config = MemoryConfig(capacity=40, retrieval="nearest", refresh_chunk=8, index="flat")
    memory = ReplayMemory(config, seed=0, embed=backbone.embed)
    x, y, level = stream(40, seed=4)
    memory.add(x, y, level)  # fills the memory; every embedding made with scale 1
    backbone.scale = 3.0  # the backbone trained
    expected = memory.x[:40, :4] * 3.0
    x2, y2, level2 = stream(4, seed=5)
    refreshed = []
    for _ in range(6):
        memory.add(x2[:0], y2[:0], level2[:0])  # an insert call with nothing new still refreshes
        current = torch.isclose(memory.index.vectors[:40], expected).all(1)
        refreshed.append(int(current.sum()))
        # The oldest were refreshed first (all 40 date from call 1; ties go to the lowest slot)
        # and the rest still date from call 1.
        assert current[: refreshed[-1]].all()
        assert (memory.embedded_at[refreshed[-1] : 40] == 1).all()
    assert refreshed == [8, 16, 24, 32, 40, 40]  # ceil(40 / 8) = 5 insert calls
    # Call 6 went round again, to the slots refreshed longest ago (call 2).
    assert memory.embedded_at[:40].tolist() == [7] * 8 + [3] * 8 + [4] * 8 + [5] * 8 + [6] * 8
    # The index searches the refreshed embeddings.
    assert memory.index.search(expected[:3], 1)[1].flatten().tolist() == [0, 1, 2]


def test_refresh_can_be_turned_off_and_done_at_once():
    backbone = Backbone()
    config = MemoryConfig(capacity=20, retrieval="nearest", refresh_chunk=0)
    memory = ReplayMemory(config, seed=0, embed=backbone.embed)
    x, y, level = stream(20, seed=6)
    memory.add(x, y, level)
    backbone.scale = -1.0
    memory.add(x[:3], y[:3], level[:3])  # full: reservoir may place some, refreshes none
    stale = ~torch.isclose(memory.index.vectors[:20], -memory.x[:20, :4]).all(1)
    assert stale.sum() >= 17
    memory.refresh_embeddings()
    assert torch.allclose(memory.index.vectors[:20], -memory.x[:20, :4])


def test_nearest_replay_of_a_batch_already_stored_leaves_that_batch_out():
    """A learner that stores the stream batch before its steps (pl-fms) asked for the batch's
    nearest samples: each was its own nearest, and 95% of the "replay" was the stream batch."""
    backbone = Backbone()
    memory = ReplayMemory(MemoryConfig(capacity=100, retrieval="nearest"), 0, embed=backbone.embed)
    old, y_old, level_old = stream(40, seed=8)
    new, y_new, level_new = stream(16, seed=9)
    memory.add(old, y_old, level_old)
    memory.add(new, y_new, level_new)
    batch = memory.sample_batch(16, query=new)
    assert (batch.arrival >= 40).all()  # without saying so: the batch itself, at distance 0
    batch = memory.sample_batch(16, query=new, query_stored=True)
    assert (batch.arrival < 40).all() and len(batch.slots.unique()) == 16
    # rank by rank: every query's nearest older sample is among them
    nearest = torch.cdist(backbone.embed(new), backbone.embed(old)).argmin(1)
    assert set(nearest.tolist()) <= set(batch.arrival.tolist())
    # with nothing else stored, the batch's own samples are all there is
    only = ReplayMemory(MemoryConfig(capacity=100, retrieval="nearest"), 0, embed=backbone.embed)
    only.add(new, y_new, level_new)
    assert len(only.sample_batch(10, query=new, query_stored=True).slots.unique()) == 10


def test_embeddings_are_only_computed_when_retrieval_needs_them():
    backbone = Backbone()
    memory = ReplayMemory(MemoryConfig(capacity=20), seed=0, embed=backbone.embed)
    x, y, level = stream(30, seed=7)
    memory.add(x, y, level)
    memory.sample_batch(5, query=x[:4])
    assert backbone.calls == 0 and memory.index is None


CONFIGS = [
    {"policy": policy, "retrieval": retrieval, "index": index}
    for policy, retrieval in itertools.product(
        ["reservoir", "class_balanced", "clib"],
        ["uniform", "class_balanced", "nearest", "per_level"],
    )
    for index in (["flat", "ivf"] if retrieval == "nearest" else ["auto"])
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(o.values()))
def test_a_reloaded_memory_continues_exactly(options):
    def build() -> tuple[ReplayMemory, Backbone]:
        backbone = Backbone()
        config = MemoryConfig(capacity=30, refresh_chunk=4, nprobe=1, **options)
        return ReplayMemory(config, 3, embed=backbone.embed, loss=backbone.loss), backbone

    def run(memory: ReplayMemory, backbone: Backbone, seed: int) -> list[torch.Tensor]:
        drawn = []
        x, y, level = stream(80, seed)
        for i in range(0, 80, 8):
            backbone.scale += 0.1
            if len(memory):
                drawn.append(memory.sample_batch(6, query=x[i : i + 8]).slots)
            memory.add(x[i : i + 8], y[i : i + 8], level[i : i + 8])
        return drawn

    memory, backbone = build()
    run(memory, backbone, seed=8)
    restored, restored_backbone = build()
    restored_backbone.scale = backbone.scale
    restored.load_state_dict(state_from_bytes(state_to_bytes(memory.state_dict())))
    if memory.index is not None:
        queries = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                memory.index.search(queries, 7), restored.index.search(queries, 7), strict=True
            )
        )
    after = run(memory, backbone, seed=10)
    restored_after = run(restored, restored_backbone, seed=10)
    assert all(torch.equal(a, b) for a, b in zip(after, restored_after, strict=True))
    for name in ("x", "y", "level", "ids", "arrival"):
        assert torch.equal(getattr(memory, name), getattr(restored, name)), name
    if memory.importance is not None:
        assert torch.equal(memory.importance.scores, restored.importance.scores)


def test_a_restored_memory_draws_with_the_checkpointed_rng_not_its_own_seed():
    original = ReplayMemory(MemoryConfig(capacity=6), seed=1)
    original.add(*stream(20, seed=13))
    restored = ReplayMemory(MemoryConfig(capacity=6), seed=99)
    restored.load_state_dict(original.state_dict())
    more = stream(20, seed=14)
    original.add(*more)
    restored.add(*more)
    assert torch.equal(original.y, restored.y)
    assert torch.equal(original.sample(3)[1], restored.sample(3)[1])


def test_a_checkpoint_of_another_setup_is_refused():
    memory = ReplayMemory(MemoryConfig(capacity=10), seed=0)
    memory.add(*stream(5, seed=11))
    other = ReplayMemory(MemoryConfig(capacity=10, policy="class_balanced"), seed=0)
    with pytest.raises(ValueError, match="policy 'reservoir' != configured 'class_balanced'"):
        other.load_state_dict(memory.state_dict())


def test_an_empty_memory_round_trips_and_a_zero_capacity_one_stores_nothing():
    empty = ReplayMemory(MemoryConfig(capacity=10), seed=0)
    restored = ReplayMemory(MemoryConfig(capacity=10), seed=0)
    restored.load_state_dict(state_from_bytes(state_to_bytes(empty.state_dict())))
    assert len(restored) == 0
    none = ReplayMemory(MemoryConfig(capacity=0), seed=0)
    none.add(*stream(5, seed=12))
    assert len(none) == 0 and none.seen == 5
    with pytest.raises(ValueError, match="empty memory"):
        none.sample(3)


def test_options_a_learner_cannot_serve_are_config_errors():
    with pytest.raises(MemoryConfigError, match=r"memory\.retrieval: 'nearest' needs"):
        build_memory(MemoryConfig(retrieval="nearest"), seed=0)
    with pytest.raises(MemoryConfigError, match=r"memory\.policy: 'clib' needs"):
        build_memory(MemoryConfig(policy="clib"), seed=0)
    with pytest.raises(LearnerConfigError, match=r"memory\.retrieval: Input should be"):
        validate_config("er", {"memory": {"retrieval": "closest"}})
    with pytest.raises(LearnerConfigError, match=r"memory\.max_bytes"):
        validate_config("er", {"memory": {"max_bytes": 0}})


def test_a_memory_larger_than_the_machine_is_refused_when_built(monkeypatch):
    """It is allocated whole at the first sample: a capacity typed with a zero too many used to
    fail there (or be killed for memory later), in the middle of a stream."""
    page, pages = 4096, (1 << 30) // 4096  # a machine of 1 GiB
    monkeypatch.setattr(
        "os.sysconf", lambda name: {"SC_PAGE_SIZE": page, "SC_PHYS_PAGES": pages}[name]
    )
    shape = (3, 32, 32)  # 12,288 bytes of float32 and 40 of bookkeeping a sample
    with pytest.raises(
        MemoryConfigError, match=r"memory.capacity: 100,000 samples of 12,328 bytes"
    ):
        build_memory(MemoryConfig(capacity=100_000), seed=0, input_shape=shape)
    build_memory(MemoryConfig(capacity=80_000), seed=0, input_shape=shape)  # 0.92 GiB
    build_memory(MemoryConfig(capacity=100_000, max_bytes=1 << 29), seed=0, input_shape=shape)
