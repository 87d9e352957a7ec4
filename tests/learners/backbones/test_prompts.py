"""MVP's prompt pool: penalised key selection, prompt placement, logit masks, the CVPT loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from learners.backbones.prompts import PromptPool


def pool(size: int = 3, dim: int = 4) -> PromptPool:
    return PromptPool(
        size, dim, (5,), g_layers=[0, 1], g_length=2, e_layers=[2], e_length=3, seed=0
    )


def two_keys_and_a_query() -> tuple[PromptPool, torch.Tensor]:
    p = pool(size=2, dim=2)
    with torch.no_grad():
        p.keys.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    query = torch.tensor([[1.0, 0.3]])  # nearer key 0 (d≈0.04) than key 1 (d≈0.71)
    return p, query


def test_usage_penalty_changes_which_key_is_selected():
    p, query = two_keys_and_a_query()
    distances = p.distances(query)
    assert p.select(distances).tolist() == [0]
    p.record(torch.tensor([0] * 30))  # key 0 used a lot: 0.04·31 > 0.71·1
    assert p.count.tolist() == [30, 0]
    assert p.select(distances).tolist() == [1]
    assert p.select(distances, frequency_penalty=False).tolist() == [0]


def test_prompts_go_to_their_layers_and_come_from_the_selected_key():
    p = pool()
    index = torch.tensor([2, 0])
    g0, g1, e2 = (p.layer_prompts(index, layer) for layer in (0, 1, 2))
    assert p.layer_prompts(index, 3) is None
    assert g0 is not None and g1 is not None and e2 is not None
    assert torch.equal(g0[1], p.g_prompts[0:2]) and torch.equal(g1[0], p.g_prompts[2:4])
    assert torch.equal(e2[0], p.e_prompts[2]) and torch.equal(e2[1], p.e_prompts[0])


def test_logit_mask_is_two_sigmoid_of_the_selected_keys_vector():
    p = pool()
    with torch.no_grad():
        p.masks[0][1] = torch.tensor([-50.0, 0.0, 50.0, 1.0, -1.0])
    mask = p.logit_mask(torch.tensor([1, 0]))
    assert torch.allclose(
        mask[0],
        torch.tensor(
            [
                0.0,
                1.0,
                2.0,
                2 * torch.sigmoid(torch.tensor(1.0)),
                2 * torch.sigmoid(torch.tensor(-1.0)),
            ]
        ),
    )
    assert torch.allclose(mask[1], torch.full((5,), 2 * torch.sigmoid(torch.tensor(-1.0))))


def test_cvpt_loss_pulls_the_selected_key_to_the_query_and_away_from_the_others():
    p = pool(size=3, dim=4)
    query = torch.randn(1, 4, generator=torch.Generator().manual_seed(3))
    index = p.select(p.distances(query), frequency_penalty=False)
    s = int(index)
    others = [i for i in range(3) if i != s]

    def state():
        with torch.no_grad():
            to_query = 1 - F.cosine_similarity(query[0], p.keys[s], dim=0)
            to_others = 1 - F.cosine_similarity(p.keys[s].unsqueeze(0), p.keys[others], dim=1)
        return float(to_query), float(to_others.mean())

    before = state()
    optimizer = torch.optim.SGD([p.keys], lr=0.5)
    for _ in range(5):
        loss = p.contrastive_loss(p.distances(query), index, frequency_penalty=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = state()
    assert after[0] < before[0] - 0.01, (before, after)
    assert after[1] > before[1] + 0.01, (before, after)


def test_cvpt_gradient_shrinks_for_a_much_used_key():
    p, query = two_keys_and_a_query()
    index = torch.tensor([0])

    def grad_norm() -> float:
        p.keys.grad = None
        p.contrastive_loss(p.distances(query), index).backward()
        return float(p.keys.grad.norm())

    fresh = grad_norm()
    p.record(torch.tensor([0] * 9))  # mass 10: distances divided by 10
    assert grad_norm() < fresh / 5
