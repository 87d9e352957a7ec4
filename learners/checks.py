"""The contract every registered learner must honour (modelled on ``river.checks``).

``yield_checks(name)`` yields the check functions that apply to learner ``name``: those of every
learner, then those of each capability it declares (:mod:`learners.capabilities`), picked as
river picks a model's checks by what it can do. ``tests/learners/test_contract.py`` runs each
one over every registered learner on a one-level and on a two-level (hierarchical) problem, so
a new learner gets these tests by being registered. Each check takes a learner name and a
number of levels and builds fresh learners with the class's ``check_config`` (small models, so
the suite stays fast).

On the two-level problem the four fine classes have two coarse parents (0, 0, 1, 1); each sample
is labelled at one level, drawn at random, with its fine class or that class's parent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from learners import registry
from learners.base import Learner, Problem
from learners.capabilities import (
    DriftAction,
    FusedPrediction,
    MultiLevelPrediction,
    PurePrediction,
    SequentialLearner,
    mergeable,
    supported_actions,
)
from learners.state.learner_state import LearnerState
from learners.state.safetensors_io import state_from_bytes, state_to_bytes

NUM_CLASSES = 4
PARENTS = (0, 0, 1, 1)
LEVELS = (1, 2)

Check = Callable[[str, int], None]
Stream = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_problem(name: str, levels: int = 1) -> Problem:
    shape = registry.get(name).check_input_shape
    if levels == 1:
        return Problem(input_shape=shape, num_classes=(NUM_CLASSES,))
    return Problem(
        input_shape=shape,
        num_classes=(max(PARENTS) + 1, NUM_CLASSES),
        level_names=("coarse", "fine"),
        parents=(PARENTS,),
    )


def make(name: str, levels: int = 1, seed: int = 0, device: str = "cpu") -> Learner:
    options = {**registry.get(name).check_config, "seed": seed}
    return registry.create(name, check_problem(name, levels), options, device)


def blobs(
    name: str, n: int, seed: int, classes: list[int] | None = None, levels: int = 1
) -> Stream:
    """Well-separated Gaussian blobs of the fine ``classes``, shaped like the learner's check
    input: (x, y, level), each sample labelled at a random level (its fine class at the finest
    level, that class's parent at the coarse one)."""
    shape = registry.get(name).check_input_shape
    dim = 1
    for size in shape:
        dim *= size
    generator = torch.Generator().manual_seed(1000 + seed)
    centres = torch.randn(NUM_CLASSES, dim, generator=torch.Generator().manual_seed(7)) * 3.0
    pool = torch.tensor(classes if classes is not None else list(range(NUM_CLASSES)))
    fine = pool[torch.randint(0, len(pool), (n,), generator=generator)]
    x = centres[fine] + 0.5 * torch.randn(n, dim, generator=generator)
    if len(shape) > 1:
        x = torch.sigmoid(x)  # image-like inputs live in [0, 1]
    level = torch.randint(0, levels, (n,), generator=generator)
    y = torch.where(level == levels - 1, fine, torch.tensor(PARENTS)[fine])
    return x.reshape(n, *shape), y, level


def labels_at(y: torch.Tensor, level: torch.Tensor, at: int, levels: int) -> torch.Tensor:
    """The level-``at`` label of every sample of a :func:`blobs` stream (fine → coarse by
    parent; a coarse label has no single fine class, so ``at`` must not be finer than it)."""
    if at == levels - 1:
        return y
    return torch.where(level == levels - 1, torch.tensor(PARENTS)[y], y)


def stream_through(
    learner: Learner, stream: Stream, batch: int = 10, prequential: bool = False
) -> list[torch.Tensor]:
    """Learn ``stream`` in batches; with ``prequential`` predict each batch (at every level)
    first, as the engine does, and return those scores."""
    x, y, level = stream
    scores = []
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        if prequential:
            scores += [learner.predict(x[rows], lvl) for lvl in range(learner.problem.num_levels)]
        learner.learn(x[rows], y[rows], level[rows], iterations=1)
    return scores


def accuracies(learner: Learner, stream: Stream) -> list[float]:
    """Accuracy at each level of ``learner`` on ``stream`` (every sample, at every level it has
    a label for: all at the coarse level, the finest-labelled ones at the finest)."""
    x, y, level = stream
    levels = learner.problem.num_levels
    result = []
    for at in range(levels):
        rows = torch.ones_like(y, dtype=torch.bool) if at < levels - 1 else level == at
        truth = labels_at(y, level, at, levels)[rows]
        predicted = learner.predict(x[rows], at).argmax(1).cpu()
        result.append(float((predicted == truth).float().mean()))
    return result


def all_scores(learner: Learner, x: torch.Tensor) -> list[torch.Tensor]:
    return [learner.predict(x, lvl).cpu() for lvl in range(learner.problem.num_levels)]


def assert_same_scores(
    mine: list[torch.Tensor], theirs: list[torch.Tensor], tolerance: float, what: str
) -> None:
    """Equal scores: bit for bit with ``tolerance`` 0, else the same ``-inf`` pattern and
    finite scores within ``tolerance`` relative to their largest magnitude."""
    for a, b in zip(mine, theirs, strict=True):
        if tolerance == 0:
            assert torch.equal(a, b), what
            continue
        assert torch.equal(torch.isinf(a), torch.isinf(b)), what
        finite = torch.isfinite(b)
        scale = float(b[finite].abs().max()) if bool(finite.any()) else 0.0
        error = float((a[finite] - b[finite]).abs().max()) if bool(finite.any()) else 0.0
        assert error <= tolerance * max(scale, 1e-12), f"{what} (relative error {error / scale})"


# -- every learner ------------------------------------------------------------------------------


def check_predicts_before_learning(name: str, levels: int) -> None:
    """Before any sample a learner answers with the right shape and knows no class (-inf)."""
    learner = make(name, levels)
    x, _, _ = blobs(name, 8, seed=1, levels=levels)
    for lvl, scores in enumerate(all_scores(learner, x)):
        k = learner.problem.num_classes[lvl]
        assert scores.shape == (8, k), f"{name}: level {lvl} scores shape {tuple(scores.shape)}"
        assert bool((scores == float("-inf")).all()), f"{name}: scores a class before learning"


def check_learns_in_a_single_pass(name: str, levels: int) -> None:
    learner = make(name, levels)
    stream_through(learner, blobs(name, 300 * levels, seed=2, levels=levels))
    for lvl, acc in enumerate(accuracies(learner, blobs(name, 200, seed=3, levels=levels))):
        assert acc >= 0.6, f"{name}: level {lvl} accuracy {acc:.2f} after one pass over blobs"


def check_new_class_mid_batch(name: str, levels: int) -> None:
    learner = make(name, levels)
    stream_through(learner, blobs(name, 60, seed=4, classes=[0, 1], levels=levels))
    x_new, y_new, _ = blobs(name, 9, seed=5, classes=[2], levels=1)
    x_mix, y_mix, level_mix = blobs(name, 10, seed=6, classes=[0, 1], levels=levels)
    # The new (fine) class first appears in the middle of a batch.
    finest = torch.tensor([levels - 1])
    x = torch.cat([x_mix[:5], x_new[:1], x_mix[5:]])
    y = torch.cat([y_mix[:5], y_new[:1], y_mix[5:]])
    level = torch.cat([level_mix[:5], finest, level_mix[5:]])
    learner.learn(x, y, level, iterations=1)
    stream_through(learner, blobs(name, 120 * levels, seed=7, classes=[0, 1, 2], levels=levels))
    xt, yt, _ = blobs(name, 60, seed=8, classes=[2], levels=1)
    acc = float((learner.predict(xt, levels - 1).argmax(1).cpu() == yt).float().mean())
    assert acc >= 0.5, f"{name}: new class predicted with accuracy {acc:.2f}"


def check_untaught_classes_never_predicted(name: str, levels: int) -> None:
    """Classes the learner was never taught score ``-inf`` at every level, however it learns
    (with a hierarchy, coarse labels teach nothing at the fine level and vice versa)."""
    learner = make(name, levels)
    stream = blobs(name, 80, seed=16, classes=[0, 1], levels=levels)
    stream_through(learner, stream, prequential=True)
    _, y, level = stream
    x_any, _, _ = blobs(name, 40, seed=17, levels=levels)
    for lvl, scores in enumerate(all_scores(learner, x_any)):
        taught = torch.zeros(learner.problem.num_classes[lvl], dtype=torch.bool)
        taught[y[level == lvl]] = True
        assert bool((scores[:, ~taught] == float("-inf")).all()), (
            f"{name}: level {lvl} scores a class it was never taught"
        )
        if bool(taught.any()):
            assert bool(taught[scores.argmax(1)].all()), f"{name}: predicts an untaught class"


def check_checkpoint_round_trip(name: str, levels: int) -> None:
    """Saving changes nothing (``state_dict`` is pure), and a learner restored from the
    checkpoint goes on as the uninterrupted one: equal predictions, then equal learning."""
    saved, untouched = make(name, levels, seed=3), make(name, levels, seed=3)
    first = blobs(name, 74, seed=9, levels=levels)
    # small batches, so that a learner's caches (a factorisation updated per batch) live on
    stream_through(saved, first, batch=4, prequential=True)
    stream_through(untouched, first, batch=4, prequential=True)
    data = state_to_bytes(saved.state_dict())
    assert state_to_bytes(saved.state_dict()) == data, f"{name}: two saves in a row differ"
    restored = make(name, levels, seed=3)
    restored.load_state_dict(state_from_bytes(data))
    tolerance = registry.get(name).restore_tolerance
    xt, _, _ = blobs(name, 50, seed=10, levels=levels)
    second = blobs(name, 40, seed=11, levels=levels)
    for step in ("after restore", "after learning on"):
        reference = all_scores(untouched, xt)
        assert_same_scores(all_scores(saved, xt), reference, 0.0, f"{name}: saving changed it")
        assert_same_scores(
            all_scores(restored, xt), reference, tolerance, f"{name}: differs {step}"
        )
        for learner in (saved, untouched, restored):
            stream_through(learner, second, batch=4, prequential=True)


def check_a_state_of_other_shapes_or_labels_is_refused(name: str, levels: int) -> None:
    """A checkpoint is outside bytes. Any tensor of a learned state given one row more (another
    shape than this learner writes), and any integer tensor set to a value no label space holds,
    is refused by ``load_state_dict`` (an error that names it) or, where the value is one a
    learner may hold (a stream id), loads into a learner that then predicts and learns.
    Before, several loaded and failed only at the next batch, or misread a tensor silently."""
    learner = make(name, levels, seed=1)
    stream_through(learner, blobs(name, 40, seed=2, levels=levels), batch=8, prequential=True)
    state = learner.state_dict()
    x, y, level = blobs(name, 12, seed=3, levels=levels)
    for key, tensor in state.tensors.items():
        damaged: list[tuple[str, torch.Tensor]] = []
        if tensor.dim():
            damaged.append(("one row more", torch.cat([tensor, tensor[:1]])))
        if tensor.dtype in (torch.int32, torch.int64) and tensor.numel():
            damaged.append(("values of 10**6", torch.full_like(tensor, 10**6)))
        for what, value in damaged:
            restored = make(name, levels, seed=1)
            try:
                restored.load_state_dict(LearnerState({**state.tensors, key: value}, state.meta))
            except (ValueError, KeyError, RuntimeError):
                continue  # refused: what a daemon needs to fall back to an earlier checkpoint
            assert what != "one row more" or tensor.dtype == torch.uint8, (
                f"{name}: {key!r} with {what} was loaded"
            )  # (bytes: a sealed pickle or a generator state, checked when decoded)
            try:
                all_scores(restored, x)
                restored.learn(x, y, level)
            except Exception as exc:
                raise AssertionError(
                    f"{name}: {key!r} with {what} was loaded, then failed: {exc}"
                ) from None


def check_deterministic_under_seed(name: str, levels: int) -> None:
    runs = []
    for _ in range(2):
        learner = make(name, levels, seed=5)
        stream_through(learner, blobs(name, 60, seed=12, levels=levels), prequential=True)
        runs.append(all_scores(learner, blobs(name, 30, seed=13, levels=levels)[0]))
    assert_same_scores(runs[0], runs[1], 0.0, f"{name}: two runs with the same seed differ")


def check_inputs_not_mutated(name: str, levels: int) -> None:
    learner = make(name, levels)
    x, y, level = blobs(name, 30, seed=18, levels=levels)
    copies = (x.clone(), y.clone(), level.clone())
    stream_through(learner, (x, y, level), prequential=True)
    for lvl in range(levels):
        learner.predict(x, lvl)
    for given, copy in zip((x, y, level), copies, strict=True):
        assert torch.equal(given, copy), f"{name}: changed its input tensors"


def check_level_defaults_to_zero(name: str, levels: int) -> None:
    """``level`` None means level 0: in ``predict`` and, per sample, in ``learn``."""
    implicit, explicit = make(name, levels), make(name, levels)
    x, y, _ = blobs(name, 40, seed=19, classes=[0, 2], levels=1)
    y = labels_at(y, torch.full_like(y, levels - 1), 0, levels)  # labels at level 0
    for start in range(0, len(y), 10):
        rows = slice(start, start + 10)
        implicit.learn(x[rows], y[rows])
        explicit.learn(x[rows], y[rows], torch.zeros_like(y[rows]))
    assert_same_scores(
        [implicit.predict(x)], [explicit.predict(x, 0)], 0.0, f"{name}: level None is not 0"
    )


def check_runs_on_cpu(name: str, levels: int) -> None:
    learner = make(name, levels, device="cpu")
    x, y, level = blobs(name, 20, seed=14, levels=levels)
    stream_through(learner, (x, y, level))
    assert all(s.device.type == "cpu" for s in (learner.predict(x, lvl) for lvl in range(levels)))
    assert isinstance(learner.memory_samples, int) and learner.memory_samples >= 0


def check_iterations_zero_still_registers(name: str, levels: int) -> None:
    """``iterations=0`` (a fractional online_iter not yet reaching 1) must not break a learner."""
    learner = make(name, levels)
    x, y, level = blobs(name, 10, seed=15, levels=levels)
    learner.learn(x, y, level, iterations=0)
    for lvl in range(levels):
        assert learner.predict(x, lvl).shape == (10, learner.problem.num_classes[lvl])


# -- capabilities -------------------------------------------------------------------------------


def check_test_then_train_is_predict_then_learn_per_sample(name: str, levels: int) -> None:
    """A sequential learner's in-batch predictions are those of predicting each sample just
    before learning it alone, and it learns the same."""
    batched, single = make(name, levels), make(name, levels)
    assert isinstance(batched, SequentialLearner)
    x, y, level = blobs(name, 60, seed=20, levels=levels)
    for start in range(0, len(y), 12):
        rows = slice(start, start + 12)
        predicted = batched.test_then_train(x[rows], y[rows], level[rows]).tolist()
        for i in range(start, min(start + 12, len(y))):
            scores = single.predict(x[i : i + 1], int(level[i]))[0]
            expected = int(scores.argmax()) if bool(torch.isfinite(scores).any()) else -1
            assert predicted[i - start] == expected, f"{name}: sample {i} predicted differently"
            single.learn(x[i : i + 1], y[i : i + 1], level[i : i + 1])
    xt, _, _ = blobs(name, 20, seed=21, levels=levels)
    assert_same_scores(all_scores(batched, xt), all_scores(single, xt), 0.0, f"{name}: learned")


def check_drift_actions(name: str, levels: int) -> None:
    """Every declared drift action applies; ``reset`` forgets every class."""
    for action in sorted(supported_actions(make(name, levels)) - {DriftAction.NONE}):
        learner = make(name, levels)
        stream = blobs(name, 40, seed=22, levels=levels)
        stream_through(learner, stream)
        learner.on_drift(action)  # type: ignore[attr-defined]
        x = stream[0]
        if action is DriftAction.RESET:
            for scores in all_scores(learner, x):
                assert bool((scores == float("-inf")).all()), f"{name}: reset kept a class"
        stream_through(learner, stream)
        assert all(bool(torch.isfinite(s).any()) for s in all_scores(learner, x)), (
            f"{name}: learns nothing after {action.value}"
        )


def check_merge_equals_learning_the_union(name: str, levels: int) -> None:
    """Two learners that saw two halves of a stream merge into one that saw it all."""
    left, right, union = (make(name, levels, seed=4) for _ in range(3))
    first = blobs(name, 70, seed=23, classes=[0, 1, 2], levels=levels)
    second = blobs(name, 50, seed=24, classes=[1, 2, 3], levels=levels)
    stream_through(left, first)
    stream_through(right, second)
    stream_through(union, first)
    stream_through(union, second)
    left.merge(right)  # type: ignore[attr-defined]
    xt, _, _ = blobs(name, 40, seed=25, levels=levels)
    assert_same_scores(all_scores(left, xt), all_scores(union, xt), 1e-9, f"{name}: merged")
    try:
        left.merge(make(name, levels, seed=5))  # type: ignore[attr-defined]
    except ValueError:
        return
    raise AssertionError(f"{name}: merged a learner with another config")


def check_predicts_in_inference_mode(name: str, levels: int) -> None:
    """A learner declaring :class:`PurePrediction` is evaluated under ``torch.inference_mode``:
    the same predictions, and learning goes on after as if it had not been asked."""
    learner, twin = make(name, levels, seed=2), make(name, levels, seed=2)
    stream = blobs(name, 40, seed=26, levels=levels)
    stream_through(learner, stream)
    stream_through(twin, stream)
    xt, _, _ = blobs(name, 20, seed=27, levels=levels)
    with torch.inference_mode():
        inferred = all_scores(learner, xt)
    assert_same_scores(inferred, all_scores(twin, xt), 0.0, f"{name}: inference mode differs")
    more = blobs(name, 20, seed=28, levels=levels)
    stream_through(learner, more)
    stream_through(twin, more)
    assert_same_scores(
        all_scores(learner, xt), all_scores(twin, xt), 0.0, f"{name}: inference mode changed it"
    )


def check_fused_prediction_equals_two_calls(name: str, levels: int) -> None:
    """``predict_then_learn`` predicts what ``predict`` would (each row at its own level,
    padded with -inf), and learns what ``learn`` would, for every ``iterations`` the engine may
    pass; the scores it returned stay as they were through the calls after (they are the
    caller's)."""
    fused, plain = make(name, levels, seed=4), make(name, levels, seed=4)
    assert isinstance(fused, FusedPrediction)
    x, y, level = blobs(name, 60, seed=29, levels=levels)
    widest = max(plain.problem.num_classes)
    returned: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start, iterations in zip(range(0, 60, 10), (1, 1, 0, 2, 1, 1), strict=True):
        rows = slice(start, start + 10)
        expected = torch.full((10, widest), float("-inf"), dtype=torch.float64)
        for lvl in level[rows].unique().tolist():
            mine = level[rows] == lvl
            scores = plain.predict(x[rows][mine], lvl).cpu().double()
            expected[mine, : plain.problem.num_classes[lvl]] = scores
        plain.learn(x[rows], y[rows], level[rows], iterations)
        fused_scores = fused.predict_then_learn(x[rows], y[rows], level[rows], iterations)
        returned.append((fused_scores, fused_scores.detach().clone()))
        scores = fused_scores.cpu().double()
        assert_same_scores([scores], [expected], 1e-5, f"{name}: fused prediction differs")
        assert torch.equal(scores.argmax(1), expected.argmax(1)), f"{name}: fused argmax differs"
    xt, _, _ = blobs(name, 20, seed=30, levels=levels)
    assert_same_scores(all_scores(fused, xt), all_scores(plain, xt), 0.0, f"{name}: fused learns")
    for i, (kept, copy) in enumerate(returned):
        assert torch.equal(kept, copy), f"{name}: the scores of call {i} changed after it returned"


def check_predict_levels_equals_predict(name: str, levels: int) -> None:
    learner = make(name, levels)
    assert isinstance(learner, MultiLevelPrediction)
    stream = blobs(name, 30, seed=31, levels=levels)
    stream_through(learner, stream)
    every = list(range(levels))
    assert_same_scores(
        [s.cpu() for s in learner.predict_levels(stream[0], every)],
        all_scores(learner, stream[0]),
        0.0,
        f"{name}: predict_levels != predict",
    )


COMMON: tuple[Check, ...] = (
    check_predicts_before_learning,
    check_learns_in_a_single_pass,
    check_new_class_mid_batch,
    check_untaught_classes_never_predicted,
    check_checkpoint_round_trip,
    check_a_state_of_other_shapes_or_labels_is_refused,
    check_deterministic_under_seed,
    check_inputs_not_mutated,
    check_level_defaults_to_zero,
    check_runs_on_cpu,
    check_iterations_zero_still_registers,
)


def yield_checks(name: str) -> Iterator[Check]:
    """The checks that apply to learner ``name``: the common ones, then those of each
    capability its check configuration declares."""
    yield from COMMON
    learner = make(name)
    if isinstance(learner, SequentialLearner):
        yield check_test_then_train_is_predict_then_learn_per_sample
    if supported_actions(learner) != {DriftAction.NONE}:
        yield check_drift_actions
    if mergeable(learner):
        yield check_merge_equals_learning_the_union
    if isinstance(learner, PurePrediction):
        yield check_predicts_in_inference_mode
    if isinstance(learner, FusedPrediction):
        yield check_fused_prediction_equals_two_calls
    if isinstance(learner, MultiLevelPrediction):
        yield check_predict_levels_equals_predict
