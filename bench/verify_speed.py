"""How fast consentry-verify checks an export: entries verified per second.

    uv run python -m bench.verify_speed [--entries 1000000] [--entry-bytes 200] [--repeat 3]

Writes a synthetic, valid export (real AuditEntry bytes padded to about --entry-bytes, signed
checkpoints every --checkpoint-every entries and at the end, two Ed25519 keys as after a
rotation), times `verify_export` (what `consentry-verify export` runs) for each --workers
setting, and once the CLI in a subprocess, then writes results/verify_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.audit import merkle
from consentry.audit.consentry_verify import (
    GENESIS,
    TreeBuilder,
    chain_hash,
    leaf_hash,
    verify_export,
)
from consentry.audit.v1 import audit_pb2

RESULTS = Path(__file__).parent / "results"
START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def entry_bytes(tenant: str, seq: int, size: int) -> bytes:
    """A real serialised AuditEntry padded (in `data`) to about `size` bytes."""
    entry = audit_pb2.AuditEntry(
        tenant_id=tenant,
        event_id=str(uuid.uuid4()),
        event_type="consentry.consent.given.v1",
        event_source="/consentry/consent",
        subject_ref=f"s-{seq % 5000:05d}",
        content_type="application/protobuf",
        topic="consentry.consent.v1",
    )
    entry.event_time.FromDatetime(START + timedelta(seconds=seq))
    entry.data = b"\x01" * max(0, size - entry.ByteSize() - 3)
    return entry.SerializeToString(deterministic=True)


def write_export(path: Path, entries: int, size: int, every: int) -> int:
    """Write a valid export of `entries` entries; return the number of checkpoints."""
    tenant = str(uuid.uuid4())
    keys = [("bench-k1", Ed25519PrivateKey.generate()), ("bench-k2", Ed25519PrivateKey.generate())]
    key_set = merkle.jwks((kid, key.public_key()) for kid, key in keys)
    lines, checkpoints, tree, prev = [], [], TreeBuilder(), GENESIS
    for seq in range(1, entries + 1):
        entry = entry_bytes(tenant, seq, size)
        leaf = leaf_hash(entry)
        prev = chain_hash(prev, leaf)
        tree.append(leaf)
        lines.append(merkle.export_line(seq, entry, leaf, prev))
        if seq % every == 0 or seq == entries:
            kid, key = keys[0] if seq <= entries // 2 else keys[1]
            when = START + timedelta(seconds=seq)
            checkpoints.append(merkle.sign_checkpoint(key, kid, tenant, seq, tree.root(), when))
    with path.open("w") as f:
        f.write(merkle.export_header(tenant, key_set, checkpoints) + "\n")
        f.writelines(line + "\n" for line in lines)
    return len(checkpoints)


def _cpu() -> tuple[float, float]:
    """(CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    machine = psutil.cpu_times()
    own = os.times()
    busy = machine.user + machine.system + machine.nice + getattr(machine, "steal", 0.0)
    return busy, own.user + own.system + own.children_user + own.children_system


def measure(path: Path, workers: int | None, repeat: int) -> dict[str, Any]:
    """Time verify_export `repeat` times; note how busy other processes kept the machine."""
    times, others, entries = [], [], 0
    for _ in range(repeat):
        busy, own = _cpu()
        started = time.perf_counter()
        report = verify_export(str(path), workers=workers)
        elapsed = time.perf_counter() - started
        busy2, own2 = _cpu()
        times.append(elapsed)
        others.append(max(0.0, (busy2 - busy) - (own2 - own)) / elapsed * 100)
        entries = report.entries
    best, median = min(times), statistics.median(times)
    return {
        "workers": "auto" if workers is None else workers,
        "entries": entries,
        "seconds": [round(t, 3) for t in times],
        "other_processes_cpu_percent_of_one_core": [round(o) for o in others],
        "entries_per_s_best": round(entries / best),
        "entries_per_s_median": round(entries / median),
    }


def main() -> None:
    """Generate, measure, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--entry-bytes", type=int, default=200)
    parser.add_argument("--checkpoint-every", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="auto,1", help="comma list: auto or a number")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.jsonl"
        started = time.perf_counter()
        n_checkpoints = write_export(path, args.entries, args.entry_bytes, args.checkpoint_every)
        generated = time.perf_counter() - started
        print(f"generated {args.entries} entries in {generated:.1f}s", file=sys.stderr)
        runs = []
        for setting in args.workers.split(","):
            runs.append(measure(path, None if setting == "auto" else int(setting), args.repeat))
            print(json.dumps(runs[-1]), file=sys.stderr)
        started = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "consentry.audit.consentry_verify", "export", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        cli_seconds = time.perf_counter() - started
        file_bytes = path.stat().st_size
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "entries": args.entries,
        "entry_bytes": args.entry_bytes,
        "file_bytes": file_bytes,
        "checkpoints": n_checkpoints,
        "runs": runs,
        "cli": {"seconds": round(cli_seconds, 3), "exit": cli.returncode, "out": cli.stdout[:300]},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "verify_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| {r['workers']} | {r['entries_per_s_best']:,} | {r['entries_per_s_median']:,} "
        f"| {', '.join(map(str, r['seconds']))} "
        f"| {', '.join(map(str, r['other_processes_cpu_percent_of_one_core']))} |"
        for r in runs
    ]
    markdown = "\n".join(
        [
            "# consentry-verify export speed",
            "",
            f"{args.entries:,} entries of about {args.entry_bytes} bytes "
            f"({file_bytes / 1e6:.0f} MB, {n_checkpoints} signed checkpoints), "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {result['when']}.",
            "",
            "| workers | entries/s (best) | entries/s (median) | seconds per run "
            "| other processes' CPU per run (% of one core) |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"CLI end to end (`python -m consentry.audit.consentry_verify export FILE`, "
            f"interpreter start included): {cli_seconds:.2f}s, exit {cli.returncode}.",
            "",
            "The machine is shared: runs where other processes used CPU are slower; the best run "
            "is the one to compare. `auto` uses one process per available core for files over "
            "8 MiB (each reads its own byte range; the parent merges the tree nodes).",
            "",
        ]
    )
    (args.results_dir / "verify_speed.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
