"""``streamcl serve`` with ``[predictions]``: what the command refuses before starting."""

from __future__ import annotations

import json

from stream.cli import main as cli


def test_serving_predictions_under_scale_out_is_refused_in_one_line(tmp_path, capsys):
    config = {
        "kafka": {"bootstrap": "127.0.0.1:9", "topic": "samples"},
        "problem": {"input_shape": [4], "num_classes": [3]},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "ckpt")},
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "predictions": {"topic": "predictions"},
    }
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    assert cli.main(["serve", "--config", str(path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "[predictions] is served by a single daemon" in err and len(err.splitlines()) == 1
