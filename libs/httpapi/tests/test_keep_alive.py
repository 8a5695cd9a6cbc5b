"""Idle keep-alive connections outlive the clients' own idle expiry (a real uvicorn server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI

from consentry.httpapi.server import HttpSettings, uvicorn_options

REQUEST = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


@contextlib.asynccontextmanager
async def running(keep_alive: int) -> AsyncIterator[int]:
    """The app under uvicorn with `serve`'s options on a free port; yields the port."""
    settings = HttpSettings(http_port=0, http_keep_alive_seconds=keep_alive)
    server = uvicorn.Server(uvicorn.Config(make_app(), **uvicorn_options(settings)))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One request on an open connection; its status line, or b"" if the server closed it."""
    writer.write(REQUEST)
    await writer.drain()
    status = await reader.readline()
    if status:
        headers = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
    return status


async def idle_then_ask(port: int, idle: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await ask(reader, writer)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(idle)
        try:
            return await ask(reader, writer)
        except ConnectionError:
            return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_the_default_outlives_the_clients_idle_expiry() -> None:
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None
    assert HttpSettings().http_keep_alive_seconds > client_expiry


async def test_an_idle_connection_is_kept_for_the_setting_then_closed() -> None:
    async with running(keep_alive=3) as port:
        assert (await idle_then_ask(port, 1.5)).startswith(b"HTTP/1.1 200")
    async with running(keep_alive=1) as port:
        assert await idle_then_ask(port, 2.0) == b""
