"""The layering of the packages, checked on every import statement (nested ones included).

- ``stream/engine`` is the core: it imports nothing from sources, sinks, daemon, observe, runs or
  cli, so the event loop can run with any source and any observer.
- ``learners`` and ``memory`` never import ``stream``: a learner knows nothing of Kafka, files or
  Prometheus.
- ``memory`` imports from ``learners`` only its state plumbing (``learners/state``),
  ``learners/machine_memory`` and ``learners/config_model`` (which import neither package), so
  the two have no cycle.
- ``learners/linalg`` and ``learners/state`` import no learner (linalg states its parts in
  ``learners/state``'s one form).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def imports_of(package: str) -> dict[str, set[str]]:
    """Each module's imports, of a package or of one module (``package`` a ``.py`` path)."""
    root = ROOT / package
    paths = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    assert paths, f"no modules under {package}"
    return {str(path.relative_to(ROOT)): imported_modules(path) for path in paths}


def offenders(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for file, modules in imports_of(package).items():
        for module in sorted(modules):
            if module.startswith(allowed):
                continue
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{file} imports {module}")
    return found


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed"),
    [
        (
            "stream/engine",
            (
                "stream.sources",
                "stream.sinks",
                "stream.daemon",
                "stream.observe",
                "stream.runs",
                "stream.cli",
            ),
            (),
        ),
        ("learners", ("stream",), ()),
        (
            "memory",
            ("stream", "learners"),
            ("learners.state", "learners.machine_memory", "learners.config_model"),
        ),
        ("learners/machine_memory.py", ("learners", "memory"), ()),
        ("learners/config_model.py", ("learners", "memory"), ()),
        ("learners/linalg", ("learners", "memory"), ("learners.linalg", "learners.state")),
        ("learners/state", ("learners", "memory"), ("learners.state",)),
    ],
)
def test_layering(package, forbidden, allowed):
    assert offenders(package, forbidden, allowed) == []


def test_the_rule_sees_nested_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from stream.daemon import serve\n    import stream.cli\n")
    assert {"stream.daemon", "stream.daemon.serve", "stream.cli"} <= imported_modules(module)
