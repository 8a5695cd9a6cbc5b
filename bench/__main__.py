"""`python -m bench` (what `make bench` runs): start the stack, measure it, write the results."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import preferences_lists, rights_erasure, rights_erasure_report, subprocessor_webhooks
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
        "write throughput/latency and consent-to-audit propagation; then the audit appender's "
        "throughput on a stack of its own.",
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
    parser.add_argument(
        "--skip-audit-throughput",
        action="store_true",
        help="skip the audit appender throughput scenario (bench.audit_throughput)",
    )
    parser.add_argument(
        "--audit-events",
        type=int,
        default=defaults.audit_events,
        help="backlog of the audit appender throughput scenario",
    )
    _add_consent_api_arguments(parser, defaults)
    _add_lists_arguments(parser)
    parser.add_argument("--results-dir", type=Path, default=defaults.results_dir)
    parser.add_argument("--keep-logs", action="store_true", help="keep the service logs")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rate <= 0:
        parser.error("--duration and --rate must be > 0, --warmup >= 0")
    if args.audit_events < 1:
        parser.error("--audit-events must be >= 1")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        skip_propagation=args.skip_propagation,
        timeout=args.timeout,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
        audit_throughput=not args.skip_audit_throughput,
        audit_events=args.audit_events,
        **_consent_api_options(parser, args),
    )


def _add_consent_api_arguments(parser: argparse.ArgumentParser, defaults: Options) -> None:
    """The options of the consent API scenarios (bench.consent_api) and the pgbench ceiling."""
    group = parser.add_argument_group("consent API scenarios (issue 4's targets)")
    group.add_argument(
        "--skip-consent-api", action="store_true", help="skip them (and the pgbench ceiling)"
    )
    group.add_argument(
        "--capture-concurrency",
        type=_concurrency,
        default=defaults.capture_concurrency,
        help="connections of the 4-purpose write runs, comma-separated (default 16,64)",
    )
    group.add_argument(
        "--unloaded-duration",
        type=float,
        default=defaults.unloaded_duration,
        help="measured s of the concurrency-1 write run (default 5)",
    )
    for name, what in (("check", "single check"), ("batch", "batch check")):
        group.add_argument(
            f"--{name}-concurrency",
            type=int,
            default=getattr(defaults, f"{name}_concurrency"),
            help=f"connections of the {what} run",
        )
    group.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="pairs per batch check"
    )
    group.add_argument("--skip-pgbench", action="store_true", help="skip the pgbench ceiling")
    group.add_argument(
        "--not-durable",
        action="store_true",
        help="embedded PostgreSQL with fsync and synchronous commit off (every run; the "
        "default keeps them on, as in production)",
    )
    group.add_argument(
        "--api-workers",
        type=int,
        default=defaults.api_workers,
        help="processes per HTTP API (CONSENTRY_HTTP_WORKERS; default 1)",
    )
    group.add_argument(
        "--skip-analyze",
        action="store_true",
        help="no ANALYZE of the service databases before these scenarios",
    )
    group.add_argument(
        "--pgbench-duration",
        type=float,
        default=defaults.pgbench_duration,
        help="s of each of the 4 pgbench runs (default 10)",
    )


def _consent_api_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, Any]:
    if args.unloaded_duration <= 0 or args.pgbench_duration < 1:
        parser.error("--unloaded-duration must be > 0, --pgbench-duration >= 1")
    if args.api_workers < 1:
        parser.error("--api-workers must be >= 1")
    if min(args.check_concurrency, args.batch_concurrency) < 1:
        parser.error("--check-concurrency and --batch-concurrency must be >= 1")
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 1..10000 (the API's limit)")
    return {
        "consent_api": not args.skip_consent_api,
        "capture_concurrency": args.capture_concurrency,
        "unloaded_duration": args.unloaded_duration,
        "check_concurrency": args.check_concurrency,
        "batch_concurrency": args.batch_concurrency,
        "batch_size": args.batch_size,
        "pgbench": not args.skip_pgbench,
        "pgbench_duration": args.pgbench_duration,
        "analyze": not args.skip_analyze,
        "durable": not args.not_durable,
        "api_workers": args.api_workers,
    }


def _add_lists_arguments(parser: argparse.ArgumentParser) -> None:
    """The marketing-list scenarios (bench.preferences_lists, issue 5), run last."""
    group = parser.add_argument_group("marketing lists (issue 5's targets)")
    group.add_argument(
        "--skip-preferences-lists", action="store_true", help="skip bench.preferences_lists"
    )
    group.add_argument(
        "--lists-quick", action="store_true", help="its short form (10 s of unsubscribes)"
    )
    parser.add_argument(
        "--skip-subprocessor-webhooks",
        action="store_true",
        help="skip bench.subprocessor_webhooks (issue 6: erasure → verified webhooks)",
    )
    rights = parser.add_argument_group("erasure end to end on the full stack (issue 6's targets)")
    rights.add_argument(
        "--skip-rights-erasure", action="store_true", help="skip bench.rights_erasure"
    )
    rights.add_argument(
        "--rights-erasure-quick",
        action="store_true",
        help="its short form (5 s at 100 requests/s, a bulk erasure of 5,000 subjects)",
    )


def lists_options(argv: Sequence[str] | None, opts: Options) -> preferences_lists.Options | None:
    """What to run of bench.preferences_lists (None: skip it)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_lists_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if args.skip_preferences_lists:
        return None
    quick = ["--quick"] if args.lists_quick else []
    return preferences_lists.parse(
        [*quick, "--results-dir", str(opts.results_dir), *(["--keep-logs"] * opts.keep_logs)]
    )


def webhooks_options(
    argv: Sequence[str] | None, opts: Options
) -> subprocessor_webhooks.Options | None:
    """What to run of bench.subprocessor_webhooks (None: skip it)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_lists_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if args.skip_subprocessor_webhooks:
        return None
    return subprocessor_webhooks.Options(results_dir=opts.results_dir)


def rights_options(argv: Sequence[str] | None, opts: Options) -> rights_erasure.Options | None:
    """What to run of bench.rights_erasure (None: skip it)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_lists_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if args.skip_rights_erasure:
        return None
    quick = ["--quick"] if args.rights_erasure_quick else []
    return rights_erasure.parse(
        [*quick, "--results-dir", str(opts.results_dir), *(["--keep-logs"] * opts.keep_logs)]
    )


async def _main(
    opts: Options,
    lists: preferences_lists.Options | None = None,
    webhooks: subprocessor_webhooks.Options | None = None,
    rights: rights_erasure.Options | None = None,
) -> int:
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
        if lists is not None:
            progress("marketing lists: unsubscribe → suppressed, filter (bench.preferences_lists)")
            results = await preferences_lists.run(lists)
            with (opts.results_dir / "latest.md").open("a") as latest:
                latest.write("\n" + preferences_lists.markdown(results, level=2))
        if webhooks is not None:
            progress("erasure → verified webhooks (bench.subprocessor_webhooks)")
            results = await subprocessor_webhooks.run(webhooks)
            with (opts.results_dir / "latest.md").open("a") as latest:
                latest.write("\n" + subprocessor_webhooks.markdown(results, level=2))
        if rights is not None:
            progress("erasure end to end on the full stack (bench.rights_erasure)")
            results = await rights_erasure.run(rights)
            with (opts.results_dir / "latest.md").open("a") as latest:
                latest.write("\n" + rights_erasure_report.markdown(results, level=2))
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
    opts = parse(argv)
    return asyncio.run(
        _main(
            opts,
            lists_options(argv, opts),
            webhooks_options(argv, opts),
            rights_options(argv, opts),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
