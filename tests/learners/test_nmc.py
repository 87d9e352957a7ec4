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
