"""CPU time of this process and every descendant, grouped by role (psutil)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far: per pid (with its role), and of the whole machine by state."""

    procs: dict[int, tuple[str, float]]
    machine: Any  # psutil's scputimes named tuple


_ROLES = (
    (("bench.load",), "load generator"),
    (("consentry.consent", "api"), "consent api"),
    (("consentry.consent", "relay"), "consent relay"),
    (("consentry.consent", "intake"), "consent intake"),
    (("consentry.consent", "policy-scheduler"), "policy scheduler"),
    (("consentry.audit", "appender"), "audit appender"),
    (("consentry.audit", "relay"), "audit relay"),
    (("consentry.audit", "api"), "audit api"),
)


def role(proc: psutil.Process) -> str:
    """What a process is: a service process, postgres, the broker, or its own name."""
    try:
        cmdline = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "other"
    for needles, label in _ROLES:
        if all(needle in cmdline for needle in needles):
            return label
    service = _service_process(cmdline)
    if service is not None:
        return service
    if name.startswith("postgres") or (cmdline and cmdline[0].endswith("/postgres")):
        return "postgres"
    if "tansu" in name or any("tansu" in part for part in cmdline[:1]):
        return "broker"
    if any("multiprocessing" in part for part in cmdline):  # e.g. uvicorn's API workers
        with contextlib.suppress(psutil.Error):
            parent = proc.parent()
            if parent is not None:
                return role(parent)
    return name


def _service_process(cmdline: list[str]) -> str | None:
    """`python -m consentry.<service> <command>` as "<service> <command>", else None."""
    for at, part in enumerate(cmdline[:-2]):
        if part == "-m" and cmdline[at + 1].startswith("consentry."):
            return f"{cmdline[at + 1].removeprefix('consentry.')} {cmdline[at + 2]}"
    return None


OTHER = "other processes"  # everything on the machine that this benchmark did not start


def snapshot() -> Snapshot:
    """CPU seconds so far of every process: ours by role, the rest as `other processes`."""
    me = psutil.Process()
    ours = {me.pid: "bench orchestrator"}
    for child in me.children(recursive=True):
        ours[child.pid] = role(child)
    taken: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        taken[proc.pid] = (ours.get(proc.pid, OTHER), times.user + times.system)
    return Snapshot(taken, psutil.cpu_times())


def relabel(taken: Snapshot, labels: dict[int, str]) -> Snapshot:
    """`taken` with the processes in `labels` (pid → label) labelled anew."""
    procs = {
        pid: (labels.get(pid, label), seconds) for pid, (label, seconds) in taken.procs.items()
    }
    return Snapshot(procs, taken.machine)


def usage(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, float]:
    """Per role, CPU between two snapshots in % of one core; `total` = ours, without others."""
    spent: defaultdict[str, float] = defaultdict(float)
    for pid, (label, total) in after.procs.items():
        previous = before.procs.get(pid)
        spent[label] += total - (previous[1] if previous is not None else 0.0)
    shares = {label: round(100 * value / seconds, 1) for label, value in spent.items()}
    ordered = dict(sorted(shares.items(), key=lambda item: -item[1]))
    ordered["total"] = round(sum(v for k, v in shares.items() if k != OTHER), 1)
    return ordered


def busy_now(seconds: float = 1.0) -> dict[str, float]:
    """The machine's CPU use over the next `seconds` (blocking), e.g. before starting."""
    before = Snapshot({}, psutil.cpu_times())
    time.sleep(seconds)
    return machine(before, Snapshot({}, psutil.cpu_times()))


def machine(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """How the whole machine's CPU time was spent between two snapshots, in % of all cores."""
    spent = {
        field: getattr(after.machine, field) - getattr(before.machine, field)
        for field in after.machine._fields
        if field not in ("guest", "guest_nice")  # already counted in user/nice
    }
    total = sum(spent.values()) or 1.0
    shares = {field: round(100 * value / total, 1) for field, value in spent.items()}
    shares["busy"] = round(100 - shares.get("idle", 0.0) - shares.get("iowait", 0.0), 1)
    return shares
