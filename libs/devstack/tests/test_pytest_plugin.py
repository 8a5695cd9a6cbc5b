"""How `make test`'s xdist workers share the suite out (ADR 0015)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consentry.devstack.pytest_plugin import setup_unit

STACK_CONFTEST = """
import pytest

@pytest.fixture(scope="package")
def stack():
    yield "one per directory"
"""
SESSION_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def server():
    return "one per worker"

def helper(scope="module"):
    return scope
"""


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_directory_whose_conftest_starts_a_stack_is_one_unit(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "tests/e2e/conftest.py": STACK_CONFTEST,
            "tests/e2e/nested/test_deep.py": "",
            "services/a/tests/conftest.py": SESSION_CONFTEST,
        },
    )
    assert setup_unit(root, "tests/e2e/test_one.py::test_a") == "tests/e2e"
    assert setup_unit(root, "tests/e2e/test_two.py::test_b[1]") == "tests/e2e"
    assert setup_unit(root, "tests/e2e/nested/test_deep.py::test_c") == "tests/e2e"
    # Session and module fixtures (and a function with a `scope` argument) do not bind a
    # directory together: each file is a unit of its own.
    assert (
        setup_unit(root, "services/a/tests/test_api.py::test_d") == "services/a/tests/test_api.py"
    )
    assert setup_unit(root, "test_top.py::test_e") == "test_top.py"


@pytest.mark.parametrize(
    ("nodeid", "unit"),
    [
        ("tests/e2e/test_access_export.py::test_x", "tests/e2e"),
        ("tests/faults/test_broker_faults.py::test_x", "tests/faults"),
        ("sdk/python/tests/test_client.py::test_x", "sdk/python/tests"),
        ("cli/tests/test_cli.py::test_x", "cli/tests"),
        (
            "services/consent/tests/test_rights_tracker.py::test_x",
            "services/consent/tests/test_rights_tracker.py",
        ),
    ],
)
def test_this_repositorys_stacks_each_start_in_one_worker(
    pytestconfig: pytest.Config, nodeid: str, unit: str
) -> None:
    assert setup_unit(pytestconfig.rootpath, nodeid) == unit


RECORDING_CONFTEST = """
import os
from pathlib import Path

import pytest

LOG = Path(os.environ["RECORD_DIR"])


def record(what):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
    with (LOG / worker).open("a") as log:
        log.write(what + "\\n")


@pytest.fixture(scope="package")
def stack():
    record("stack started")
    yield


@pytest.fixture(autouse=True)
def each(request):
    record(request.node.nodeid)
"""
STACK_TEST = """
def test_one(stack):
    pass
"""
FILE_TESTS = "".join(f"\ndef test_{n}():\n    pass\n" for n in range(4))


def run_pytest(suite: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest with our plugin on the built `suite`, in a process of its own (not as one of
    the workers of the run this test is in); it must pass."""
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", *args,
            "-p", "consentry.devstack.pytest_plugin", "-p", "no:cacheprovider",
            "--rootdir", str(suite), str(suite),
        ],
        cwd=suite,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_two_workers_start_a_stack_once_and_first(tmp_path: Path) -> None:
    """The real xdist: three files of a stack's directory run in one worker, whose stack
    starts once, and before any file of more tests (xdist alone would send the stack's
    directory, with the fewest tests, last)."""
    suite, records = tmp_path / "suite", tmp_path / "records"
    records.mkdir()
    tree(
        suite,
        {
            "stack/conftest.py": RECORDING_CONFTEST,
            **{f"stack/test_s{n}.py": STACK_TEST for n in range(3)},
            "plain/conftest.py": RECORDING_CONFTEST.replace('scope="package"', 'scope="session"'),
            **{f"plain/test_f{n}.py": FILE_TESTS for n in range(6)},
        },
    )
    done = run_pytest(suite, "-n", "2", "--dist", "loadfile", RECORD_DIR=str(records))
    assert "27 passed" in done.stdout
    logs = {path.name: path.read_text().splitlines() for path in records.iterdir()}
    assert set(logs) == {"gw0", "gw1"}
    (holder,) = [name for name, lines in logs.items() if "stack started" in lines]
    lines = logs[holder]
    assert lines.count("stack started") == 1
    assert lines[0] == "stack started"
    stack_tests = [line for line in lines if line.startswith("stack/")]
    assert len(stack_tests) == 3
    assert lines[1:4] == stack_tests


REPORTING_CONFTEST = """
import os

from consentry.devstack.pytest_plugin import report_section

RAN = []


def pytest_runtest_call(item):
    RAN.append(item.name)


def pytest_sessionfinish(session):
    if RAN:  # only where tests ran: one section per process that ran some
        where = os.environ.get("PYTEST_XDIST_WORKER", "alone")
        report_section(session.config, "figures", f"{len(RAN)} figures from {where}\\n")
"""


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_section_reported_at_the_end_reaches_the_summary_also_from_a_worker(
    tmp_path: Path, workers: str | None
) -> None:
    """What a conftest reports by `pytest_sessionfinish` (the fault suite's figures) is in
    the summary the run prints, also when an xdist worker reported it: a worker's own
    terminal output is never shown."""
    suite = tree(
        tmp_path / "suite",
        {"figures/conftest.py": REPORTING_CONFTEST, "figures/test_f.py": FILE_TESTS},
    )
    done = run_pytest(suite, *(["-n", workers, "--dist", "loadfile"] if workers else []))
    assert "4 passed" in done.stdout
    expected = "4 figures from gw" if workers else "4 figures from alone"
    assert done.stdout.count(" figures from ") == 1, done.stdout
    assert expected in done.stdout, done.stdout
    assert re.search(r"^=+ figures =+$", done.stdout, re.MULTILINE), done.stdout
