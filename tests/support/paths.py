"""Where the repository is, for tests that run its files (deploy configs, the CLI)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
