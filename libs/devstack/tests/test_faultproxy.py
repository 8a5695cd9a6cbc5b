"""The TCP fault proxy against a real echo server and a real PostgreSQL (through asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import pytest

from consentry.devstack.faultproxy import Direction, FaultProxy, Latency
from consentry.devstack.pytest_plugin import FreshDatabase

# How long "nothing arrives" is watched for: an assertion window, not a synchronisation.
_SILENCE = 0.3


@dataclass
class Echo:
    """An echo server: its port, everything it received, how each connection ended."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    endings: list[BaseException | None] = field(default_factory=list)  # None: EOF


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    state = Echo()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                state.received += data
                writer.write(data)
                await writer.drain()
            state.endings.append(None)
        except OSError as err:
            state.endings.append(err)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port, seed=1) as running:
        yield running


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_opened: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _opened:
        _opened.pop().close()


async def _connect(proxy: FaultProxy) -> Conn:
    """A client connection through the proxy, closed after the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    _opened.append(writer)
    return reader, writer


async def _round_trip(conn: Conn, data: bytes, seconds: float = 5.0) -> bytes:
    reader, writer = conn
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), seconds)


async def _until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def test_passes_bytes_through_and_counts_them(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)
    assert await _round_trip(conn, b"hello") == b"hello"
    assert await _round_trip(conn, b"x" * 200_000) == b"x" * 200_000
    assert proxy.stats.connections == 1
    assert proxy.stats.open_connections == 1
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == 200_005
    conn[1].close()
    await proxy.wait_idle()
    assert proxy.stats.open_connections == 0


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)
    proxy.set_latency(upstream=Latency(0.1), downstream=Latency(0.05, jitter=0.05))
    started = time.monotonic()
    assert await _round_trip(conn, b"a" * 10) == b"a" * 10
    assert time.monotonic() - started >= 0.15
    # Jitter never reorders the stream: many small writes come back in order.
    chunks = [f"{i:04d}".encode() for i in range(50)]
    for chunk in chunks:
        conn[1].write(chunk)
    assert await asyncio.wait_for(conn[0].readexactly(200), 10) == b"".join(chunks)
    await proxy.pass_through()
    started = time.monotonic()
    await _round_trip(conn, b"b")
    assert time.monotonic() - started < 0.15


async def test_drop_holds_connections_half_open_for_good(proxy: FaultProxy, echo: Echo) -> None:
    before = await _connect(proxy)
    assert await _round_trip(before, b"1") == b"1"
    proxy.drop()
    with pytest.raises(TimeoutError):
        await _round_trip(before, b"2", seconds=_SILENCE)
    during = await _connect(proxy)  # accepted, as by a server whose answers get lost
    with pytest.raises(TimeoutError):
        await _round_trip(during, b"3", seconds=_SILENCE)
    await proxy.pass_through()
    after = await _connect(proxy)
    assert await _round_trip(after, b"4") == b"4"
    with pytest.raises(TimeoutError):  # its bytes were lost: the old connection stays dead
        await _round_trip(before, b"5", seconds=_SILENCE)
    assert not before[0].at_eof()  # ... and open: nothing told the client
    assert echo.endings == []  # nor the server
    # The client gives up on it: now that the network is back, the server hears of it.
    before[1].close()
    await _until(lambda: echo.endings)
    assert isinstance(echo.endings[0], ConnectionResetError)


async def test_refuse_closes_the_door_but_not_open_connections(proxy: FaultProxy) -> None:
    open_one = await _connect(proxy)
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        await _connect(proxy)
    assert await _round_trip(open_one, b"still") == b"still"
    await proxy.pass_through()
    assert proxy.port == port
    assert await _round_trip(await _connect(proxy), b"again") == b"again"


async def test_reset_sends_rst_to_both_sides(proxy: FaultProxy, echo: Echo) -> None:
    conn = await _connect(proxy)
    await _round_trip(conn, b"ping")
    assert proxy.reset() == 1
    with pytest.raises(ConnectionResetError):
        await _round_trip(conn, b"lost")
    await _until(lambda: echo.endings)
    assert isinstance(echo.endings[0], ConnectionResetError)  # an RST, not an orderly FIN
    assert proxy.stats.resets == 1
    assert await _round_trip(await _connect(proxy), b"new") == b"new"


async def test_cut_after_n_bytes_forwards_exactly_that_much(proxy: FaultProxy, echo: Echo) -> None:
    conn = await _connect(proxy)
    assert await _round_trip(conn, b"before") == b"before"
    proxy.cut_after(10, Direction.UP)
    conn[1].write(b"0123456789abcdef")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(conn[0].read(100), 5)  # reset before the echo came back
    await _until(lambda: echo.endings)
    assert bytes(echo.received) == b"before0123456789"
    assert isinstance(echo.endings[0], ConnectionResetError)
    assert proxy.stats.resets == 1
    # New connections are cut too, until pass_through().
    conn = await _connect(proxy)
    with pytest.raises(ConnectionResetError):
        await _round_trip(conn, b"ABCDEFGHIJKL")
    await _until(lambda: len(echo.endings) == 2)
    assert bytes(echo.received) == b"before0123456789ABCDEFGHIJ"
    await proxy.pass_through()
    assert await _round_trip(await _connect(proxy), b"0123456789abc") == b"0123456789abc"


# --- through PostgreSQL -------------------------------------------------------------------


@pytest.fixture
async def pg(
    fresh_database: FreshDatabase,
) -> AsyncIterator[tuple[str, FaultProxy]]:
    """A fresh database with a table `t`, and a fault proxy in front of its server."""
    dsn = await fresh_database("faultproxy")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)")
    finally:
        await conn.close()
    server = urlsplit(dsn)
    assert server.hostname is not None
    assert server.port is not None
    async with FaultProxy(server.hostname, server.port) as proxy:
        yield dsn, proxy


async def _rows(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["id"] for row in await conn.fetch("SELECT id FROM t ORDER BY id")]
    finally:
        await conn.close()


async def _backends(dsn: str, application: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        return int(count)
    finally:
        await conn.close()


@pytest.mark.integration
async def test_reset_mid_transaction_leaves_no_half_written_row(
    pg: tuple[str, FaultProxy],
) -> None:
    dsn, proxy = pg
    conn = await asyncpg.connect(
        proxy.route(dsn), server_settings={"application_name": "faultproxy-reset"}
    )
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO t VALUES (1, 'first'), (2, 'second')")
        assert proxy.reset() == 1
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await transaction.commit()
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=1)
    # The server noticed the client vanish and rolled the transaction back.
    async with asyncio.timeout(10):
        while await _backends(dsn, "faultproxy-reset"):
            await asyncio.sleep(0.05)
    assert await _rows(dsn) == []
    # The proxy itself is fine: a new connection through it writes.
    conn = await asyncpg.connect(proxy.route(dsn))
    try:
        await conn.execute("INSERT INTO t VALUES (3, 'after')")
    finally:
        await conn.close()
    assert await _rows(dsn) == [3]


@pytest.mark.integration
async def test_cut_after_commit_left_is_an_ambiguous_commit(pg: tuple[str, FaultProxy]) -> None:
    """The COMMIT reached the server, its answer did not reach the client: the client sees
    an error for a transaction that did commit. Hence idempotent writers and consumers."""
    dsn, proxy = pg
    conn = await asyncpg.connect(proxy.route(dsn))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO t VALUES (7, 'in doubt')")
        proxy.cut_after(0, Direction.DOWN)  # not a byte more towards the client
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await transaction.commit()
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=1)
    assert await _rows(dsn) == [7]


@pytest.mark.integration
async def test_postgres_through_latency_drop_and_refusal(pg: tuple[str, FaultProxy]) -> None:
    dsn, proxy = pg
    routed = proxy.route(dsn)
    proxy.set_latency(upstream=Latency(0.05), downstream=Latency(0.05))
    conn = await asyncpg.connect(routed)
    try:
        started = time.monotonic()
        assert await conn.fetchval("SELECT 1") == 1
        assert time.monotonic() - started >= 0.1
        proxy.drop()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 2", timeout=_SILENCE)
    finally:
        conn.terminate()
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(routed, timeout=2)
    await proxy.pass_through()
    conn = await asyncpg.connect(routed)
    try:
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


# --- in front of the broker ---------------------------------------------------------------


@pytest.mark.integration
async def test_a_broker_advertising_the_proxy_gets_all_its_traffic_through_it() -> None:
    """Kafka clients connect where the broker's metadata says: a broker that advertises the
    proxy's port gets every connection through it, so a reset hits every client."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from consentry.devstack.broker import EmbeddedBroker, TopicSpec, create_topics
    from consentry.devstack.spawning import free_port

    front = free_port()
    with EmbeddedBroker(advertised_port=front) as broker:
        host, port = broker.bootstrap.rsplit(":", 1)
        async with FaultProxy(host, int(port), port=front) as proxy:
            await create_topics(proxy.address, [TopicSpec("faultproxy", partitions=1)])
            producer = AIOKafkaProducer(bootstrap_servers=proxy.address)
            await producer.start()
            try:
                await producer.send_and_wait("faultproxy", b"before")
                assert proxy.reset() >= 1
                await producer.send_and_wait("faultproxy", b"after")  # it reconnects
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(
                "faultproxy", bootstrap_servers=proxy.address, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                values: list[bytes | None] = []
                async with asyncio.timeout(30):
                    while len(values) < 2:
                        for records in (await consumer.getmany(timeout_ms=200)).values():
                            values += [record.value for record in records]
            finally:
                await consumer.stop()
            assert values == [b"before", b"after"]
            # Even a client bootstrapped on the broker's own port is sent to the proxy: while
            # the proxy refuses, it cannot produce.
            direct = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await direct.start()
            try:
                proxy.refuse()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(3):
                        await direct.send_and_wait("faultproxy", b"refused")
                await proxy.pass_through()
                await direct.send_and_wait("faultproxy", b"through")
            finally:
                await direct.stop()
