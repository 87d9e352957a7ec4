"""The numbers of a daemon checkpoint's JSON section, checked when a daemon reads them back.

A checkpoint is outside bytes: its seal, without a key, says only that they are the bytes
written. Each reader here returns what a daemon resumes from or raises ``ValueError`` (the
daemon then passes the checkpoint over for the one before it), so that a number no daemon could
have written never reaches the consumer (a negative offset), the disk (an evaluation-history
file number that would unlink every history file after it) or Prometheus (a counter label per
key of a forged table).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from stream.engine.restored_values import restored_integer

MAX_PARTITIONS = 1 << 16
"""Partitions one checkpoint may record offsets for (Kafka's own limit per topic is lower)."""
MAX_REASONS = 64
"""Distinct dead-letter reasons a checkpoint may count (streamcl has about twenty)."""
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")


def restored_offsets(offsets: Any, where: str = "checkpoint offsets") -> dict[int, int]:
    """``{partition: next offset}`` from ``{"<partition>": offset}``."""
    if not isinstance(offsets, dict) or len(offsets) > MAX_PARTITIONS:
        raise ValueError(f"{where}: not a table of at most {MAX_PARTITIONS} partitions")
    restored = {}
    for partition, offset in offsets.items():
        if not isinstance(partition, str) or not partition.isdigit() or len(partition) > 10:
            raise ValueError(f"{where}: partition {str(partition)[:20]!r} is not a partition")
        restored[int(partition)] = restored_integer(offset, where, f"offset of {partition}", 0)
    return restored


def restored_counters(counters: Any) -> tuple[int, Counter[str]]:
    """The messages read and the invalid messages by reason."""
    where = "checkpoint counters"
    if not isinstance(counters, dict):
        raise ValueError(f"{where}: not a table")
    messages = restored_integer(counters.get("messages"), where, "messages", 0)
    invalid = counters.get("invalid")
    if not isinstance(invalid, dict) or len(invalid) > MAX_REASONS:
        raise ValueError(f"{where}: invalid messages are not a table of at most {MAX_REASONS}")
    by_reason: Counter[str] = Counter()
    for reason, count in invalid.items():
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise ValueError(f"{where}: {str(reason)[:40]!r} is not a reason code")
        by_reason[reason] = restored_integer(count, where, f"count of {reason}", 0)
    return messages, by_reason


def restored_history_position(position: Any) -> dict[str, int]:
    """Where the evaluation history resumes: its file number (from 1) and length."""
    where = "checkpoint history position"
    if not isinstance(position, dict):
        raise ValueError(f"{where}: not a table")
    return {
        "file": restored_integer(position.get("file"), where, "file", 1, 1_000_000),
        "bytes": restored_integer(position.get("bytes"), where, "bytes", 0),
    }
