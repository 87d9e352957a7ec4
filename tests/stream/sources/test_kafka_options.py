"""stream/sources/kafka_options.py: one set of options reaches every Kafka client, secrets masked.

The broker here (tansu) can require SASL (``--authentication``, SCRAM users), but a user can
only be created over an authenticated connection, so no test cluster with a known password can
be made; these tests check instead that the options reach each client's constructor, with fake
clients standing in for kafka-python's and confluent-kafka's.
"""

from __future__ import annotations

import json
from typing import ClassVar

import kafka
import pytest

from stream.cli import main as cli
from stream.daemon.config import ServeConfig, resolve_kafka_secrets
from stream.daemon.serve import Daemon
from stream.sinks.kafka_sink import open_sink
from stream.sources.kafka_options import (
    KafkaOptionsError,
    Secret,
    kafka_python_options,
    resolve_secrets,
)
from stream.sources.kafka_source import open_source

SECURE = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "streamcl",
}


def test_secrets_come_from_files_and_env_and_do_not_show_in_repr(tmp_path):
    secret_file = tmp_path / "password"
    secret_file.write_text("from-a-file\n")
    options = resolve_secrets(
        {**SECURE, "sasl_plain_password_file": str(secret_file), "ssl_password_env": "SSL_PW"},
        {"SSL_PW": "from-env"},
    )
    assert options["sasl_plain_password"] == "from-a-file"
    assert options["ssl_password"] == "from-env"
    assert "sasl_plain_password_file" not in options
    assert "from-a-file" not in repr(options) and "from-env" not in repr(options)
    assert isinstance(options["sasl_plain_password"], Secret)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sasl_plain_password_env": "NOPE"}, "environment variable NOPE is not set"),
        ({"sasl_plain_password_file": "/no/such/file"}, "cannot read /no/such/file"),
        ({"sasl_plain_password": "x", "sasl_plain_password_env": "X"}, "not both"),
    ],
)
def test_unresolvable_secrets_are_one_clear_error(options, message):
    with pytest.raises(KafkaOptionsError, match=message):
        resolve_secrets(options, {"X": "x"})


def test_each_kafka_python_client_gets_the_options_it_accepts():
    options = {**SECURE, "max_partition_fetch_bytes": 1 << 20, "acks": "all"}
    assert kafka_python_options(options, "consumer") == {
        **SECURE, "max_partition_fetch_bytes": 1 << 20
    }  # fmt: skip
    assert kafka_python_options(options, "producer") == {**SECURE, "acks": "all"}
    assert kafka_python_options(options, "admin") == SECURE
    with pytest.raises(KafkaOptionsError, match="knows no option securty_protocol"):
        kafka_python_options({"securty_protocol": "SSL"}, "consumer")


class Recorder:
    """Stands in for every client class; records the keyword arguments of each construction."""

    made: ClassVar[list[tuple[str, dict]]] = []

    def __init__(self, *args, **kwargs):
        settings = args[0] if args and isinstance(args[0], dict) else kwargs
        Recorder.made.append((self.role, dict(settings)))

    def __getattr__(self, name):
        return lambda *a, **k: self._answer(name, *a, **k)

    def _answer(self, name, *args, **kwargs):
        if name in ("list_topics",):
            return ["samples", "dead"] if self.role.startswith("kp") else _Metadata()
        if name == "partitions_for":
            return {0}
        if name == "send":
            return _Done()
        if name == "create_topics":
            return {}
        return None


class _Done:
    is_done = True

    def failed(self):
        return False


class _Metadata:
    topic = type("T", (), {"error": None, "partitions": {0: None}})()
    topics: ClassVar[dict] = {"samples": topic, "dead": topic}


def _recorders(monkeypatch):
    import confluent_kafka
    import confluent_kafka.admin

    Recorder.made = []
    for module, name, role in [
        (kafka, "KafkaConsumer", "kp-consumer"),
        (kafka, "KafkaProducer", "kp-producer"),
        (kafka, "KafkaAdminClient", "kp-admin"),
        (confluent_kafka, "Consumer", "ck-consumer"),
        (confluent_kafka, "Producer", "ck-producer"),
        (confluent_kafka.admin, "AdminClient", "ck-admin"),
    ]:
        monkeypatch.setattr(module, name, type(name, (Recorder,), {"role": role}))


def _serve_config(tmp_path, client, options) -> ServeConfig:
    return ServeConfig.model_validate({
        "kafka": {"bootstrap": "127.0.0.1:9", "topic": "samples", "client": client,
                  "options": options},
        "problem": {"input_shape": [4], "num_classes": [3]},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "ckpt")},
        "dead_letter": {"topic": "dead"},
    })  # fmt: skip


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_the_daemons_options_reach_consumer_dead_letter_producer_and_admin(
    tmp_path, monkeypatch, client
):
    _recorders(monkeypatch)
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    if client == "kafka-python":
        options = {**SECURE, "sasl_plain_password_file": str(secret)}
        expected = {**SECURE, "sasl_plain_password": "hunter2"}
    else:
        options = {"security.protocol": "SASL_SSL", "sasl.password_file": str(secret)}
        expected = {"security.protocol": "SASL_SSL", "sasl.password": "hunter2"}
    config = resolve_kafka_secrets(_serve_config(tmp_path, client, options), {})
    daemon = Daemon(config)
    try:
        open_source(config.kafka, lambda partitions: {}, lambda problem: None)
        daemon.dead_letters.write("samples", 0, 0, b"bad", "not_json", "test")
        daemon.dead_letters.sink.ensure_topic("dead")
    finally:
        daemon.close()
    roles = {role.split("-")[1]: settings for role, settings in Recorder.made}
    assert set(roles) == {"consumer", "producer", "admin"}
    for role, settings in roles.items():
        assert expected.items() <= settings.items(), role


def test_publish_options_reach_its_producer_and_admin(tmp_path, monkeypatch):
    stream = tmp_path / "s.scl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(stream)]) == 0
    options_file = tmp_path / "kafka.json"
    options_file.write_text(json.dumps({"security_protocol": "SSL", "ssl_check_hostname": True}))
    monkeypatch.setenv("PUBLISH_PW", "from-env")
    _recorders(monkeypatch)
    code = cli.main([
        "publish", str(stream), "--bootstrap", "127.0.0.1:9", "--topic", "samples",
        "--options-file", str(options_file), "--option", "security_protocol=SASL_SSL",
        "--option", "sasl_plain_password_env=PUBLISH_PW", "--option", "sasl_mechanism=PLAIN",
    ])  # fmt: skip
    assert code == 0
    roles = {role for role, _ in Recorder.made}
    assert roles == {"kp-producer", "kp-admin"}
    for _, settings in Recorder.made:
        assert settings["security_protocol"] == "SASL_SSL"  # --option wins over the file
        assert settings["ssl_check_hostname"] is True
        assert settings["sasl_plain_password"] == "from-env"


def test_open_sink_passes_options_to_the_confluent_admin(monkeypatch):
    _recorders(monkeypatch)
    open_sink("confluent", "127.0.0.1:9", {"security.protocol": "SSL"}).ensure_topic("samples")
    assert all(s["security.protocol"] == "SSL" for _, s in Recorder.made)
