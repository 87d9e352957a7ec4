"""PL-FMS: flexible memory sampling's keep probability and hierarchy-aware pseudo-labels."""

import pytest
import torch

from learners import registry
from learners.base import Problem

PROBLEM = Problem(
    input_shape=(6,), num_classes=(2, 4), level_names=("coarse", "fine"), parents=((0, 0, 1, 1),)
)
SMALL = {"backbone": {"hidden": [16], "out_dim": 8}, "memory": {"capacity": 40}}


def labelled(level, labels, seed):
    generator = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    centres = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) * 3
    fine = y if level == 1 else 2 * y
    x = centres[fine] + 0.3 * torch.randn(len(y), 6, generator=generator)
    return x, y, torch.full_like(y, level)


def test_keep_probability_grows_with_the_time_since_a_class_appeared():
    learner = registry.create("pl-fms", PROBLEM, {**SMALL, "stream_length": 100})
    learner.learn(*labelled(0, [0, 1] * 8, seed=0))  # t = 16; coarse 0 at t=1, coarse 1 at t=2
    learner.learn(*labelled(1, [0] * 9 + [3], seed=1))  # t = 26; fine 0 at t=17, fine 3 at t=26
    y = torch.tensor([0, 1, 0, 3])
    level = torch.tensor([0, 0, 1, 1])
    # |C_seen| = 4 classes over both levels, N_total / |C_seen| = 25 samples.
    expected = torch.tensor(
        [(26 - 1) / 25, (26 - 2) / 25, (26 - 17) / 25, 0.0], dtype=torch.float64
    )
    assert torch.allclose(learner.keep_probability(y, level), expected.clamp(max=1))


def test_new_class_is_left_to_the_memory_old_classes_stay():
    learner = registry.create("pl-fms", PROBLEM, {**SMALL, "stream_length": 20})
    learner.learn(*labelled(1, [0, 1] * 8, seed=0))
    _, y, level = labelled(1, [0] * 15 + [2], seed=1)
    learner._register(y, level)
    keep = learner._flexible_selection(y, level)
    assert keep[:15].all() and not keep[15]


def test_pseudo_labels_must_be_confident_and_agree_with_the_tree():
    learner = registry.create("pl-fms", PROBLEM, {**SMALL, "tau": 0.75})
    strong, weak = 5.0, 0.2
    # Coarse-level predictions for samples labelled fine 3 (ancestor: coarse 1).
    logits = torch.tensor([[0.0, strong], [strong, 0.0], [0.0, weak]])
    target, accept = learner._pseudo_labels(
        logits, 0, torch.tensor([3, 3, 3]), torch.tensor([1, 1, 1])
    )
    assert target.tolist() == [1, 0, 1] and accept.tolist() == [True, False, False]
    # Fine-level predictions for samples labelled coarse 0 (children: fine 0 and 1).
    logits = torch.full((3, 4), 0.0)
    logits[0, 1] = logits[1, 2] = strong
    logits[2, 0] = weak
    target, accept = learner._pseudo_labels(
        logits, 1, torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0])
    )
    assert target.tolist() == [1, 2, 0] and accept.tolist() == [True, False, False]


def coarse_head_after_fine_only_stream(pseudo_label, samples="all"):
    """Teach the coarse head, then stream only fine labels with no replay memory."""
    options = {
        "backbone": {"hidden": [32], "out_dim": 16},
        "lr": 1e-2,
        "memory": {"capacity": 0},
        "pseudo_label": pseudo_label,
        "pseudo_label_samples": samples,
        "tau": 0.0,
        "seed": 3,
    }
    learner = registry.create("pl-fms", PROBLEM, options)
    for step in range(10):
        learner.learn(*labelled(0, [0, 1] * 4, seed=step))
    before = [p.detach().clone() for p in learner.heads[0].parameters()]
    for step in range(30):
        learner.learn(*labelled(1, [0, 1, 2, 3] * 4, seed=10 + step))
    after = list(learner.heads[0].parameters())
    return learner, any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_fine_labels_train_the_coarse_head_only_through_pseudo_labels():
    _, changed = coarse_head_after_fine_only_stream(pseudo_label=False)
    assert not changed
    # By default only replayed samples are pseudo-labelled, and this learner has no memory.
    _, changed = coarse_head_after_fine_only_stream(pseudo_label=True, samples="memory")
    assert not changed
    learner, changed = coarse_head_after_fine_only_stream(pseudo_label=True)
    assert changed
    x, y, _ = labelled(0, [0, 1] * 20, seed=99)
    assert (learner.predict(x, 0).argmax(1) == y).float().mean() >= 0.9


def test_coarse_classes_with_a_seen_descendant_are_covered():
    learner = registry.create("pl-fms", PROBLEM, SMALL)
    learner.learn(*labelled(0, [0, 1] * 4, seed=0))
    assert learner._covered(0).tolist() == [False, False]
    learner.learn(*labelled(1, [3, 2] * 4, seed=1))
    assert learner._covered(0).tolist() == [False, True]


