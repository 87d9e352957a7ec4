"""Where benchmarks write their figures: ``bench/out/<topic>.json`` (plus a printed table)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

OUT = Path(__file__).parent / "out"


def write(topic: str, results: dict[str, Any]) -> Path:
    """Save ``results`` with the machine they were measured on."""
    OUT.mkdir(parents=True, exist_ok=True)
    record = {
        "topic": topic,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        **results,
    }
    path = OUT / f"{topic}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
