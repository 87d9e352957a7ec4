"""``streamcl serve --config FILE``: the long-lived daemon next to a Kafka topic (docs/daemon.md).

Logs are JSON lines on stderr (``--log-format console`` for people); ``/metrics`` and
``/healthz`` are served on ``metrics.host:metrics.port``. SIGTERM and SIGINT finish the current
batch, write a checkpoint and exit 0.

Scale-out (docs/scale-out.md): under ``torchrun`` (which sets ``RANK`` and ``WORLD_SIZE``) each
worker is one rank of :class:`~stream.daemon.scaleout.ScaleOutDaemon`, serving ``/metrics`` on
``metrics.port + LOCAL_RANK``. ``--workers N`` starts such a group of N workers on this machine
through ``torch.distributed.run`` (torchrun's module), which restarts the group when a worker
fails (``--max-restarts``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from stream import early_stop
from stream.cli.errors import REFUSAL_FILE_ENV, UsageError
from stream.daemon.aligned_checkpoint import AlignedCheckpoints
from stream.daemon.checkpoint_key import load_checkpoint_key
from stream.daemon.config import load_serve_config, resolve_kafka_secrets
from stream.daemon.distributed import World
from stream.daemon.endpoint_security import endpoint_limits, endpoint_security
from stream.daemon.predict_http import add_predict_route
from stream.daemon.scaleout import ScaleOutDaemon
from stream.daemon.serve import Daemon
from stream.observe.http_endpoint import start_metrics_server


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="the daemon: learn from a Kafka topic, checkpoint, export metrics",
        description="Consume a Kafka topic in a consumer group and learn every valid message "
        "exactly once, with checkpoints, a dead-letter sink and Prometheus metrics "
        "(docs/daemon.md).",
    )
    parser.add_argument("--config", required=True, help="serve config, a TOML or JSON file")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="learn one model with N worker processes on this machine (torchrun); default 1",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="with --workers: how often torchrun restarts the group after a worker failed",
    )
    # JSON log lines unless asked otherwise: a daemon's stderr goes to a log collector.
    parser.set_defaults(run=run, log_format="json")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.max_restarts < 0:
        raise UsageError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    config = resolve_kafka_secrets(load_serve_config(args.config), os.environ)
    key = load_checkpoint_key(config.checkpoint.key_file, os.environ)
    world = World.from_environment(os.environ)
    # A group's directory resumes as a group, of one worker too (a single daemon refuses it).
    scaled = args.workers > 1 or AlignedCheckpoints.found_in(config.checkpoint.dir)
    if scaled and world is None:
        return launch_workers(args.config, args.workers, args.max_restarts)
    metrics = config.metrics
    security = endpoint_security(metrics, os.environ) if metrics.port is not None else None
    daemon = (
        Daemon(config, checkpoint_key=key)
        if world is None
        else ScaleOutDaemon(config, world, checkpoint_key=key)
    )
    server = None
    if metrics.port is not None:
        port = metrics.port
        if world is not None and port != 0:
            port += world.local_rank
        try:
            server = start_metrics_server(
                daemon.telemetry,
                metrics.host,
                port,
                metrics.stall_seconds,
                endpoint_limits(metrics),
                security,
            )
            add_predict_route(server, daemon)
        except BaseException:
            daemon.close()
            raise

    def stop(signum: int, frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if early_stop.requested:  # asked while this worker was starting (stream/early_stop.py)
        daemon.stop()
    try:
        daemon.run()
    finally:
        if server is not None:
            server.stop()
    # A worker under torchrun exits 0 all the same (it logged final_checkpoint_failed): a
    # failed worker makes torchrun restart the group that is being stopped.
    return 1 if daemon.final_checkpoint_failed and world is None else 0


def launch_workers(config: str, workers: int, max_restarts: int) -> int:
    """Run ``workers`` ranks of this config under torchrun on this machine; its exit code.

    SIGTERM and SIGINT go to the workers themselves: each finishes its round, the group writes a
    last aligned checkpoint, every worker exits 0 and so does torchrun. (Signalled itself,
    torchrun would stop its workers the same way but report failure, with a traceback.) So
    torchrun runs in a process group of its own: Ctrl-C in a terminal, or a signal to this
    command's process group, reaches this process only, which forwards it. (systemd signals
    every process of the unit's cgroup: use ``KillMode=mixed``, docs/scale-out.md.)"""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(workers), "--max-restarts", str(max_restarts),
        "-m", "stream", "serve", "--config", config,
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="streamcl-launch-") as scratch:
        refusals = Path(scratch) / "refusals"
        env = {**os.environ, REFUSAL_FILE_ENV: str(refusals)}
        launcher = subprocess.Popen(
            command, process_group=0, env=env, preexec_fn=_stop_with_parent(os.getpid())
        )

        stopping: list[int] = []  # the signal to pass on
        signalled: set[int] = set()

        def forward(signum: int, frame: FrameType | None) -> None:
            stopping[:] = [signum]
            pass_on()

        def pass_on() -> None:
            """The stop signal to every worker not given it yet: torchrun may be between two
            groups (no workers) and start new ones later; signalled itself it would end with a
            traceback and exit 1, so it never is."""
            for pid in _children(launcher.pid):
                if pid not in signalled:
                    signalled.add(pid)
                    with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                        os.kill(pid, stopping[0])

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        while True:
            try:
                code = launcher.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping:
                    pass_on()
                if refusals.exists():
                    # a worker refused to start: restarting it would refuse again
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(launcher.pid, signal.SIGKILL)
        if refusals.exists():
            first = refusals.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
            raise WorkerRefused(first[0] if first else "a worker refused to start")
        return code


def _stop_with_parent(parent: int) -> Callable[[], None]:
    """For torchrun, run in the child before it starts: SIGTERM when this command dies (Linux
    ``PR_SET_PDEATHSIG``), so that a ``kill -9`` of ``serve --workers`` stops the group, with a
    last checkpoint, instead of leaving torchrun and its workers running with their locks held
    (torchrun signalled itself stops its workers; its own exit code is then no one's concern).
    Elsewhere nothing is done."""

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # this command died before the call: nothing would tell
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerRefused(UsageError):
    """A worker of ``serve --workers`` refused to start (its own exit 2): the group stops."""


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux /proc); empty where it cannot tell."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
        except OSError:
            continue
    return found
