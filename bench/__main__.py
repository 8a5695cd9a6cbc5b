"""`python -m bench` (what `make bench` runs): start the stack, measure it, write the results."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.audit import BenchError
from bench.rawhttp import ProtocolError
from bench.run import Options, progress, run
from consentry.devstack.stack import STARTUP_FAILURES

# Failures outside the benchmark's own code: one paragraph, no traceback.
_FAILURES: tuple[type[BaseException], ...] = (BenchError, ProtocolError, *STARTUP_FAILURES)


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("give at least one concurrency level >= 1")
    return levels


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into `Options`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start the whole consentry stack on this machine and measure consent "
        "write throughput/latency and consent-to-audit propagation.",
    )
    defaults = Options()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="measured s")
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help="unmeasured s")
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=defaults.concurrency,
        help="connections of the write scenarios, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="writes/s of the propagation run"
    )
    parser.add_argument("--skip-propagation", action="store_true", help="only the write runs")
    parser.add_argument(
        "--timeout", type=float, default=defaults.timeout, help="s to wait for audit entries"
    )
    parser.add_argument("--results-dir", type=Path, default=defaults.results_dir)
    parser.add_argument("--keep-logs", action="store_true", help="keep the service logs")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rate <= 0:
        parser.error("--duration and --rate must be > 0, --warmup >= 0")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        skip_propagation=args.skip_propagation,
        timeout=args.timeout,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
    )


async def _main(opts: Options) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            progress(f"{sig.name} again; still stopping every process (up to ~10 s)")
            return
        received.append(sig.name)
        progress(f"{sig.name} received: stopping every process")
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await run(opts)
    except asyncio.CancelledError:
        if not received:
            raise
        return 130
    except _FAILURES as exc:
        progress(f"failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    return asyncio.run(_main(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
