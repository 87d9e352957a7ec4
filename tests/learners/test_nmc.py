import torch

from learners.base import Problem
from learners.registry import create


def test_class_means_do_not_depend_on_batch_size():
    problem = Problem(input_shape=(6,), num_classes=(5,))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(97, 6, generator=g), torch.randint(0, 4, (97,), generator=g)
    level = torch.zeros(97, dtype=torch.long)
    learners = []
    for batch in (1, 7, 97):
        nmc = create("nmc", problem)
        for s in range(0, 97, batch):
            nmc.learn(x[s : s + batch], y[s : s + batch], level[s : s + batch])
        learners.append(nmc)
    for other in learners[1:]:
        torch.testing.assert_close(other.sums[0], learners[0].sums[0], rtol=1e-12, atol=1e-12)
    means = learners[0].sums[0][:4] / learners[0].counts[0][:4, None]
    for c in range(4):
        torch.testing.assert_close(means[c], x[y == c].double().mean(0))


def test_predicts_the_nearest_mean_and_never_an_unseen_class():
    problem = Problem(input_shape=(2,), num_classes=(3,))
    nmc = create("nmc", problem)
    nmc.learn(
        torch.tensor([[0.0, 0.0], [10.0, 10.0]]),
        torch.tensor([0, 2]),
        torch.zeros(2, dtype=torch.long),
    )
    scores = nmc.predict(torch.tensor([[1.0, 1.0], [9.0, 8.0], [5.1, 5.1]]))
    assert scores.argmax(1).tolist() == [0, 2, 2]
    assert torch.isinf(scores[:, 1]).all()


def test_one_set_of_means_per_level():
    problem = Problem(
        input_shape=(1,),
        num_classes=(2, 4),
        level_names=("coarse", "fine"),
        parents=((0, 0, 1, 1),),
    )
    nmc = create("nmc", problem)
    x = torch.tensor([[0.0], [1.0], [5.0]])
    nmc.learn(x, torch.tensor([0, 1, 3]), torch.tensor([0, 1, 1]))
    assert nmc.counts[0].tolist() == [1, 0] and nmc.counts[1].tolist() == [0, 1, 0, 1]
    assert nmc.predict(torch.tensor([[4.0]]), level=1).argmax(1).item() == 3


def test_scores_are_negative_squared_distances_up_to_a_per_row_constant():
    problem = Problem(input_shape=(3,), num_classes=(4,))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    nmc = create("nmc", problem)
    nmc.learn(x, y, torch.zeros(40, dtype=torch.long))
    queries = torch.randn(5, 3, generator=g)
    scores = nmc.predict(queries).double()
    means = torch.stack([x[y == c].double().mean(0) for c in range(3)])
    distances = torch.cdist(queries.double(), means) ** 2
    # score = -||q - m||^2 + ||q||^2
    expected = -distances + (queries.double() ** 2).sum(1, keepdim=True)
    torch.testing.assert_close(scores[:, :3], expected, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(scores[:, 3]).all()


def test_learning_a_predicted_tensor_changed_in_place_uses_its_new_values():
    problem = Problem(input_shape=(2,), num_classes=(2,))
    level = torch.zeros(2, dtype=torch.long)
    cached, fresh = create("nmc", problem), create("nmc", problem)
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    cached.predict(x)
    x.mul_(10)  # after predict saw it
    cached.learn(x, torch.tensor([0, 1]), level)
    fresh.learn(x.clone(), torch.tensor([0, 1]), level)
    assert torch.equal(cached.sums[0], fresh.sums[0])
    # and the features of the tensor predict just saw are those learn uses
    y = torch.tensor([[1.0, 1.0], [4.0, 4.0]])
    cached.predict(y)
    cached.learn(y, torch.tensor([1, 1]), level)
    fresh.learn(y.clone(), torch.tensor([1, 1]), level)
    assert torch.equal(cached.sums[0], fresh.sums[0])


def test_scores_after_small_batches_equal_those_rebuilt_from_the_sums():
    """learn refreshes only the classes a small batch touched; a learner loaded from the same
    sums rebuilds every class: the scores must be identical."""
    problem = Problem(input_shape=(4,), num_classes=(6,))
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 5, (50,), generator=g)
    level = torch.zeros(50, dtype=torch.long)
    nmc = create("nmc", problem)
    for s in range(0, 50, 3):
        nmc.learn(x[s : s + 3], y[s : s + 3], level[s : s + 3])
    rebuilt = create("nmc", problem)
    rebuilt.load_state_dict(nmc.state_dict())
    queries = torch.randn(9, 4, generator=g)
    assert torch.equal(nmc.predict(queries), rebuilt.predict(queries))
    assert torch.isneginf(nmc.predict(queries)[:, 5]).all()
