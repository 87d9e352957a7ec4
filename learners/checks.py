"""The contract every registered learner must honour (modelled on ``river.checks``).

``yield_checks(name)`` yields check functions; ``tests/learners/test_contract.py`` runs each one
over every registered learner, so a new learner gets these tests by being registered. Each
check takes a learner name and builds fresh learners with the class's ``check_config`` (small
models, so the suite stays fast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from learners import registry
from learners.base import Learner, Problem
from learners.capabilities import FusedPrediction, MultiLevelPrediction, PurePrediction
from learners.state.safetensors_io import state_from_bytes, state_to_bytes

NUM_CLASSES = 4


def check_problem(name: str) -> Problem:
    cls = registry.get(name)
    return Problem(input_shape=cls.check_input_shape, num_classes=(NUM_CLASSES,))


def make(name: str, seed: int = 0, device: str = "cpu") -> Learner:
    cls = registry.get(name)
    options = {**cls.check_config, "seed": seed}
    return registry.create(name, check_problem(name), options, device)


def blobs(
    name: str, n: int, seed: int, classes: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs shaped like the learner's check input."""
    shape = registry.get(name).check_input_shape
    dim = 1
    for size in shape:
        dim *= size
    generator = torch.Generator().manual_seed(1000 + seed)
    centres = torch.randn(NUM_CLASSES, dim, generator=torch.Generator().manual_seed(7)) * 3.0
    pool = torch.tensor(classes if classes is not None else list(range(NUM_CLASSES)))
    y = pool[torch.randint(0, len(pool), (n,), generator=generator)]
    x = centres[y] + 0.5 * torch.randn(n, dim, generator=generator)
    if len(shape) > 1:
        x = torch.sigmoid(x)  # image-like inputs live in [0, 1]
    return x.reshape(n, *shape), y


