"""The daemon's config file (``streamcl serve --config FILE``), validated once, at the edge.

A TOML (or JSON) file with one table per concern; see ``docs/daemon.md`` for a full example::

    [kafka]
    bootstrap = "127.0.0.1:9092"
    topic = "samples"

    [problem]
    input_shape = [64]
    num_classes = [10]

    [learner]
    name = "nmc"

    [checkpoint]
    dir = "/var/lib/streamcl"

Every error names the failing field, e.g. ``kafka.topic: Field required``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from learners.base import MAX_LEVELS, Problem
from learners.config_model import ConfigModel
from learners.registry import describe_validation_error
from stream.cli.config_file import load_config_file
from stream.engine.event_loop import LoopConfig
from stream.runs.model_file_schema import Name
from stream.sources.kafka_options import resolve_secrets
from stream.sources.wire import DEFAULT_MAX_ABS, DEFAULT_MAX_TASK, MAX_NDIM

# Default cut of a dead letter's value: well under the 1 MB message limit that Kafka brokers
# and clients default to, with room for the key and headers.
DEFAULT_MAX_VALUE_BYTES = 256 * 1024


class ServeConfigError(ValueError):
    """A serve config that does not validate; the message names the file and the field."""


class KafkaClientConfigError(ServeConfigError):
    """Options the Kafka client itself refuses (an unknown name, a bad value): a config error,
    reported before serving, never retried as if the broker were away."""


class _Section(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _topic_name(value: str) -> str:
    if value in (".", ".."):
        raise ValueError(f"a Kafka topic cannot be named {value!r}")
    return value


def bootstrap_hosts(value: str) -> str:
    """``value`` when it is ``HOST:PORT[,HOST:PORT...]`` with ports in 1..65535, else
    ``ValueError`` (a client given ``host:notaport`` failed deep inside with int())."""
    for host in value.split(","):
        name, sep, port = host.strip().rpartition(":")
        if not (sep and name and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {value!r}")
    return value


# What Kafka accepts as a topic name: checked here, not by a client at its first request.
Topic = Annotated[
    str,
    Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"),
    AfterValidator(_topic_name),
]


def _not_a_directory(path: Path | None) -> Path | None:
    if path is not None and path.is_dir():
        raise ValueError(f"{path} is a directory, expected a file")
    return path


def _a_directory(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    return path


class KafkaConfig(_Section):
    """Where the samples come from, and how the consumer behaves."""

    bootstrap: str = Field(description="HOST:PORT[,HOST:PORT...] of the brokers")
    topic: Topic
    group: str = Field("streamcl", min_length=1, description="consumer group id")
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    start_from: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition the checkpoint does not know starts"
    )
    session_timeout_ms: int = Field(10_000, gt=0)
    heartbeat_interval_ms: int = Field(1_000, gt=0)
    max_poll_interval_ms: int = Field(
        30_000, gt=0, description="also the group's rebalance timeout"
    )
    request_timeout_ms: int = Field(15_000, gt=0)
    fetch_max_wait_ms: int = Field(
        500,
        gt=0,
        description="how long the broker holds a fetch open when no data is there; requests "
        "on the same connection (the end-offset probe) queue behind it",
    )
    max_poll_records: int = Field(1_000, gt=0, description="messages taken per poll")
    poll_timeout_seconds: float = Field(0.5, gt=0)
    probe_interval_seconds: float = Field(
        5.0, gt=0, description="how often the end offsets are asked for (consumer lag, broker up)"
    )
    retry_backoff_seconds: float = Field(0.5, gt=0, description="first wait after a broker failure")
    retry_backoff_max_seconds: float = Field(30.0, gt=0, description="longest wait between retries")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="given to every Kafka client (consumer, dead-letter producer, admin): "
        "librdkafka names or kafka-python args; <name>_file / <name>_env read a secret",
    )

    @field_validator("bootstrap")
    @classmethod
    def _hosts(cls, value: str) -> str:
        return bootstrap_hosts(value)

    @model_validator(mode="after")
    def _timeouts(self) -> KafkaConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be smaller than session_timeout_ms")
        if self.session_timeout_ms > self.max_poll_interval_ms:
            raise ValueError("session_timeout_ms must not exceed max_poll_interval_ms")
        if self.fetch_max_wait_ms >= self.request_timeout_ms:
            raise ValueError("fetch_max_wait_ms must be smaller than request_timeout_ms")
        if self.retry_backoff_seconds > self.retry_backoff_max_seconds:
            raise ValueError("retry_backoff_seconds must not exceed retry_backoff_max_seconds")
        return self


class ProblemConfig(_Section):
    """The input and label space every message must fit."""

    input_shape: list[int] = Field(
        min_length=1, max_length=MAX_NDIM, description="one sample's shape, 1 to 4 dimensions"
    )
    num_classes: list[int] = Field(
        min_length=1,
        max_length=MAX_LEVELS,
        description="classes per hierarchy level, coarsest first",
    )
    # bounded as a checkpoint's and an export's schema bounds them, which predict and export read
    level_names: list[Name] | None = None
    parents: list[list[int]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ProblemConfig:
        if any(s <= 0 for s in self.input_shape) or any(k <= 0 for k in self.num_classes):
            raise ValueError("input_shape and num_classes must be positive")
        if self.level_names is not None and len(self.level_names) != len(self.num_classes):
            raise ValueError(f"level_names needs {len(self.num_classes)} names, one per level")
        if self.level_names is not None and len(set(self.level_names)) != len(self.level_names):
            raise ValueError(f"level_names must differ, got {self.level_names}")
        if self.parents is not None:
            # the tree's own checks (one map per finer level, classes in range)
            Problem(
                input_shape=tuple(self.input_shape),
                num_classes=tuple(self.num_classes),
                level_names=tuple(f"level{i}" for i in range(len(self.num_classes))),
                parents=tuple(tuple(p) for p in self.parents),
            )
        return self


class LearnerSection(_Section):
    name: str = Field(description="a registered learner (streamcl learners)")
    options: dict[str, Any] = Field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = Field(
        None,
        gt=0,
        le=1024,
        description="torch CPU threads; 1 suits small models next to a Kafka client",
    )


class EvaluationConfig(_Section):
    """Anytime evaluation on a dataset's test split (without it, prequential accuracy only)."""

    dataset: str = Field(description="digits, fashion-mnist[:DIR], cifar100:DIR, npz:PATH")


