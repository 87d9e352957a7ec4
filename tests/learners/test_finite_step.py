"""Gradient steps are skipped, not taken, when the loss or a gradient is NaN or inf."""

from __future__ import annotations

import pytest
import torch

from learners import registry
from learners.base import Problem
from learners.finite_step import finite_step


def _model() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    return weight, torch.optim.Adam([weight], lr=0.1)


def test_a_finite_loss_steps():
    weight, optimizer = _model()
    assert finite_step(optimizer, (weight - 3).pow(2).sum())
    assert not torch.equal(weight.detach(), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize(
    "loss",
    [
        lambda w: (w * float("nan")).sum(),  # NaN loss
        lambda w: (w * float("inf")).sum() + 1,  # inf loss
        lambda w: torch.sqrt(w - w.detach()).sum(),  # a loss of 0 with an inf gradient
        # gradients +inf and -inf, whose sum is NaN (the check sums the gradients)
        lambda w: torch.sqrt(w[0] - w[0].detach()) - torch.sqrt(w[1] - w[1].detach()),
    ],
    ids=["nan loss", "inf loss", "inf gradient", "opposite inf gradients"],
)
def test_a_non_finite_loss_or_gradient_leaves_weights_and_moments_alone(loss):
    weight, optimizer = _model()
    assert finite_step(optimizer, (weight - 3).pow(2).sum())
    before = weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[weight].items() if torch.is_tensor(v)}
    assert not finite_step(optimizer, loss(weight))
    assert torch.equal(weight.detach(), before)
    for key, value in moments.items():
        assert torch.equal(optimizer.state[weight][key], value), key
    assert weight.grad is None


@pytest.mark.parametrize("name", ["er", "uer", "mvp", "pl-fms"])
def test_gradient_learners_stay_finite_on_an_extreme_batch(name):
    problem = Problem(input_shape=(1, 8, 8), num_classes=(3,))  # an image: mvp is a ViT
    # mvp's default vit is frozen and wants pretrained weights; tuned here, it needs none
    options = {"backbone": {"name": "vit", "freeze": False}} if name == "mvp" else None
    learner = registry.create(name, problem, options)
    level = torch.zeros(4, dtype=torch.long)
    learner.learn(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), level, 1)
    learner.learn(torch.full((4, 1, 8, 8), 3e38), torch.tensor([0, 1, 2, 0]), level, 1)
    for tensor_name, tensor in learner.state_dict().tensors.items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), tensor_name
    assert torch.isfinite(learner.predict(torch.rand(2, 1, 8, 8), 0)).all()
