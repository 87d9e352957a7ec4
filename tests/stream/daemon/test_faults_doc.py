"""docs/daemon.md "Faults": every fault row names a test, and every named test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_every_fault_is_backed_by_a_test_that_exists():
    doc = (ROOT / "docs" / "daemon.md").read_text()
    faults = doc[doc.index("## Faults") : doc.index("### Offset resets")]
    rows = [line for line in faults.splitlines() if line.startswith("| ") and "---" not in line]
    named = set()
    for row in rows[1:]:  # the first is the table's header
        tests = re.findall(r"`(test_\w+)(?:\[[^\]]*\])?`", row)
        assert tests, f"a fault without a test: {row[:80]}"
        named.update(tests)
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined.update(re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.M))
    assert sorted(named - defined) == []
    assert len(rows) >= 15
