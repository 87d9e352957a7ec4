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
an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.data.secret_file import read_secret_text


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
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise KafkaOptionsError(f"--option {text!r}: expected KEY=VALUE")
    try:
        parsed: Any = json.loads(value)
    except (ValueError, RecursionError):
        parsed = value
    return key.strip(), parsed


_ROLES = ("consumer", "producer", "admin")


def _defaults(role: str) -> dict[str, Any]:
    from kafka.admin.client import KafkaAdminClient
    from kafka.consumer.group import KafkaConsumer
    from kafka.producer.kafka import KafkaProducer

    cls = {"consumer": KafkaConsumer, "producer": KafkaProducer, "admin": KafkaAdminClient}[role]
    return dict(cls.DEFAULT_CONFIG)


def kafka_python_options(options: Mapping[str, Any], role: str) -> dict[str, Any]:
    """The options kafka-python's ``role`` client (consumer, producer, admin) accepts;
    :class:`KafkaOptionsError` for a name that no client accepts."""
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    known = {r: _defaults(r) for r in _ROLES}
    unknown = sorted(k for k in options if not any(k in names for names in known.values()))
    if unknown:
        raise KafkaOptionsError(
            f"kafka.options: kafka-python knows no option {', '.join(unknown)} "
            "(options use its argument names, e.g. security_protocol, sasl_plain_username)"
        )
    return {k: v for k, v in options.items() if k in known[role]}
