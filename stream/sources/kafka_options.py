"""Kafka client options: one set for every client, with secrets from env vars or files.

``kafka.options`` in the serve config (``publish --option K=V`` / ``--options-file``) holds what
every client of the process needs to reach the cluster: TLS and SASL settings above all. The
same options reach the consumer, the dead-letter producer, the admin client that creates topics
and ``streamcl publish``'s producer. Option names are the client's own: kafka-python's
constructor arguments (``security_protocol``, ``sasl_plain_password``) or librdkafka's
properties (``security.protocol``, ``sasl.password``).

A secret need not be written into the file: ``<name>_file = "/run/secrets/kafka"`` reads the
value of ``<name>`` from a file (a trailing newline dropped) and ``<name>_env = "KAFKA_PASSWORD"``
from an environment variable, once, at start (:func:`resolve_secrets`). Resolved values are
:class:`Secret` strings, whose ``repr`` is masked, so a log line or an error that prints the
options does not print the password.

kafka-python's producer, consumer and admin client each refuse arguments they do not know, so
each gets the options it accepts (:func:`kafka_python_options`); a name none of them accepts is
an error. kafka-python checks few values: ``acks="banana"`` or ``retries=-1`` went unnoticed
until its I/O thread failed, logging a traceback per request for a minute. So every value is
checked here against the kind of its default (a bool, a count, a text, one of a few names), and
the options that take Python objects (serializers, an SSL context) are refused: a config
cannot give them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stream.data.option_value import option_value
from stream.data.secret_file import read_secret_text
from stream.sources.wire import short


class KafkaOptionsError(ValueError):
    """An option that cannot be resolved or that no client accepts; the message names it."""


class Secret(str):
    """A string whose ``repr`` does not show it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def resolve_secrets(
    options: Mapping[str, Any], environ: Mapping[str, str], where: str = "kafka.options"
) -> dict[str, Any]:
    """``options`` with every ``<name>_file`` / ``<name>_env`` replaced by ``<name>``'s value."""
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        for suffix in ("_file", "_env"):
            if key.endswith(suffix) and len(key) > len(suffix):
                name = key[: -len(suffix)]
                if name in options:
                    raise KafkaOptionsError(f"{where}: give {name} or {key}, not both")
                resolved[name] = Secret(_read(str(value), suffix, f"{where}.{key}", environ))
                break
        else:
            resolved[key] = value
    return resolved


def _read(value: str, suffix: str, where: str, environ: Mapping[str, str]) -> str:
    if suffix == "_env":
        if value not in environ:
            raise KafkaOptionsError(f"{where}: environment variable {value} is not set")
        return environ[value]
    return read_secret_text(value, f"{where}: cannot read {value}", KafkaOptionsError)


def parse_option(text: str) -> tuple[str, Any]:
    """``K=V`` from the command line; V as JSON when it parses (numbers, booleans, a quoted
    string), else text.

    >>> parse_option("request_timeout_ms=5000"), parse_option('sasl_plain_username="007"')
    (('request_timeout_ms', 5000), ('sasl_plain_username', '007'))
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise KafkaOptionsError(f"--option {text!r}: expected KEY=VALUE")
    return key.strip(), option_value(value)


_ROLES = ("consumer", "producer", "admin")


def _defaults(role: str) -> dict[str, Any]:
    from kafka.admin.client import KafkaAdminClient
    from kafka.consumer.group import KafkaConsumer
    from kafka.producer.kafka import KafkaProducer

    cls = {"consumer": KafkaConsumer, "producer": KafkaProducer, "admin": KafkaAdminClient}[role]
    return dict(cls.DEFAULT_CONFIG)


def kafka_python_options(options: Mapping[str, Any], role: str) -> dict[str, Any]:
    """The options kafka-python's ``role`` client (consumer, producer, admin) accepts;
    :class:`KafkaOptionsError` for a name that no client accepts or a value it cannot take."""
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    known = {r: _defaults(r) for r in _ROLES}
    unknown = sorted(k for k in options if not any(k in names for names in known.values()))
    if unknown:
        raise KafkaOptionsError(
            f"kafka.options: kafka-python knows no option {', '.join(unknown)} "
            "(options use its argument names, e.g. security_protocol, sasl_plain_username)"
        )
    defaults = {k: v for names in known.values() for k, v in names.items()}
    for name, value in options.items():
        wrong = _wrong_value(name, value, defaults[name])
        if wrong:
            raise KafkaOptionsError(f"kafka.options: {name} = {short(repr(value), 80)}: {wrong}")
    return {k: v for k, v in options.items() if k in known[role]}


# Values kafka-python takes for these (its own checks, where it has any, come late or never).
_NAMED = {
    "acks": (0, 1, -1, "all"),
    "security_protocol": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "compression_type": (None, "gzip", "snappy", "lz4", "zstd"),
    # smallest, largest: older names kafka-python still maps
    "auto_offset_reset": ("earliest", "latest", "none", "smallest", "largest"),
    "isolation_level": ("read_uncommitted", "read_committed"),
    "client_dns_lookup": ("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only"),
}
# Options whose default is None that take a Python object (a callable, a context).
_OBJECTS = {
    "key_serializer",
    "value_serializer",
    "key_deserializer",
    "value_deserializer",
    "ssl_context",
    "sasl_oauth_token_provider",
}
_COUNTS = {"receive_buffer_bytes", "send_buffer_bytes"}  # None by default: the OS's size
_INT32_MAX = 2**31 - 1


def _wrong_value(name: str, value: Any, default: Any) -> str | None:
    """What is wrong with ``value`` for kafka-python's option ``name`` (None: nothing)."""
    if name == "bootstrap_servers":
        return "the brokers are given by --bootstrap or kafka.bootstrap"
    if name in _NAMED or name == "sasl_mechanism":
        allowed = _NAMED[name] if name in _NAMED else _sasl_mechanisms()
        if not any(value == a and type(value) is type(a) for a in allowed):
            return "expected one of " + ", ".join("null" if a is None else repr(a) for a in allowed)
        return None
    if name == "socket_options":
        triples = isinstance(value, list) and all(
            isinstance(t, list) and len(t) == 3 and all(_is_count(v) for v in t) for t in value
        )
        return None if triples else "expected a list of [level, option, value] integer triples"
    if name == "api_version":
        version = value is None or (
            isinstance(value, str) and re.fullmatch(r"\d+(\.\d+){0,2}", value)
        )
        return None if version else 'expected null or a broker version such as "2.8.0"'
    if name in _OBJECTS or not (default is None or isinstance(default, bool | int | float | str)):
        return "takes a Python object, which a config cannot give"
    if name in _COUNTS or (isinstance(default, int) and not isinstance(default, bool)):
        if name in _COUNTS and value is None:
            return None
        return None if _is_count(value) else f"expected an integer from 0 to {_INT32_MAX}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, float):  # retries, consumer_timeout_ms: inf by default
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number and value >= 0 else "expected a number >= 0"
    # a text (a name, a path, a password), None by default for most
    if value is None and default is None:
        return None
    return None if isinstance(value, str) else "expected a text"


def _sasl_mechanisms() -> tuple[str, ...]:
    """The SASL mechanisms the installed kafka-python registers (AWS_MSK_IAM among them)."""
    from kafka.net.sasl import SASL_MECHANISMS

    return tuple(sorted(SASL_MECHANISMS))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT32_MAX