class CheckpointConfig(_Section):
    dir: Annotated[Path, AfterValidator(_a_directory)]
    every_samples: int = Field(
        10_000, gt=0, description="checkpoint after this many samples learned"
    )
    every_seconds: float = Field(60.0, gt=0, description="and at least this often while learning")
    keep: int = Field(3, ge=1, description="checkpoints kept; older ones are deleted")
    unhealthy_after_failures: int = Field(
        3, ge=1, description="/healthz fails after this many checkpoint failures in a row"
    )
    key_file: Path | None = Field(
        None,
        description="file holding the HMAC key that signs checkpoints (or env "
        "STREAMCL_CHECKPOINT_KEY); required when the state holds river objects",
    )
    history_file_bytes: int = Field(
        64 << 20, gt=0, description="evaluation history: a file is rotated at this size"
    )
    history_files: int = Field(16, ge=1, description="evaluation history files kept")


class DeadLetterConfig(_Section):
    """Where invalid messages go: a JSON-lines file or a Kafka topic (exactly one)."""

    file: Annotated[Path | None, AfterValidator(_not_a_directory)] = None
    topic: Topic | None = None
    max_value_bytes: int = Field(
        DEFAULT_MAX_VALUE_BYTES,
        gt=0,
        le=900_000,
        description="a dead letter keeps at most this much of the message value (under the "
        "broker's 1 MB message limit)",
    )
    spill_file: Annotated[Path | None, AfterValidator(_not_a_directory)] = Field(
        None,
        description="where letters the dead-letter topic refuses for good go; default "
        "dead-letters-spill.jsonl in checkpoint.dir",
    )
    file_bytes: int = Field(
        256 << 20,
        gt=0,
        description="a dead-letter file (or spill file) that reaches this size is renamed "
        "<file>.<n> and a new one begun",
    )
    files: int = Field(
        8, ge=1, description="rotated dead-letter files kept; older letters are deleted"
    )

    @model_validator(mode="after")
    def _one(self) -> DeadLetterConfig:
        if (self.file is None) == (self.topic is None):
            raise ValueError("give exactly one of file or topic")
        return self


class MessagesConfig(_Section):
    format: Literal["auto", "json", "binary"] = Field(
        "auto", description="auto tells binary micro-batches from JSON by their magic bytes"
    )
    max_bytes: int = Field(
        1 << 20, gt=0, description="larger messages are dead-lettered as oversized"
    )
    max_abs: float = Field(
        DEFAULT_MAX_ABS,
        gt=0,
        description="inputs with a value beyond +-max_abs are dead-lettered as out_of_range",
    )
    max_task: int = Field(
        DEFAULT_MAX_TASK,
        ge=0,
        le=DEFAULT_MAX_TASK * 10,
        description="task ids beyond this are dead-lettered as out_of_range",
    )


