"""A TCP proxy on loopback whose network faults a test switches at run time (issue 8).

    async with FaultProxy("127.0.0.1", pg_port) as proxy:
        dsn = proxy.route(server_dsn)       # the same DSN, through the proxy
        proxy.set_latency(upstream=Latency(0.05, jitter=0.02))
        proxy.reset()                       # RST every open connection, e.g. mid-transaction

Faults (each call replaces the previous fault, `pass_through()` ends them):
- latency, fixed plus uniform jitter, per direction; the byte stream keeps its order (TCP);
- `drop()`: nothing is forwarded any more and the connections are held open: a half-open
  connection, as when a firewall or NAT forgets the flow or the peer's host vanishes. The
  connections open during a drop stay dead after it (the peer would have to time out);
  when one side closes such a connection, the other side is reset once the network is back
  (a server does not hold an orphaned session for ever); new ones after `pass_through()`
  work again;
- `refuse()`: the listening socket is closed, so new connections get ECONNREFUSED, as from a
  stopped server; open connections go on. `pass_through()` listens again on the same port;
- `reset()`: every open connection is aborted with an RST (`SO_LINGER` 0 then close) on both
  sides, so the server sees the client vanish mid-request, and vice versa;
- `cut_after(n)`: each open or new connection is reset once `n` more bytes have passed in the
  given direction (e.g. after the client's COMMIT left, before the server's answer came).

Why our own: toxiproxy, the usual tool, needs its Go server binary, which cannot be installed
here; its Python clients only drive that server. This one is in-process, controlled by plain
method calls (no control API to wait for), and stops with the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Direction", "FaultProxy", "Latency", "ProxyStats"]

_CHUNK = 65536


class Direction(enum.Enum):
    """Which way bytes flow: from the client to the server (`UP`) or back (`DOWN`)."""

    UP = "upstream"
    DOWN = "downstream"


@dataclass(frozen=True)
class Latency:
    """Delay of every chunk in one direction: `fixed` seconds plus up to `jitter` more."""

    fixed: float = 0.0
    jitter: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """One delay."""
        return self.fixed + (rng.uniform(0.0, self.jitter) if self.jitter else 0.0)


_NO_LATENCY = Latency()


@dataclass
class ProxyStats:
    """What passed through the proxy since it started (bytes are those forwarded)."""

    connections: int = 0  # accepted and connected to the server
    open_connections: int = 0
    refused: int = 0  # upstream could not be reached
    resets: int = 0  # connections aborted by reset() or cut_after()
    bytes_up: int = 0
    bytes_down: int = 0


class _Mode(enum.Enum):
    FORWARD = "forward"
    DROP = "drop"
    REFUSE = "refuse"


class _Link:
    """One proxied connection: the client's stream and the server's stream, two pumps."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.dead = False  # black-holed by drop(): never forwards again
        self.gave_up = False  # dead, and one side closed it: the other side is told after
        self.cut: dict[Direction, int] = {}  # bytes left before a reset, per direction
        self.closed = asyncio.Event()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(self.client[0], self.server[1], Direction.UP))
                group.create_task(self._pump(self.server[0], self.client[1], Direction.DOWN))
        except* (OSError, asyncio.IncompleteReadError):
            pass  # a reset from either side (or ours) ends the link
        finally:
            for _, writer in (self.client, self.server):
                writer.transport.abort()
            self.closed.set()

    def abort(self) -> None:
        """RST both sides now: linger 0 makes close() send an RST instead of a FIN."""
        for _, writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: Direction
    ) -> None:
        """Forward one direction; latency keeps order (each chunk leaves after the previous)."""
        proxy = self.proxy
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer, way))
        try:
            due = 0.0
            while data := await reader.read(_CHUNK):
                if self.dead or proxy._mode is _Mode.DROP:
                    self.dead = True
                    continue  # read and discard: the peer's bytes vanish, nothing answers
                if way in self.cut:
                    left = self.cut[way]
                    if len(data) >= left:
                        data = data[:left]
                        self.cut[way] = 0
                    else:
                        self.cut[way] = left - len(data)
                delay = proxy._latency[way].sample(proxy._rng)
                due = max(due, time.monotonic() + delay)
                if data:
                    queue.put_nowait((due, data))
                if self.cut.get(way) == 0:
                    queue.put_nowait(None)  # the sender resets once what went before is out
                    await sender
                    return
            if self.dead:
                # The peer gave up on a dead connection: its close reaches the other side once
                # the network is back (at once if it is), as TCP's retransmitted FIN would.
                self.gave_up = True
                if proxy._mode is not _Mode.DROP:
                    self.abort()
                return
            # End of stream: pass the half-close on (after what is still queued).
            queue.put_nowait((due, b""))
            await sender
        finally:
            sender.cancel()

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        way: Direction,
    ) -> None:
        stats = self.proxy.stats
        try:
            while True:
                item = await queue.get()
                if item is None:
                    stats.resets += 1
                    self.abort()
                    return
                due, data = item
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if not data:  # end of stream
                    if writer.can_write_eof() and not self.dead:
                        writer.write_eof()
                    return
                if self.dead:
                    continue
                writer.write(data)
                await writer.drain()
                if way is Direction.UP:
                    stats.bytes_up += len(data)
                else:
                    stats.bytes_down += len(data)
        except OSError:
            self.abort()  # the receiving side is gone: so is the link (the pumps see EOF)


