"""stream/daemon/lineage.py: one id per checkpoint directory, whoever asks first."""

from __future__ import annotations

import threading

import pytest

from stream.daemon.config import ServeConfigError
from stream.daemon.lineage import LINEAGE_FILE, daemon_lineage


def test_a_directory_keeps_its_id_and_another_directory_gets_another(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = daemon_lineage(tmp_path / "a")
    assert daemon_lineage(tmp_path / "a") == first and len(first) == 32
    assert daemon_lineage(tmp_path / "b") != first


def test_ranks_starting_together_share_one_id(tmp_path):
    found: list[str] = []
    threads = [
        threading.Thread(target=lambda: found.append(daemon_lineage(tmp_path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and (tmp_path / LINEAGE_FILE).read_text().strip() == found[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LINEAGE_FILE]  # no temporaries left


def test_a_damaged_id_is_replaced_and_a_directory_in_its_place_is_a_config_error(tmp_path):
    (tmp_path / LINEAGE_FILE).write_text("not an id\n")
    made = daemon_lineage(tmp_path)
    assert len(made) == 32 and daemon_lineage(tmp_path) == made
    (tmp_path / LINEAGE_FILE).unlink()
    (tmp_path / LINEAGE_FILE).mkdir()
    (tmp_path / LINEAGE_FILE / "x").write_text("")
    with pytest.raises(ServeConfigError, match="cannot hold the daemon's lineage id"):
        daemon_lineage(tmp_path)
