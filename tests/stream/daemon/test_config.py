"""The serve config: validated once, every error naming its field."""

from __future__ import annotations

import json

import pytest

from stream.daemon.config import ServeConfig, ServeConfigError, load_serve_config
from tests.support.serve_process import REPO

MINIMAL = {
    "kafka": {"bootstrap": "127.0.0.1:9092", "topic": "samples"},
    "problem": {"input_shape": [64], "num_classes": [10]},
    "learner": {"name": "nmc"},
    "checkpoint": {"dir": "ckpt"},
    "dead_letter": {"file": "dead.jsonl"},
}


def _write(tmp_path, config, suffix=".json"):
    path = tmp_path / f"serve{suffix}"
    path.write_text(json.dumps(config))
    return path


def test_a_minimal_config_gets_defaults(tmp_path):
    config = load_serve_config(_write(tmp_path, MINIMAL))
    assert config.kafka.client == "kafka-python" and config.kafka.group == "streamcl"
    assert config.messages.format == "auto" and config.loop.batch_size == 16


def test_toml_works_too(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(
        '[kafka]\nbootstrap = "h:1"\ntopic = "t"\nclient = "confluent"\n'
        '[evaluation]\ndataset = "digits"\n[learner]\nname = "nmc"\n'
        '[checkpoint]\ndir = "c"\nevery_samples = 5\n[dead_letter]\ntopic = "dead"\n'
    )
    config = load_serve_config(path)
    assert config.kafka.client == "confluent" and config.dead_letter.topic == "dead"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["kafka"].pop("topic"), "kafka.topic"),
        (lambda c: c["kafka"].update(bootstrap="nohost"), "kafka.bootstrap"),
        (lambda c: c["kafka"].update(client="java"), "kafka.client"),
        (lambda c: c["kafka"].update(heartbeat_interval_ms=20_000), "kafka"),
        (lambda c: c["checkpoint"].update(every_samples=0), "checkpoint.every_samples"),
        (lambda c: c["dead_letter"].update(topic="dead"), "dead_letter"),
        (lambda c: c["problem"].update(level_names=["a", "b"]), "problem"),
        (lambda c: c["problem"].update(level_names=["a"], num_classes=[2, 4]), "problem"),
        (lambda c: c["problem"].update(level_names=["a", "a"], num_classes=[2, 4]), "problem"),
        # a checkpoint's and an export's schema bound names to 256 characters: predict and
        # export refused the daemon's own checkpoint
        (lambda c: c["problem"].update(level_names=["a" * 257]), "problem.level_names.0"),
        (lambda c: c["problem"].update(num_classes=[2, 4], parents=[[0, 1]]), "problem"),
        (lambda c: c["problem"].update(num_classes=[2, 4], parents=[[0, 1, 2, 0]]), "problem"),
        (lambda c: c["kafka"].update(topic="bad topic/../x"), "kafka.topic"),
        (lambda c: c["kafka"].update(topic=".."), "kafka.topic"),
        (lambda c: c.update(dead_letter={"topic": "samples"}), "(root)"),
        (lambda c: c.update(predictions={"topic": "samples"}), "(root)"),
        (lambda c: c["checkpoint"].update(dir="/dev/null"), "checkpoint.dir"),
        (lambda c: c["dead_letter"].update(file="/"), "dead_letter.file"),
        (lambda c: c["learner"].update(threads=100_000), "learner.threads"),
        (
            lambda c: c.update(predictions={"topic": "p", "http_max_bytes": 1 << 40}),
            "predictions.http_max_bytes",
        ),
        (lambda c: c.pop("problem"), "(root)"),
        (lambda c: c.update(extra=1), "extra"),
        (lambda c: c.update(loop={"batch_size": -1}), "loop.batch_size"),
        (lambda c: c.update(predictions={}), "predictions.topic"),
        (lambda c: c.update(predictions={"topic": "p", "top_k": 0}), "predictions.top_k"),
        (
            lambda c: c.update(predictions={"topic": "p", "max_age_seconds": -1}),
            "predictions.max_age_seconds",
        ),
    ],
)
def test_errors_name_the_field(tmp_path, change, field):
    config = json.loads(json.dumps(MINIMAL))
    change(config)
    with pytest.raises(ServeConfigError) as error:
        load_serve_config(_write(tmp_path, config))
    assert f"{field}:" in str(error.value) and "serve" in str(error.value)


def test_the_model_validates_directly():
    assert ServeConfig.model_validate(MINIMAL).problem.num_classes == [10]


def test_the_deploy_config_is_a_valid_serve_config():
    config = load_serve_config(REPO / "deploy" / "streamcl" / "serve.toml")
    assert config.dead_letter.topic and config.evaluation.dataset == "digits"
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9100)


def test_serving_is_off_unless_configured_and_has_bounded_defaults():
    assert ServeConfig.model_validate(MINIMAL).predictions is None
    serving = ServeConfig.model_validate({**MINIMAL, "predictions": {"topic": "p"}}).predictions
    assert serving.top_k is None and serving.http and serving.max_pending == 100_000
    assert serving.max_age_seconds == 7 * 86400 and serving.max_pending_bytes == 64 << 20


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested deeper than a config can be"),
        ("deep.toml", b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        ("binary.json", b'{"kafka": "\xff\xfe"}', "byte 11: not UTF-8 text"),
        ("huge.toml", b"# " + b"a" * (5 << 20), "larger than 4194304 bytes"),
    ],
)
def test_a_hostile_config_file_is_one_clear_error_exit_2(tmp_path, capsys, name, content, problem):
    """A config too deep for Python's parsers used to end in 'failed: RecursionError' (exit 1),
    and a file of any size was read whole before it was parsed."""
    from stream.cli import main as cli

    path = tmp_path / name
    path.write_bytes(content)
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert problem in capsys.readouterr().err


