"""Anytime evaluation on a held-out test set, restricted to the classes seen so far.

At an evaluation, for every hierarchy level, the test samples whose class at that level has
appeared in the stream are scored by the learner, unseen-class scores are masked out
(stream/engine/seen_classes.py, the rule the prequential accuracy shares), and the
accuracy and the per-class accuracies (0 for unseen classes, as the official code reports them)
are recorded. With a hierarchy, a coarse prediction also counts as correct when the parent of
the fine prediction is right (``either`` accuracy, as in the HLE code; see docs/metrics.md).

Evaluation runs without autograd (in inference mode for a learner whose ``predict`` changes
nothing, :class:`~learners.capabilities.PurePrediction`), in chunks of ``batch_size`` test
samples. With a hierarchy, a learner that scores every level from one backbone pass
(:class:`~learners.capabilities.MultiLevelPrediction`) is asked once per chunk of the test
samples any level needs, instead of once per level (and again for the ``either`` accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from learners.base import Learner, Problem
from learners.capabilities import MultiLevelPrediction, PurePrediction
from stream.data.datasets import Dataset, as_float_tensor
from stream.engine.seen_classes import SeenClasses

# rows of the test set, level -> the learner's predictions for them at that level
Predictions = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Evaluation:
    """One anytime evaluation: pooled accuracy and per-level details."""

    samples_seen: int
    accuracy: float | None
    level_accuracy: list[float | None]
    class_accuracy: list[np.ndarray]
    either_accuracy: list[float | None] = field(default_factory=list)
    # test samples (of seen classes) the learner gave no prediction for: every seen class
    # scored NaN or -inf, as a diverged model's do; counted as wrong. Not kept in checkpoints:
    # it is reported when the evaluation is made (stream/observe/loop_log.py).
    unanswered: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples_seen": self.samples_seen,
            "accuracy": self.accuracy,
            "level_accuracy": self.level_accuracy,
            "class_accuracy": [acc.tolist() for acc in self.class_accuracy],
            "either_accuracy": self.either_accuracy,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Evaluation:
        return cls(
            samples_seen=int(raw["samples_seen"]),
            accuracy=raw["accuracy"],
            level_accuracy=list(raw["level_accuracy"]),
            class_accuracy=[np.asarray(a, dtype=np.float64) for a in raw["class_accuracy"]],
            either_accuracy=list(raw.get("either_accuracy", [])),
        )


def _answers(predicted: np.ndarray, answered: np.ndarray | None) -> torch.Tensor:
    """Predicted classes, -1 (no label's class) where the learner gave no prediction: a
    row's argmax over NaN or all ``-inf`` scores is class 0, which counted as a hit for
    every test sample of class 0 (prequential accuracy leaves such rows out instead)."""
    if answered is not None:
        predicted = np.where(answered, predicted, -1)
    return torch.from_numpy(predicted)


class AnytimeEvaluator:
    """Scores a learner on the test samples of seen classes, per hierarchy level."""

    def __init__(
        self,
        x_test: torch.Tensor,
        y_test_levels: torch.Tensor,
        problem: Problem,
        batch_size: int = 512,
    ) -> None:
        if y_test_levels.ndim != 2 or y_test_levels.shape[1] != problem.num_levels:
            raise ValueError("y_test_levels must be [m, num_levels]")
        self.x_test = x_test
        self.y_test_levels = y_test_levels.long()
        self.problem = problem
        self.batch_size = batch_size
        self.parents = [torch.tensor(p, dtype=torch.long) for p in problem.parents]

    @classmethod
    def on_test_split(
        cls, dataset: Dataset, problem: Problem, batch_size: int, device: torch.device
    ) -> AnytimeEvaluator:
        """The evaluator on ``dataset``'s test split (held on ``device``), as a replay and the
        daemon both build it."""
        assert dataset.y_test_levels is not None  # a Dataset always has them
        return cls(
            as_float_tensor(dataset.X_test).to(device),
            torch.from_numpy(dataset.y_test_levels),
            problem,
            batch_size=batch_size,
        )

    def _predict(
        self, learner: Learner, rows: torch.Tensor, level: int, seen: SeenClasses
    ) -> torch.Tensor:
        predictions = []
        for start in range(0, len(rows), self.batch_size):
            x = self.x_test[rows[start : start + self.batch_size]].to(learner.device)
            predictions.append(_answers(*seen.argmax(learner.predict(x, level), level)))
        return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)

    def _predictions(
        self, learner: Learner, seen: SeenClasses, test_rows: list[torch.Tensor]
    ) -> Predictions:
        """How to get the learner's predictions for test rows at a level."""
        if self.problem.num_levels == 1 or not isinstance(learner, MultiLevelPrediction):
            return lambda rows, level: self._predict(learner, rows, level, seen)
        # every level's prediction for every test row that some level needs, one pass a chunk
        needed = torch.zeros(len(self.y_test_levels), dtype=torch.bool)
        for rows in test_rows:
            needed[rows] = True
        union = torch.nonzero(needed).flatten()
        table = torch.full((len(needed), self.problem.num_levels), -1, dtype=torch.long)
        levels = [lvl for lvl in range(self.problem.num_levels) if bool(seen[lvl].any())]
        for start in range(0, len(union), self.batch_size):
            chunk = union[start : start + self.batch_size]
            scores = learner.predict_levels(self.x_test[chunk].to(learner.device), levels)
            for lvl, level_scores in zip(levels, scores, strict=True):
                table[chunk, lvl] = _answers(*seen.argmax(level_scores, lvl))
        return lambda rows, level: table[rows, level]

    def evaluate(
        self,
        learner: Learner,
        seen: SeenClasses | Sequence[torch.Tensor | np.ndarray],
        samples_seen: int,
    ) -> Evaluation:
        """Evaluate ``learner`` given the classes seen in the stream (or their per-level masks)."""
        if not isinstance(seen, SeenClasses):
            seen = SeenClasses.from_masks(seen)
        with torch.inference_mode() if isinstance(learner, PurePrediction) else torch.no_grad():
            return self._evaluate(learner, seen, samples_seen)

    def _evaluate(self, learner: Learner, seen: SeenClasses, samples_seen: int) -> Evaluation:
        test_rows = [
            torch.nonzero(torch.from_numpy(seen[level])[self.y_test_levels[:, level]]).flatten()
            for level in range(self.problem.num_levels)
        ]
        predict = self._predictions(learner, seen, test_rows)
        level_accuracy: list[float | None] = []
        class_accuracy: list[np.ndarray] = []
        predictions: list[torch.Tensor | None] = []
        hits_total, count_total, unanswered = 0, 0, 0
        for level in range(self.problem.num_levels):
            labels = self.y_test_levels[:, level]
            rows = test_rows[level]
            per_class = np.zeros(self.problem.num_classes[level])
            if len(rows) == 0:
                level_accuracy.append(None)
                class_accuracy.append(per_class)
                predictions.append(None)
                continue
            predicted = predict(rows, level)
            predictions.append(predicted)
            unanswered += int((predicted < 0).sum())
            hits = predicted == labels[rows]
            hits_total += int(hits.sum())
            count_total += len(rows)
            level_accuracy.append(int(hits.sum()) / len(rows))
            k = self.problem.num_classes[level]
            correct = torch.bincount(labels[rows], weights=hits.double(), minlength=k)
            counts = torch.bincount(labels[rows], minlength=k).double()
            per_class = (correct / counts.clamp(min=1)).numpy()
            class_accuracy.append(per_class)
        either = self._either_accuracy(predict, seen, predictions, test_rows)
        return Evaluation(
            samples_seen=samples_seen,
            accuracy=hits_total / count_total if count_total else None,
            level_accuracy=level_accuracy,
            class_accuracy=class_accuracy,
            either_accuracy=either,
            unanswered=unanswered,
        )

    def _either_accuracy(
        self,
        predict: Predictions,
        seen: SeenClasses,
        predictions: list[torch.Tensor | None],
        test_rows: list[torch.Tensor],
    ) -> list[float | None]:
        """Per level below the finest, scored as the HLE code scores its coarse level: a test
        sample of a seen class is correct if this level's prediction is right or if the parent
        of the next finer level's prediction is. The finer prediction is made over the finer
        classes seen so far for every such sample, whether or not its own finer class was seen
        (HLE's fine head only has seen classes and is asked for every coarse test sample)."""
        if self.problem.num_levels == 1:
            return []
        either: list[float | None] = []
        for level in range(self.problem.num_levels - 1):
            coarse = predictions[level]
            if coarse is None:
                either.append(None)
                continue
            rows = test_rows[level]
            truth = self.y_test_levels[rows, level]
            hits = coarse == truth
            if bool(seen[level + 1].any()):
                finer = torch.full((len(self.y_test_levels),), -1, dtype=torch.long)
                known = predictions[level + 1]
                if known is not None:
                    finer[test_rows[level + 1]] = known
                missing = rows[finer[rows] < 0]
                if len(missing):
                    finer[missing] = predict(missing, level + 1)
                answers = finer[rows]
                parents = self.parents[level][answers.clamp(min=0)]
                hits = hits | ((parents == truth) & (answers >= 0))
            either.append(int(hits.sum()) / len(hits))
        return either