def levels_for(y: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(y)


def stream_through(learner: Learner, x: torch.Tensor, y: torch.Tensor, batch: int = 10) -> None:
    for start in range(0, len(y), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        learner.learn(xb, yb, levels_for(yb), iterations=1)


def accuracy(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((learner.predict(x).argmax(1).cpu() == y).float().mean())


def check_predicts_before_learning(name: str) -> None:
    learner = make(name)
    x, _ = blobs(name, 8, seed=1)
    scores = learner.predict(x)
    assert scores.shape == (8, NUM_CLASSES), f"{name}: scores shape {tuple(scores.shape)}"


def check_learns_in_a_single_pass(name: str) -> None:
    learner = make(name)
    x, y = blobs(name, 300, seed=2)
    xt, yt = blobs(name, 200, seed=3)
    stream_through(learner, x, y)
    acc = accuracy(learner, xt, yt)
    assert acc >= 0.6, f"{name}: accuracy {acc:.2f} after one pass over separable blobs"


def check_new_class_mid_batch(name: str) -> None:
    learner = make(name)
    x_old, y_old = blobs(name, 60, seed=4, classes=[0, 1])
    stream_through(learner, x_old, y_old)
    x_new, y_new = blobs(name, 9, seed=5, classes=[2])
    x_mix, y_mix = blobs(name, 10, seed=6, classes=[0, 1])
    # The new class first appears in the middle of a batch.
    x = torch.cat([x_mix[:5], x_new[:1], x_mix[5:]])
    y = torch.cat([y_mix[:5], y_new[:1], y_mix[5:]])
    learner.learn(x, y, levels_for(y), iterations=1)
    more_x, more_y = blobs(name, 120, seed=7, classes=[0, 1, 2])
    stream_through(learner, more_x, more_y)
    xt, yt = blobs(name, 60, seed=8, classes=[2])
    acc = accuracy(learner, xt, yt)
    assert acc >= 0.5, f"{name}: new class predicted with accuracy {acc:.2f}"


def check_checkpoint_round_trip(name: str) -> None:
    learner = make(name, seed=3)
    x, y = blobs(name, 80, seed=9)
    stream_through(learner, x, y)
    restored = make(name, seed=3)
    restored.load_state_dict(state_from_bytes(state_to_bytes(learner.state_dict())))
    xt, _ = blobs(name, 50, seed=10)
    assert torch.equal(learner.predict(xt), restored.predict(xt)), (
        f"{name}: predictions differ after restore"
    )
    # Learning on after the restore must continue exactly as the original does.
    x2, y2 = blobs(name, 40, seed=11)
    stream_through(learner, x2, y2)
    stream_through(restored, x2, y2)
    assert torch.equal(learner.predict(xt), restored.predict(xt)), f"{name}: diverged after restore"


def check_deterministic_under_seed(name: str) -> None:
    runs = []
    for _ in range(2):
        learner = make(name, seed=5)
        x, y = blobs(name, 60, seed=12)
        stream_through(learner, x, y)
        runs.append(learner.predict(blobs(name, 30, seed=13)[0]))
    assert torch.equal(runs[0], runs[1]), f"{name}: two runs with the same seed differ"


def check_runs_on_cpu(name: str) -> None:
    learner = make(name, device="cpu")
    x, y = blobs(name, 20, seed=14)
    stream_through(learner, x, y)
    assert learner.predict(x).device.type == "cpu"
    assert isinstance(learner.memory_samples, int) and learner.memory_samples >= 0


def check_iterations_zero_still_registers(name: str) -> None:
    """``iterations=0`` (a fractional online_iter not yet reaching 1) must not break a learner."""
    learner = make(name)
    x, y = blobs(name, 10, seed=15)
    learner.learn(x, y, levels_for(y), iterations=0)
    assert learner.predict(x).shape == (10, NUM_CLASSES)


def check_predicts_in_inference_mode(name: str) -> None:
    """A learner declaring :class:`PurePrediction` is evaluated under ``torch.inference_mode``:
    the same predictions, and learning goes on after as if it had not been asked."""
    learner, twin = make(name, seed=2), make(name, seed=2)
    x, y = blobs(name, 40, seed=16)
    stream_through(learner, x, y)
    stream_through(twin, x, y)
    xt, _ = blobs(name, 20, seed=17)
    with torch.inference_mode():
        inferred = learner.predict(xt)
    assert torch.equal(inferred, twin.predict(xt)), f"{name}: inference mode changes predictions"
    x2, y2 = blobs(name, 20, seed=18)
    stream_through(learner, x2, y2)
    stream_through(twin, x2, y2)
    assert torch.equal(learner.predict(xt), twin.predict(xt)), (
        f"{name}: predicting in inference mode changed what it learned next"
    )


def check_fused_prediction_equals_two_calls(name: str) -> None:
    """``predict_then_learn`` predicts what ``predict`` would, and learns what ``learn`` would,
    for every ``iterations`` the engine may pass."""
    fused, plain = make(name, seed=4), make(name, seed=4)
    assert isinstance(fused, FusedPrediction)
    x, y = blobs(name, 60, seed=19)
    for start, iterations in zip(range(0, 60, 10), (1, 1, 0, 2, 1, 1), strict=True):
        xb, yb = x[start : start + 10], y[start : start + 10]
        expected = plain.predict(xb)
        plain.learn(xb, yb, levels_for(yb), iterations)
        scores = fused.predict_then_learn(xb, yb, levels_for(yb), iterations)
        assert scores.shape == expected.shape, f"{name}: fused scores {tuple(scores.shape)}"
        assert torch.equal(scores.isinf(), expected.isinf()), f"{name}: fused masking differs"
        assert torch.equal(scores.argmax(1), expected.argmax(1)), f"{name}: fused argmax differs"
        torch.testing.assert_close(scores, expected)
    xt, _ = blobs(name, 20, seed=20)
    assert torch.equal(fused.predict(xt), plain.predict(xt)), f"{name}: fused learning differs"


def check_predict_levels_equals_predict(name: str) -> None:
    learner = make(name)
    assert isinstance(learner, MultiLevelPrediction)
    x, y = blobs(name, 30, seed=21)
    stream_through(learner, x, y)
    [scores] = learner.predict_levels(x, [0])
    assert torch.equal(scores, learner.predict(x, 0)), f"{name}: predict_levels != predict"


CHECKS: tuple[Callable[[str], None], ...] = (
    check_predicts_before_learning,
    check_learns_in_a_single_pass,
    check_new_class_mid_batch,
    check_checkpoint_round_trip,
    check_deterministic_under_seed,
    check_runs_on_cpu,
    check_iterations_zero_still_registers,
)


def yield_checks(name: str) -> Iterator[Callable[[str], None]]:
    """The checks that apply to learner ``name``, by what it declares it can do."""
    yield from CHECKS
    cls = registry.get(name)
    if issubclass(cls, PurePrediction):
        yield check_predicts_in_inference_mode
    if issubclass(cls, FusedPrediction):
        yield check_fused_prediction_equals_two_calls
    if issubclass(cls, MultiLevelPrediction):
        yield check_predict_levels_equals_predict
