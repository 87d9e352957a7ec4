"""``streamcl serve --workers N``: bad counts are usage errors (exit 2) before anything starts."""

from __future__ import annotations

import pytest

from stream.cli import main as cli


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "2", "--max-restarts", "-1"], "--max-restarts must be >= 0, got -1"),
    ],
)
def test_a_bad_worker_count_is_a_usage_error(tmp_path, capsys, flags, message):
    assert cli.main(["serve", "--config", str(tmp_path / "absent.toml"), *flags]) == 2
    assert message in capsys.readouterr().err
