"""`AsyncConsentry` and `Consentry`: the same operations, sent with httpx async or sync.

The operations are described once (`_calls`) and shared through `_Operation` descriptors: on
an `AsyncConsentry` an operation is a coroutine function, on a `Consentry` a plain one. The
retry decision (`Retry.delay`) is shared too; only the sending and the sleeping differ.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from consentry.sdk import _calls, tracing
from consentry.sdk._calls import Call
from consentry.sdk.errors import raise_for_problem, retry_after_seconds
from consentry.sdk.models import RightsRequest

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_CONSENT_URL = "http://127.0.0.1:8001"
DEFAULT_PREFERENCES_URL = "http://127.0.0.1:8003"
USER_AGENT = "consentry-python/0.1.0"


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how long to wait before sending a call again.

    429 is retried for every call (the API refused it before handling it); 503 and transport
    errors only for idempotent calls (a connection refused before anything was sent too).
    The wait is exponential with full jitter, `base * 2**n` capped at `cap`; a `Retry-After`
    from the server is honoured as the least wait (up to `max_retry_after`, beyond which the
    error is raised instead of waiting).
    """

    retries: int = 4
    base: float = 0.2
    cap: float = 5.0
    max_retry_after: float = 30.0

    def delay(
        self,
        call: Call[Any],
        attempt: int,
        error: Exception | None,
        response: httpx.Response | None,
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None: give up (raise)."""
        if attempt >= self.retries:
            return None
        if response is not None:
            status = response.status_code
            if status != 429 and not (status == 503 and call.idempotent):
                return None
            retry_after = retry_after_seconds(response)
        else:
            if not (call.idempotent or isinstance(error, httpx.ConnectError)):
                return None
            retry_after = None
        backoff = random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311
        if retry_after is None:
            return backoff
        if retry_after > self.max_retry_after:
            return None
        return retry_after + backoff * 0.1  # a little jitter so clients do not come in step


NO_RETRY = Retry(retries=0)


class _Base:
    """Configuration common to both clients."""

    def __init__(
        self,
        api_key: str,
        *,
        consent_url: str = DEFAULT_CONSENT_URL,
        preferences_url: str = DEFAULT_PREFERENCES_URL,
        timeout: float | httpx.Timeout = 10.0,
        retry: Retry | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._urls = {
            "consent": consent_url.rstrip("/"),
            "preferences": preferences_url.rstrip("/"),
        }
        self._timeout = timeout
        self.retry = retry if retry is not None else Retry()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        }

    def _request(self, call: Call[Any]) -> httpx.Request:
        # The current trace (OpenTelemetry's, or `tracing.traced`'s), unless the client's
        # own `headers` name one.
        return httpx.Request(
            call.method,
            self._urls[call.service] + call.path,
            params=call.params or None,
            json=call.json,
            headers={**tracing.headers(), **self._headers, **call.headers},
        )

    @staticmethod
    def _answer(call: Call[T], response: httpx.Response) -> T:
        raise_for_problem(response)
        return call.parse(response)


class _Operation(Generic[P, T]):
    """An API operation: a coroutine function on `AsyncConsentry`, a function on `Consentry`."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: AsyncConsentry, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, client: Consentry, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    def __get__(self, client: _Operations | None, owner: type[Any]) -> Any:
        if client is None:
            return self
        build, send = self._build, client._send

        def operation(*args: P.args, **kwargs: P.kwargs) -> Any:
            return send(build(*args, **kwargs))

        operation.__doc__ = self.__doc__
        operation.__name__ = self._build.__name__
        return operation


class _Operations(_Base):
    """Every operation, for both clients (see `_calls` for each one's documentation)."""

    # consent API
    give = _Operation(_calls.give)
    withdraw = _Operation(_calls.withdraw)
    decide = _Operation(_calls.decide)
    capture = _Operation(_calls.capture)
    consents = _Operation(_calls.consents)
    proof = _Operation(_calls.proof)
    check = _Operation(_calls.check)
    check_many = _Operation(_calls.check_many)
    subject_refs = _Operation(_calls.subject_refs)
    file_rights_request = _Operation(_calls.file_rights_request)
    rights_request = _Operation(_calls.rights_request)
    # preferences API
    preferences = _Operation(_calls.preferences)
    change_preferences = _Operation(_calls.change_preferences)
    unsubscribe = _Operation(_calls.unsubscribe)
    list_members = _Operation(_calls.list_members)
    filter_list = _Operation(_calls.filter_list)

    def _send(self, call: Call[Any]) -> Any:
        raise NotImplementedError


class AsyncConsentry(_Operations):
    """The async client: `async with AsyncConsentry(api_key, consent_url=...) as client:`."""

    def __init__(
        self, api_key: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(api_key, **options)
        self._http = httpx.AsyncClient(timeout=self._timeout, transport=transport)

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.send(self._request(call))
            except httpx.TransportError as exc:
                delay = self.retry.delay(call, attempt, exc, None)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay(call, attempt, None, response)
                if delay is None:
                    return self._answer(call, response)
            await asyncio.sleep(delay)
            attempt += 1

    async def follow_rights_request(
        self, request_id: str, *, seconds: float = 60.0, interval: float = 0.5
    ) -> RightsRequest:
        """Poll a rights request until it is closed (completed or rejected); its last state.
        Raises `TimeoutError` when it is still open after `seconds`."""
        deadline = time.monotonic() + seconds
        # polling: the API has no push for this
        while not (request := await self.rights_request(request_id)).closed:
            if time.monotonic() + interval > deadline:
                raise TimeoutError(f"rights request {request_id} is still {request.state}")
            await asyncio.sleep(interval)
        return request

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class Consentry(_Operations):
    """The sync client: `with Consentry(api_key, consent_url=...) as client:`."""

    def __init__(
        self, api_key: str, *, transport: httpx.BaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(api_key, **options)
        self._http = httpx.Client(timeout=self._timeout, transport=transport)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.send(self._request(call))
            except httpx.TransportError as exc:
                delay = self.retry.delay(call, attempt, exc, None)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay(call, attempt, None, response)
                if delay is None:
                    return self._answer(call, response)
            time.sleep(delay)
            attempt += 1

    def follow_rights_request(
        self, request_id: str, *, seconds: float = 60.0, interval: float = 0.5
    ) -> RightsRequest:
        """Poll a rights request until it is closed (completed or rejected); its last state.
        Raises `TimeoutError` when it is still open after `seconds`."""
        deadline = time.monotonic() + seconds
        while not (request := self.rights_request(request_id)).closed:
            if time.monotonic() + interval > deadline:
                raise TimeoutError(f"rights request {request_id} is still {request.state}")
            time.sleep(interval)
        return request

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