def coarse_gradient_of_a_pseudo_label(classes):
    """Coarse-head gradient of one step on replayed samples of fine class 1 (coarse 1), when
    fine classes 0 and 1 have been seen but fine class 2 (coarse 2) has not."""
    problem = Problem(
        input_shape=(6,), num_classes=(3, 3), level_names=("coarse", "fine"), parents=((0, 1, 2),)
    )
    options = {**SMALL, "backbone": {"name": "identity"}, "pseudo_label_classes": classes}
    learner = registry.create("pl-fms", problem, options)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    learner.learn(x[:3], torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.long), iterations=0)
    learner.learn(x[:2], torch.tensor([0, 1]), torch.ones(2, dtype=torch.long), iterations=0)
    with torch.no_grad():
        learner.heads[0].bias.copy_(torch.tensor([0.0, 10.0, 0.0]))  # confident: coarse 1
    y, level = torch.ones(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    learner._step(x, y, level, stream_rows=0)  # all four rows replayed
    return learner.heads[0].weight.grad


def test_covered_softmax_leaves_uncovered_coarse_classes_alone():
    grad = coarse_gradient_of_a_pseudo_label("covered")
    assert grad[1].abs().sum() > 0 and grad[2].abs().sum() == 0
    grad = coarse_gradient_of_a_pseudo_label("all")
    assert grad[2].abs().sum() > 0


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_without_fms_and_pl_it_is_er(policy):
    options = {**SMALL, "memory": {"capacity": 20, "policy": policy}, "seed": 4}
    er = registry.create("er", PROBLEM, options)
    plain = registry.create(
        "pl-fms",
        PROBLEM,
        {**options, "flexible_sampling": False, "pseudo_label": False, "memory_first": False},
    )
    batches = [labelled(0, [0, 1] * 4, seed=s) for s in range(5)]
    batches += [labelled(1, [0, 1, 2, 3] * 2, seed=s) for s in range(5, 15)]
    for x, y, level in batches:
        er.learn(x, y, level, iterations=2)
        plain.learn(x, y, level, iterations=2)
    x, _, _ = labelled(1, [0, 1, 2, 3] * 5, seed=50)
    for lvl in (0, 1):
        assert torch.allclose(er.predict(x, lvl), plain.predict(x, lvl), atol=1e-5)


def test_memory_first_replays_a_batchs_own_samples_in_its_first_step():
    """The official PL-FMS stores each stream sample before training on it; ER after."""
    options = {**SMALL, "memory": {"capacity": 20}, "flexible_sampling": False}
    replayed = {}
    for first in (True, False):
        learner = registry.create("pl-fms", PROBLEM, {**options, "memory_first": first})
        sizes: list[int] = []
        sample = learner.memory.sample

        def counting(
            n, query=None, query_stored=False, memory=learner.memory, sample=sample, sizes=sizes
        ):
            sizes.append(len(memory))
            return sample(n, query, query_stored)

        learner.memory.sample = counting
        learner.learn(*labelled(0, [0, 1] * 4, seed=0), iterations=1)
        replayed[first] = sizes
    assert replayed[True] == [8] and replayed[False] == []


def test_fms_spares_the_first_batch_and_thins_new_classes_after_it():
    options = {**SMALL, "memory": {"capacity": 50}, "stream_length": 10**6}
    learner = registry.create("pl-fms", PROBLEM, options)
    x, y, level = labelled(0, [0, 1] * 4, seed=0)
    learner._register(y, level)
    assert bool(learner._flexible_selection(y, level).all())  # first batch: kept
    learner.memory.add(x, y, level)
    x, y, level = labelled(1, [2, 3] * 4, seed=1)  # new fine classes: p_c < 1e-4
    learner._register(y, level)
    assert not bool(learner._flexible_selection(y, level).any())


def test_memory_stays_class_balanced_unless_told_otherwise():
    learner = registry.create("pl-fms", PROBLEM, {"memory": {"capacity": 30}})
    assert learner.config.memory.policy == "class_balanced" and learner.memory.capacity == 30
    learner = registry.create("pl-fms", PROBLEM, {"memory": {"policy": "reservoir"}})
    assert learner.config.memory.policy == "reservoir"


def test_nearest_replay_after_storing_the_batch_is_not_the_batch_again():
    """With memory_first the batch is stored before its steps, so each of its samples was its
    own nearest: 95% of a "replay" was the stream batch (digits, A_last 30% against 90%)."""
    options = {**SMALL, "memory": {"capacity": 50, "retrieval": "nearest"}}
    learner = registry.create("pl-fms", PROBLEM, {**options, "flexible_sampling": False})
    memory = learner.memory
    own: list[bool] = []
    draw = memory._draw

    def recording(n, query=None, query_stored=False):
        slots = draw(n, query, query_stored)
        own.append(bool((memory.arrival[slots] >= memory.seen - len(query)).any()))
        return slots

    memory._draw = recording
    for seed in range(4):
        learner.learn(*labelled(1, [0, 1, 2, 3] * 2, seed=seed), iterations=1)
    # the first batch has only itself to replay; the others replay what came before them
    assert own == [True, False, False, False]
