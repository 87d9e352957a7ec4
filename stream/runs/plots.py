"""Anytime-accuracy curves as a PNG, one line per learner (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[float | None]]],
    path: str | Path,
    title: str = "Anytime accuracy",
) -> Path:
    """Write ``{label: [[samples_seen, accuracy], ...]}`` as a line plot to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, curve in curves.items():
        points = [(x, y) for x, y in curve if y is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker=".", linewidth=1.5, label=label)
    axes.set_xlabel("samples seen")
    axes.set_ylabel("accuracy on seen classes")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    if axes.lines:
        axes.legend(loc="lower right")
    else:  # no anytime evaluation (--eval-period 0): say so rather than an empty frame
        axes.text(0.5, 0.5, "no anytime evaluation in these runs", ha="center", va="center")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