class MetricsConfig(_Section):
    """``/metrics`` and ``/healthz`` (stream/observe/http_endpoint.py)."""

    false_is_null = frozenset({"port"})  # TOML has no null: port = false, no endpoint

    host: str = Field("127.0.0.1", description="loopback unless a remote Prometheus scrapes it")
    port: int | None = Field(
        9100, ge=0, le=65535, description="null (or false): no endpoint; 0: any free port"
    )
    stall_seconds: float = Field(
        120.0, gt=0, description="/healthz fails after this long without a poll or a batch"
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="a request must arrive whole within this time"
    )
    max_connections: int = Field(128, ge=1, description="open connections at most")
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain: serve HTTPS")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    auth: Literal["none", "bearer", "basic"] = Field(
        "none", description="who may scrape: a bearer token or a basic-auth user"
    )
    username: str | None = Field(None, description="the basic-auth user")
    secret_file: Path | None = Field(
        None,
        description="file with the bearer token or basic-auth password "
        "(or env STREAMCL_METRICS_SECRET)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MetricsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if (self.auth == "basic") != (self.username is not None):
            raise ValueError("username goes with auth 'basic', and auth 'basic' needs it")
        return self


class PredictionsConfig(_Section):
    """Serving (docs/serving.md): answer prediction requests, join labels that come later."""

    false_is_null = frozenset({"max_age_seconds"})  # TOML: false, no age limit

    topic: Topic = Field(description="where the predictions are published")
    top_k: int | None = Field(
        None, gt=0, description="publish the k best classes per level; null: every class's score"
    )
    max_pending: int = Field(
        100_000, gt=0, description="requests kept waiting for their labels (oldest expire first)"
    )
    max_age_seconds: float | None = Field(
        7 * 86400.0,
        gt=0,
        description="a request older than this expires; null (or false): no age limit",
    )
    max_pending_bytes: int = Field(
        64 << 20, gt=0, description="bound on the pending inputs, which every checkpoint carries"
    )
    http: bool = Field(True, description="POST /predict on the metrics endpoint")
    http_max_bytes: int = Field(
        4 << 20, gt=0, le=256 << 20, description="largest POST /predict body (read whole)"
    )
    http_max_samples: int = Field(1024, gt=0, description="most samples in one POST /predict")


class SyncConfig(_Section):
    """Scale-out (``torchrun ... -m stream serve``): when the workers make their models one."""

    every_samples: int = Field(
        1_000, gt=0, description="sync point after the group learned this many samples"
    )
    every_seconds: float = Field(5.0, gt=0, description="and at least this often while learning")
    timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="a worker waiting longer than this for a peer fails (torchrun then restarts "
        "the group)",
    )


class ServeConfig(_Section):
    kafka: KafkaConfig
    learner: LearnerSection
    checkpoint: CheckpointConfig
    dead_letter: DeadLetterConfig
    problem: ProblemConfig | None = None
    evaluation: EvaluationConfig | None = None
    loop: LoopConfig = Field(default_factory=LoopConfig)
    messages: MessagesConfig = Field(default_factory=MessagesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    predictions: PredictionsConfig | None = None
    sync: SyncConfig = Field(default_factory=SyncConfig)

    @model_validator(mode="after")
    def _problem_known(self) -> ServeConfig:
        if self.problem is None and self.evaluation is None:
            raise ValueError("give [problem] or an [evaluation] dataset to take the problem from")
        return self

    @model_validator(mode="after")
    def _distinct_topics(self) -> ServeConfig:
        # a daemon reading its own dead letters refuses them again, for ever
        topics = {"kafka.topic": self.kafka.topic}
        for name, topic in (
            ("dead_letter.topic", self.dead_letter.topic),
            ("predictions.topic", None if self.predictions is None else self.predictions.topic),
        ):
            for other, taken in topics.items():
                if topic == taken:
                    raise ValueError(f"{name} must differ from {other} ({topic!r})")
            if topic is not None:
                topics[name] = topic
        return self


def resolve_kafka_secrets(config: ServeConfig, environ: Mapping[str, str]) -> ServeConfig:
    """``config`` with its Kafka options' ``*_file`` / ``*_env`` secrets read (at the edge)."""
    options = resolve_secrets(config.kafka.options, environ)
    return config.model_copy(update={"kafka": config.kafka.model_copy(update={"options": options})})


def load_serve_config(path: str | Path) -> ServeConfig:
    """Read and validate a serve config file."""
    raw = load_config_file(path)
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ServeConfigError(describe_validation_error(exc, f"serve config {path}")) from None
