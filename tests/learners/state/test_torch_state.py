"""learners/state/torch_state.py: an optimizer restored from a checkpoint keeps the running
code's implementation flags (fused, foreach) and the checkpoint's hyperparameters and moments."""

from __future__ import annotations

import torch

from learners.state.torch_state import load_optimizer_state, optimizer_state


def _stepped(optimizer_options: dict) -> tuple[torch.nn.Linear, torch.optim.Adam]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(layer.parameters(), **optimizer_options)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
    return layer, optimizer


def test_a_foreach_checkpoint_restores_into_a_fused_adam():
    _, old = _stepped({"lr": 0.01, "foreach": True})
    saved = optimizer_state(old)
    layer = torch.nn.Linear(4, 3)
    fused = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)
    load_optimizer_state(fused, saved)
    group = fused.param_groups[0]
    assert group["fused"] is True and not group["foreach"]
    assert group["lr"] == 0.01  # hyperparameters are the checkpoint's
    for param, old_param in zip(layer.parameters(), old.param_groups[0]["params"], strict=True):
        assert torch.equal(fused.state[param]["exp_avg"], old.state[old_param]["exp_avg"])
    layer(torch.randn(2, 4)).sum().backward()
    fused.step()  # and it steps