class FaultProxy:
    """Listen on `host:port` (0: a free port), forward to `upstream_host:upstream_port`."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
        seed: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.stats = ProxyStats()
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not secrets
        self._mode = _Mode.FORWARD
        self._latency = {Direction.UP: _NO_LATENCY, Direction.DOWN: _NO_LATENCY}
        self._cut: tuple[int, tuple[Direction, ...]] | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port clients connect to (known once started)."""
        if not self._port:
            raise RuntimeError("the fault proxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """`host:port` clients connect to, e.g. for Kafka's `bootstrap_servers`."""
        return f"{self._host}:{self.port}"

    def route(self, url: str) -> str:
        """`url` (a `postgresql://` DSN or any URL with a host) pointed at this proxy."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{self.address}" if credentials else self.address
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        """Listen (once); the port is fixed from then on, across refuse()/pass_through()."""
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        # Aborting ends every link; their tasks are asyncio's (start_server), which must not be
        # cancelled: Python 3.11 logs a cancelled client_connected_cb task as an error.
        self.reset(count=False)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- faults --------------------------------------------------------------------------

    async def pass_through(self) -> None:
        """End every fault: forward at once, listen again after refuse(), no cut, no latency.

        Connections black-holed by drop() stay dead: their peers have lost bytes for good.
        One that a side closed meanwhile is reset on the other side now (the close arrives).
        """
        self._mode = _Mode.FORWARD
        self._latency = {Direction.UP: _NO_LATENCY, Direction.DOWN: _NO_LATENCY}
        self._cut = None
        for link in list(self._links):
            link.cut.clear()
            if link.gave_up:
                link.abort()
        if self._server is None:
            await self._listen()

    def set_latency(
        self, *, upstream: Latency | None = None, downstream: Latency | None = None
    ) -> None:
        """Delay what is read from now on in each direction given (None: leave as it is)."""
        if upstream is not None:
            self._latency[Direction.UP] = upstream
        if downstream is not None:
            self._latency[Direction.DOWN] = downstream

    def drop(self) -> None:
        """Stop forwarding; hold every connection (open and new) half-open for good."""
        self._mode = _Mode.DROP
        for link in self._links:
            link.dead = True

    def refuse(self) -> None:
        """Stop listening: new connections are refused, open ones go on."""
        self._mode = _Mode.REFUSE
        if self._server is not None:
            self._server.close()
            self._server = None

    def reset(self, *, count: bool = True) -> int:
        """RST every open connection, on both sides; the number reset."""
        links = list(self._links)
        for link in links:
            link.abort()
        if count:
            self.stats.resets += len(links)
        return len(links)

    def cut_after(self, size: int, *directions: Direction) -> None:
        """Reset each connection once `size` more bytes passed in one of `directions`
        (default: either); applies to open connections and to new ones until pass_through()."""
        if size < 0:
            raise ValueError("size must be >= 0")
        ways = directions or (Direction.UP, Direction.DOWN)
        self._cut = (size, ways)
        for link in self._links:
            self._arm(link)

    async def wait_idle(self, seconds: float = 10.0) -> None:
        """Wait until no connection is open through the proxy (e.g. after reset())."""
        async with asyncio.timeout(seconds):
            while self._links:
                await next(iter(self._links)).closed.wait()

    # --- internals -----------------------------------------------------------------------

    def _arm(self, link: _Link) -> None:
        if self._cut is not None:
            size, ways = self._cut
            link.cut = dict.fromkeys(ways, size)  # 0: reset when the next byte comes

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode is _Mode.DROP:
            server: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        else:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    server = await asyncio.open_connection(*self.upstream)
            except (OSError, TimeoutError):
                self.stats.refused += 1
                writer.transport.abort()
                return
        if server is None:  # a drop: accept, then never answer (the connection is half-open)
            link = _Link(self, (reader, writer), (reader, writer))
            link.dead = True
            self._links.add(link)
            try:
                while await reader.read(_CHUNK):
                    pass
            finally:
                self._links.discard(link)
                writer.transport.abort()
                link.closed.set()
            return
        link = _Link(self, (reader, writer), server)
        self._links.add(link)
        self.stats.connections += 1
        self.stats.open_connections += 1
        self._arm(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)
            self.stats.open_connections -= 1
