"""Supervisor: readiness, prefixed output, process-group stop, loud failure, death signal."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from consentry.devstack.processes import (
    ChildExitedError,
    ProcessNotReadyError,
    ProcessSpec,
    Supervisor,
    http_status,
    run_once,
)
from consentry.devstack.spawning import free_port

PY = sys.executable
SLEEP = "import time; time.sleep(600)"

HTTP_CHILD = textwrap.dedent("""
    import http.server, os, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    print("serving", os.environ["GREETING"], flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")

# A child that starts a grandchild in its own process group; both ignore SIGTERM.
STUBBORN_FAMILY = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print("grandchild", grandchild.pid, flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_ready_url_output_prefix_and_stop() -> None:
    out = io.StringIO()
    port = free_port()
    spec = ProcessSpec(
        "demo.api",
        [PY, "-c", HTTP_CHILD, str(port)],
        env={"GREETING": "hello"},
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    async with Supervisor(out=out) as supervisor:
        await supervisor.start([spec, ProcessSpec("demo.idle", [PY, "-c", SLEEP])])
        assert await http_status(f"http://127.0.0.1:{port}/healthz") == 200
        assert await http_status(f"http://127.0.0.1:{port}/nope") == 404
        pids = list(supervisor.pids.values())
    assert "demo.api  | serving hello\n" in out.getvalue()
    assert not any(_alive(pid) for pid in pids)


async def test_stop_kills_the_whole_process_group() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, stop_timeout=0.5)
    await supervisor.start([ProcessSpec("family", [PY, "-c", STUBBORN_FAMILY])])
    while "grandchild" not in out.getvalue():
        await asyncio.sleep(0.02)
    grandchild = int(out.getvalue().split("grandchild ")[1].split()[0])
    child = supervisor.pids["family"]
    assert os.getpgid(grandchild) == child
    await supervisor.stop()
    await asyncio.sleep(0.1)  # the grandchild is reaped by init
    assert not _alive(child)
    assert not _alive(grandchild)


async def test_an_unexpected_exit_is_reported_and_stops_the_rest() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    crash = "import sys, time; time.sleep(0.3); print('boom'); sys.exit(3)"
    await supervisor.start(
        [
            ProcessSpec("steady", [PY, "-c", SLEEP]),
            ProcessSpec("crashy", [PY, "-c", crash]),
        ]
    )
    steady = supervisor.pids["steady"]
    with pytest.raises(ChildExitedError, match="'crashy' exited with code 3") as failure:
        await asyncio.wait_for(supervisor.wait(), 10)
    assert failure.value.returncode == 3
    assert "boom" in str(failure.value)
    assert "!!!!" in out.getvalue()
    assert not _alive(steady)
    assert supervisor.failure is failure.value
    await supervisor.stop()  # idempotent


async def test_a_child_killed_from_outside_is_reported() -> None:
    supervisor = Supervisor(out=io.StringIO())
    await supervisor.start([ProcessSpec("victim", [PY, "-c", SLEEP])])
    os.kill(supervisor.pids["victim"], signal.SIGKILL)
    with pytest.raises(ChildExitedError, match=r"'victim' was killed \(Killed\)"):
        await asyncio.wait_for(supervisor.wait(), 10)


async def test_a_child_that_dies_before_ready_fails_start() -> None:
    supervisor = Supervisor(out=io.StringIO())
    spec = ProcessSpec(
        "early",
        [PY, "-c", "print('no config'); raise SystemExit(2)"],
        ready_url="http://127.0.0.1:9/",
    )
    with pytest.raises(ChildExitedError, match="no config"):
        await supervisor.start([spec])
    await supervisor.stop()


async def test_a_child_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO(), ready_timeout=0.5, log_dir=tmp_path)
    spec = ProcessSpec(
        "mute",
        [PY, "-c", "print('starting', flush=True); import time; time.sleep(600)"],
        ready_url="http://127.0.0.1:9/",
    )
    with pytest.raises(ProcessNotReadyError, match="'mute' did not answer 200"):
        await supervisor.start([spec])
    await supervisor.stop()
    assert (tmp_path / "mute.log").read_text() == "starting\n"


async def test_run_once_raises_with_the_output_tail() -> None:
    out = io.StringIO()
    await run_once(ProcessSpec("ok", [PY, "-c", "print('migrated')"]), out=out)
    assert "ok | migrated" in out.getvalue()
    with pytest.raises(ChildExitedError, match="bad migration"):
        await run_once(ProcessSpec("bad", [PY, "-c", "raise SystemExit('bad migration')"]), out=out)


async def test_unknown_program_is_a_clear_error() -> None:
    supervisor = Supervisor(out=io.StringIO())
    with pytest.raises(RuntimeError, match="cannot start process 'ghost'"):
        await supervisor.start([ProcessSpec("ghost", ["/nonexistent/ghost"])])
    await supervisor.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_children_die_with_a_sigkilled_supervisor() -> None:
    parent = textwrap.dedent("""
        import asyncio, sys
        from consentry.devstack.processes import ProcessSpec, Supervisor
        async def main():
            supervisor = Supervisor()
            sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
            await supervisor.start([ProcessSpec("sleeper", sleeper)])
            print(supervisor.pids["sleeper"], flush=True)
            await asyncio.sleep(600)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([PY, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline().split("|")[-1])
    assert _alive(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with contextlib.suppress(psutil.NoSuchProcess):  # it may be gone already: that is the point
        psutil.wait_procs([psutil.Process(child)], timeout=5)
    assert not _alive(child)


async def test_with_a_log_dir_a_child_never_waits_for_the_event_loop(tmp_path: Path) -> None:
    # A test's synchronous code may hold the event loop for minutes; a child whose output
    # went through a pipe pumped by the loop would block once the pipe filled (64 KiB).
    done = tmp_path / "done"
    talker = (
        "import pathlib, sys\n"
        "for n in range(20_000): print('line', n, 'x' * 60)\n"
        "sys.stdout.flush()\n"
        f"pathlib.Path({str(done)!r}).touch()\n"
        "import time; time.sleep(600)\n"
    )
    supervisor = Supervisor(out=io.StringIO(), log_dir=tmp_path)
    await supervisor.start([ProcessSpec("talker", [PY, "-c", talker])])
    try:
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # noqa: ASYNC251 - blocking the loop on purpose
        assert done.exists()
        assert (tmp_path / "talker.log").stat().st_size > 1_000_000
    finally:
        await supervisor.stop()


async def test_a_logged_child_that_exits_reports_its_last_lines(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO(), log_dir=tmp_path)
    spec = ProcessSpec("quits", [PY, "-c", "print('boom: no broker'); raise SystemExit(3)"])
    await supervisor.start([spec])
    with pytest.raises(ChildExitedError, match="boom: no broker"):
        await asyncio.wait_for(supervisor.wait(), 30)
