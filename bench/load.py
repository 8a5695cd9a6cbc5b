"""The load generator, run as its own OS process: `python -m bench.load closed|paced ...`.

It writes JSON lines to stdout: `measure_start`/`measure_end` markers (so the parent can sample
CPU use over exactly the measured window) and one final `result`. What a closed-loop request
is depends on `--kind`:

- `put` (default): a real write, `PUT .../consents/performance`: subject
  `<prefix>-<conn>-<i // 2>` gets `given` (even i) then `withdrawn` (odd i);
- `capture`: a real 4-purpose write, `POST .../consents`: subject `<prefix>-<conn>-<i // 2>`
  gets capture variant 0 (even i) then variant 1 (odd i), which differs in every purpose;
- `check`: `GET .../checks/{purpose}` over the subjects `<subjects-prefix>-<c>-<k>` (c below
  `--subjects-connections`, k below `--subjects-per-connection`) and the 4 capture purposes;
- `batch`: `POST /v1/checks` with `--batch-size` pairs of those subjects and purposes.

It runs on uvloop when uvloop is installed (less CPU per request than asyncio's loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bench.rawhttp import CAPTURE_PURPOSES, HttpConnection, ProtocolError, RequestBuilder
from bench.stats import summary

KINDS = ("put", "capture", "check", "batch")


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line event to stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _send(conn: HttpConnection, data: bytes) -> str:
    """Send one request; the outcome as "200", another status, or an exception name."""
    try:
        status, _ = await conn.request(data)
    except (OSError, ProtocolError) as exc:
        await asyncio.sleep(0.05)  # do not spin on a refused connection
        return type(exc).__name__
    return str(status)


def check_subject(args: argparse.Namespace, index: int) -> str:
    """The `index`-th subject of the check kinds (wraps around the subjects written)."""
    per, conns = args.subjects_per_connection, args.subjects_connections
    index %= per * conns
    return f"{args.subjects_prefix}-{index % conns}-{index // conns}"


def request_factory(
    args: argparse.Namespace, builder: RequestBuilder
) -> Callable[[int, int], bytes]:
    """(connection n, its i-th request) -> the request bytes of `args.kind`."""
    purposes = len(CAPTURE_PURPOSES)
    if args.kind == "put":
        return lambda n, i: builder.put_consent(
            f"{args.prefix}-{n}-{i // 2}", "given" if i % 2 == 0 else "withdrawn"
        )
    if args.kind == "capture":
        return lambda n, i: builder.post_consents(f"{args.prefix}-{n}-{i // 2}", i % 2)
    if args.kind == "check":
        return lambda n, i: builder.check(
            check_subject(args, n + i * args.concurrency), CAPTURE_PURPOSES[(n + i) % purposes]
        )
    pairs = [
        {
            "subject_id": check_subject(args, j // purposes),
            "purpose": CAPTURE_PURPOSES[j % purposes],
        }
        for j in range(args.batch_size)
    ]
    data = builder.post_json("/v1/checks", {"checks": pairs})
    return lambda n, i: data


async def closed_loop(args: argparse.Namespace) -> dict[str, Any]:
    """N connections, each sending requests back to back; stats over the measured window."""
    builder = RequestBuilder(args.host, args.port)
    make_request = request_factory(args, builder)
    loop = asyncio.get_running_loop()
    marks: dict[str, tuple[float, float]] = {}
    ended = asyncio.Event()

    def mark(name: str) -> None:
        marks[name] = (time.perf_counter(), cpu_seconds())
        emit(name)
        if name == "measure_end":
            ended.set()

    now = time.perf_counter()
    measure_from, measure_to = now + args.warmup, now + args.warmup + args.duration
    loop.call_later(args.warmup, mark, "measure_start")
    loop.call_later(args.warmup + args.duration, mark, "measure_end")
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    created = [0] * args.concurrency  # per connection: 200s of first writes (= new subjects)

    async def worker(n: int) -> None:
        conn = HttpConnection(args.host, args.port)
        i = 0
        try:
            while (started := time.perf_counter()) < measure_to:
                data = make_request(n, i)
                first = i % 2 == 0
                i += 1
                outcome = await _send(conn, data)
                done = time.perf_counter()
                in_window = measure_from <= done <= measure_to
                totals["ok" if outcome == "200" else "errors"] += 1
                created[n] += first and outcome == "200"
                if outcome == "200" and in_window:
                    latencies.append((done - started) * 1000)
                elif in_window:
                    errors[outcome] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
    await ended.wait()  # the timer may fire just after the last response
    (t0, cpu0), (t1, cpu1) = marks["measure_start"], marks["measure_end"]
    return {
        "kind": args.kind,
        "concurrency": args.concurrency,
        "window_s": round(t1 - t0, 3),
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "rps": round(len(latencies) / (t1 - t0), 1),
        "latency_ms": summary(latencies),
        "ok_total": totals["ok"],
        "errors_total": totals["errors"],
        "generator_cpu_s": round(cpu1 - cpu0, 3),
        # write kinds: every connection's subjects below this number exist (checks use them)
        "subjects_per_connection": min(created),
    }


async def paced(args: argparse.Namespace) -> dict[str, Any]:
    """`rate` requests/s for `duration` s over a small connection pool, one new subject each."""
    builder = RequestBuilder(args.host, args.port)
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(HttpConnection(args.host, args.port))
    records: list[list[Any]] = []
    late_ms = 0.0

    async def one(subject: str) -> None:
        conn = await pool.get()
        try:
            started = time.time()
            outcome = await _send(conn, builder.put_consent(subject, "given"))
            records.append([subject, outcome, started, time.time()])
        finally:
            pool.put_nowait(conn)

    loop = asyncio.get_running_loop()
    cpu0, began = cpu_seconds(), loop.time()
    tasks = []
    for i in range(round(args.rate * args.duration)):
        delay = began + i / args.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late_ms = max(late_ms, -delay * 1000)
        tasks.append(asyncio.create_task(one(f"{args.prefix}-{i}")))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - began
    while not pool.empty():
        await pool.get_nowait().close()
    return {
        "requests": records,
        "elapsed_s": round(elapsed, 3),
        "max_late_ms": round(late_ms, 3),
        "generator_cpu_s": round(cpu_seconds() - cpu0, 3),
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the generator's command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    modes = parser.add_subparsers(dest="mode", required=True)
    for name in ("closed", "paced"):
        mode = modes.add_parser(name)
        mode.add_argument("--host", required=True)
        mode.add_argument("--port", type=int, required=True)
        mode.add_argument("--prefix", required=True, help="subject id prefix (URL-safe)")
        mode.add_argument("--duration", type=float, default=10.0)
    closed = modes.choices["closed"]
    closed.add_argument("--concurrency", type=int, default=16)
    closed.add_argument("--warmup", type=float, default=2.0)
    closed.add_argument("--kind", choices=KINDS, default="put", help="what each request is")
    closed.add_argument("--subjects-prefix", default="", help="check kinds: whose subjects")
    closed.add_argument("--subjects-connections", type=int, default=1)
    closed.add_argument("--subjects-per-connection", type=int, default=1)
    closed.add_argument("--batch-size", type=int, default=10_000, help="pairs per batch check")
    paced_mode = modes.choices["paced"]
    paced_mode.add_argument("--rate", type=float, default=50.0)
    paced_mode.add_argument("--connections", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load mode and print its result as the last JSON line."""
    args = parse(argv)
    work = closed_loop(args) if args.mode == "closed" else paced(args)
    try:
        result = _run(work)
    except KeyboardInterrupt:
        return 130
    emit("result", **result)
    return 0


def _run(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `work` on uvloop if it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


if __name__ == "__main__":
    sys.exit(main())
