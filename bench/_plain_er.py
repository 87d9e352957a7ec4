"""A plain PyTorch experience-replay loop: the baseline ``bench/loop.py`` holds ``er`` against.

What a practitioner would write by hand for i-Blurry's ER, with nothing of streamcl in it: an MLP
(784-256-128, ReLU) and a linear head, Adam, a reservoir memory held in two preallocated tensors,
each micro-batch predicted first (prequential accuracy), then one step on the batch joined by as
many replayed samples with the classes not yet shown masked out of the softmax, then the batch
offered to the reservoir. Every ``eval_period`` samples and at each task end it scores the test
samples of the classes shown so far, in large no-grad batches.

It reads the same micro-batches (``stream.sources.file_source.task_batches``) as the engine, so
the input pipeline costs both the same; the times it reports are the training part (replay,
step, insertion) and the whole loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PlainResult:
    """Seconds of wall clock and of this process's CPU (``*_cpu``)."""

    samples: int
    train_seconds: float
    train_cpu: float
    seconds: float
    cpu: float
    prequential_accuracy: float
    A_last: float


def plain_er(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, int]],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int,
    memory_size: int = 500,
    lr: float = 1e-3,
    eval_period: int = 1000,
    eval_batch_size: int = 512,
    seed: int = 0,
) -> PlainResult:
    """Run ER over ``(x, y, task)`` micro-batches; accuracy on ``(x_test, y_test)``."""
    torch.manual_seed(seed)
    in_dim = x_test[0].numel()
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_dim, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    memory_x = torch.empty((memory_size, *x_test.shape[1:]))
    memory_y = torch.empty(memory_size, dtype=torch.long)
    stored, offered = 0, 0
    rng = random.Random(seed)
    seen = torch.zeros(num_classes, dtype=torch.bool)
    hits, samples, next_eval = 0, 0, eval_period
    train_seconds, train_cpu = 0.0, 0.0
    task, accuracy = None, 0.0

    def evaluate() -> float:
        model.eval()
        rows = torch.nonzero(seen[y_test]).flatten()
        right = 0
        with torch.inference_mode():
            for start in range(0, len(rows), eval_batch_size):
                chunk = rows[start : start + eval_batch_size]
                logits = model(x_test[chunk]).masked_fill(~seen, float("-inf"))
                right += int((logits.argmax(1) == y_test[chunk]).sum())
        model.train()
        return right / max(len(rows), 1)

    started, started_cpu = time.perf_counter(), time.process_time()
    for x, y, batch_task in batches:
        if task is not None and batch_task != task:
            accuracy = evaluate()
        task = batch_task
        model.eval()
        with torch.no_grad():
            logits = model(x).masked_fill(~seen, float("-inf"))
        hits += int((logits.argmax(1) == y).sum())
        model.train()
        seen[y] = True

        step_started, step_cpu = time.perf_counter(), time.process_time()
        if stored:
            picked = torch.tensor(rng.sample(range(stored), min(len(y), stored)))
            bx, by = torch.cat([x, memory_x[picked]]), torch.cat([y, memory_y[picked]])
        else:
            bx, by = x, y
        loss = nn.functional.cross_entropy(model(bx).masked_fill(~seen, float("-inf")), by)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for i in range(len(y)):
            offered += 1
            if stored < memory_size:
                slot, stored = stored, stored + 1
            else:
                slot = rng.randrange(offered)
                if slot >= memory_size:
                    continue
            memory_x[slot], memory_y[slot] = x[i], y[i]
        train_seconds += time.perf_counter() - step_started
        train_cpu += time.process_time() - step_cpu

        samples += len(y)
        if samples >= next_eval:
            next_eval = (samples // eval_period + 1) * eval_period
            evaluate()
    accuracy = evaluate()
    return PlainResult(
        samples,
        train_seconds,
        train_cpu,
        time.perf_counter() - started,
        time.process_time() - started_cpu,
        hits / max(samples, 1),
        accuracy,
    )
