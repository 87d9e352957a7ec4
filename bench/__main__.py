"""``python -m bench [TOPIC ...] [-- OPTIONS]``: run every benchmark (or the named ones) in turn.

Options after the topics (from the first argument starting with ``-``) go to each named one,
e.g. ``python -m bench loop --threads 1``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import bench


def topics() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
        if not m.name.startswith("_") and m.name != "output"
    )


def main(argv: list[str]) -> int:
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    options = [a for a in argv[first_option:] if a != "--"]
    chosen = argv[:first_option] or topics()
    unknown = [t for t in chosen if t not in topics()]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(topics())}",
            file=sys.stderr,
        )
        return 2
    for topic in chosen:
        print(f"== bench {topic}")
        importlib.import_module(f"bench.{topic}").main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
