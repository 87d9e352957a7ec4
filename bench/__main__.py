"""``python -m bench TOPIC [TOPIC ...] [OPTIONS]``: run the named benchmarks in turn;
``python -m bench all`` runs every one. ``python -m bench`` or ``python -m bench --help`` lists
the topics, and ``python -m bench TOPIC --help`` shows one topic's options.

Options after the topics (from the first argument starting with ``-``) go to each named one,
e.g. ``python -m bench loop --threads 1``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import bench

ALL = "all"


def topics() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
        if not m.name.startswith("_") and m.name != "output"
    )


def summary(topic: str) -> str:
    """The first sentence of ``topic``'s docstring, read without importing it (a benchmark may
    import what this machine lacks)."""
    source = (Path(bench.__file__).parent / f"{topic}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    paragraph = " ".join(doc.split("\n\n", 1)[0].replace("-\n", "-").replace("``", "").split())
    sentence, sep, _ = paragraph.partition(". ")
    return sentence + ("." if sep else "")


def listing() -> str:
    names = topics()
    width = max(len(n) for n in [*names, ALL])
    lines = [
        "usage: python -m bench TOPIC [TOPIC ...] [OPTIONS]   (python -m bench TOPIC --help: its "
        "options)",
        "",
        "topics:",
        *(f"  {n:<{width}}  {summary(n)}" for n in names),
        f"  {ALL:<{width}}  every topic above, in turn",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(listing())
        return 0
    if not argv:
        print(listing(), file=sys.stderr)
        return 2
    if argv[0].startswith("-"):
        print(f"options go after a topic: python -m bench TOPIC {argv[0]} ...", file=sys.stderr)
        return 2
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    options = [a for a in argv[first_option:] if a != "--"]
    chosen = argv[:first_option]
    if chosen == [ALL]:
        chosen = topics()
    unknown = [t for t in chosen if t not in topics()]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(topics())} (or {ALL})",
            file=sys.stderr,
        )
        return 2
    for topic in chosen:
        print(f"== bench {topic}")
        importlib.import_module(f"bench.{topic}").main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