def _float_fields(section_model):
    return [
        name
        for name, field in section_model.model_fields.items()
        if field.annotation in (float, float | None)
    ]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_no_float_option_of_any_section_takes_infinity_or_nan(value):
    """``poll_timeout_seconds = inf`` (TOML and JSON both spell it) was accepted and blocked
    every poll for ever; NaN fails the bounds already, infinity passed them."""
    defaults = ServeConfig.model_validate(MINIMAL)
    checked = 0
    for section, content in defaults:
        if not hasattr(type(content), "model_fields"):
            continue
        for name in _float_fields(type(content)):
            config = {**MINIMAL, section: {**MINIMAL.get(section, {}), name: value}}
            with pytest.raises(ValueError, match=f"{section}.{name}"):
                ServeConfig.model_validate(config)
            checked += 1
    assert checked >= 9


@pytest.mark.parametrize("learner", ["er", "acil", "mvp", "pl-fms", "uer", "slda"])
def test_no_float_option_of_a_learner_takes_infinity(learner):
    from learners import registry
    from learners.registry import LearnerConfigError

    model = registry.get(learner).config_model
    floats = _float_fields(model)
    assert floats, f"{learner} has float options"
    for name in floats:
        with pytest.raises(LearnerConfigError, match=name):
            registry.validate_config(learner, {name: float("inf")})


@pytest.mark.parametrize(
    "problem, field",
    [
        ({"input_shape": [1] * 5, "num_classes": [10]}, "problem.input_shape"),
        ({"input_shape": [64], "num_classes": [10] * 65}, "problem.num_classes"),
    ],
)
def test_a_problem_no_message_could_fit_is_refused(problem, field):
    """Five input dimensions passed the config although the wire refuses every such sample;
    100,000 hierarchy levels passed too."""
    with pytest.raises(ValueError, match=field):
        ServeConfig.model_validate({**MINIMAL, "problem": problem})


def test_the_reference_config_in_the_docs_is_a_config_the_daemon_takes(tmp_path):
    """docs/daemon.md's annotated config, as written: its [problem] and [evaluation] must agree
    (the page once declared [64] next to digits' [1, 8, 8], which the daemon refuses)."""
    from stream.daemon.serve import build_problem

    doc = (REPO / "docs" / "daemon.md").read_text()
    start = doc.index("```toml\n") + len("```toml\n")
    path = tmp_path / "serve.toml"
    path.write_text(doc[start : doc.index("```", start)])
    config = load_serve_config(path)
    problem, evaluator = build_problem(config)
    assert evaluator is not None and list(problem.input_shape) == config.problem.input_shape


@pytest.mark.parametrize(
    ("section", "option", "value"),
    [
        ("metrics", "port", True),  # bound http://127.0.0.1:1
        ("loop", "batch_size", True),
        ("checkpoint", "every_samples", False),
        ("messages", "max_task", True),
    ],
)
def test_a_boolean_where_a_number_goes_is_refused(tmp_path, section, option, value):
    """pydantic's lax mode read true as 1 and false as 0: ``port = false``, what a TOML user
    writes to turn the endpoint off, served on a random port."""
    with pytest.raises(ServeConfigError, match=f"{option}: {str(value).lower()} is not a number"):
        load_serve_config(
            _write(tmp_path, {**MINIMAL, section: {**MINIMAL.get(section, {}), option: value}})
        )


def test_false_turns_off_what_null_turns_off_since_toml_has_no_null(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(
        '[kafka]\nbootstrap = "h:1"\ntopic = "t"\n[problem]\ninput_shape = [4]\n'
        'num_classes = [3]\n[learner]\nname = "nmc"\n[checkpoint]\ndir = "c"\n'
        '[dead_letter]\nfile = "d.jsonl"\n[metrics]\nport = false\n[loop]\n'
        'eval_period = false\n[predictions]\ntopic = "answers"\nmax_age_seconds = false\n'
    )
    config = load_serve_config(path)
    assert config.metrics.port is None and config.loop.eval_period is None
    assert config.predictions is not None and config.predictions.max_age_seconds is None


def test_a_checkpoint_refused_for_its_learner_config_says_how_an_older_one_resumes():
    """Since a learner section given in part keeps the learner's defaults, the config that
    wrote an older checkpoint may validate to another learner config: the refusal says what
    to name so that it resumes."""
    from stream.daemon.checkpoint import CheckpointError
    from stream.daemon.serve import refuse_another_identity

    expected = {"learner": "nmc", "learner_config": {"seed": 0}}
    refuse_another_identity(dict(expected), expected, "checkpoint-1")
    with pytest.raises(CheckpointError, match=r"written for learner_config=.*backbone\.name"):
        refuse_another_identity({**expected, "learner_config": {"seed": 1}}, expected, "c")
    with pytest.raises(CheckpointError, match="learner='er'") as refused:
        refuse_another_identity({**expected, "learner": "er"}, expected, "c")
    assert "backbone.name" not in str(refused.value)
