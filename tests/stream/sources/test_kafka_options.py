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
from stream.daemon.config import KafkaClientConfigError, ServeConfig, resolve_kafka_secrets
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


GOOD_VALUES = {
    "acks": ["all", 0, 1, -1],
    "retries": [0, 5, float("inf")],
    "linger_ms": [0, 10],
    "ssl_check_hostname": [False],
    "ssl_cafile": ["/etc/ssl/ca.pem"],
    "compression_type": [None, "gzip"],
    "api_version": [None, "2.8.0", "3"],
    "receive_buffer_bytes": [None, 1 << 20],
    "socket_options": [[[6, 1, 1]]],
    "sasl_plain_password": [Secret("s3cret")],
    # what the installed client registers, and the older names it maps (a review found both
    # refused by a fixed list)
    "sasl_mechanism": ["PLAIN", "SCRAM-SHA-512", "AWS_MSK_IAM"],
    "auto_offset_reset": ["earliest", "smallest", "largest"],
}


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, values in GOOD_VALUES.items() for v in values]
)
def test_values_kafka_python_takes_pass(name, value):
    role = "consumer" if name in ("receive_buffer_bytes", "auto_offset_reset") else "producer"
    assert kafka_python_options({name: value}, role)[name] == value


# Each was taken before: kafka-python's I/O thread then failed on every request for a minute
# (acks, a negative count), waited 30 s to bootstrap (request_timeout_ms as text, socket
# options), or failed on the first send (batch_size as text).
BAD_VALUES = [
    ("acks", "banana", "expected one of 0, 1, -1, 'all'"),
    ("acks", True, "expected one of 0, 1, -1, 'all'"),
    ("acks", 2, "expected one of 0, 1, -1, 'all'"),
    ("retries", -1, "expected a number >= 0"),
    ("retries", float("nan"), "expected a number >= 0"),
    ("linger_ms", -5, "expected an integer from 0 to 2147483647"),
    ("request_timeout_ms", "x", "expected an integer from 0 to 2147483647"),
    ("batch_size", 2**40, "expected an integer from 0 to 2147483647"),
    ("metadata_max_age_ms", True, "expected an integer from 0 to 2147483647"),
    ("send_buffer_bytes", "x", "expected an integer from 0 to 2147483647"),
    ("ssl_check_hostname", "yes", "expected true or false"),
    ("security_protocol", "BOGUS", "expected one of 'PLAINTEXT', 'SSL'"),
    ("sasl_mechanism", "FOO", "expected one of 'AWS_MSK_IAM', 'GSSAPI', 'OAUTHBEARER', 'PLAIN'"),
    ("compression_type", "bogus", "expected one of null, 'gzip'"),
    ("client_id", 5, "expected a text"),
    ("api_version", "banana", 'expected null or a broker version such as "2.8.0"'),
    ("socket_options", "x", "expected a list of \\[level, option, value\\] integer triples"),
    ("value_serializer", "json", "takes a Python object, which a config cannot give"),
    ("partitioner", "x", "takes a Python object, which a config cannot give"),
    ("bootstrap_servers", "h:1", "the brokers are given by --bootstrap or kafka.bootstrap"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_values_kafka_python_cannot_take_are_refused_by_name(name, value, message):
    with pytest.raises(KafkaOptionsError, match=f"kafka.options: {name} = .*: {message}"):
        kafka_python_options({name: value}, "admin")  # whatever client takes it


def test_a_secret_in_a_bad_value_stays_masked():
    with pytest.raises(KafkaOptionsError) as refused:
        kafka_python_options({"sasl_mechanism": Secret("hunter2")}, "consumer")
    assert "hunter2" not in str(refused.value) and "'***'" in str(refused.value)


def test_publish_refuses_a_bad_value_at_once_with_one_line(tmp_path, capsys):
    """It logged the producer thread's tracebacks for a minute, then exit 1."""
    stream = tmp_path / "s.scl"
    assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(stream)]) == 0
    capsys.readouterr()
    code = cli.main(["publish", str(stream), "--bootstrap", "127.0.0.1:9", "--topic", "samples",
                     "--option", "acks=banana"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "kafka.options: acks = 'banana': expected one of 0, 1, -1, 'all'" in err


@pytest.mark.parametrize("options", [{"acks": "banana"}, {"securty_protocol": "SSL"}])
def test_the_daemons_source_and_sink_call_a_bad_option_a_config_error(tmp_path, options):
    """A config error is reported before serving, never retried as if the broker were away."""
    config = _serve_config(tmp_path, "kafka-python", {})
    kafka_config = config.kafka.model_copy(update={"options": options})
    with pytest.raises(KafkaClientConfigError, match=r"^kafka\.options: "):
        open_source(kafka_config, lambda partitions: {}, lambda problem: None)
    with pytest.raises(KafkaClientConfigError, match=r"^kafka\.options: "):
        open_sink("kafka-python", "127.0.0.1:9", options)
