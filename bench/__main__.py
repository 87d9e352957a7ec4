"""``python -m bench [TOPIC ...]``: run every benchmark (or the named ones) in turn."""

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
    chosen = argv or topics()
    unknown = [t for t in chosen if t not in topics()]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(topics())}",
            file=sys.stderr,
        )
        return 2
    for topic in chosen:
        print(f"== bench {topic}")
        importlib.import_module(f"bench.{topic}").main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
