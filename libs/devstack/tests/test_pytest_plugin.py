"""How `make test`'s xdist workers share the suite out (ADR 0015)."""

from __future__ import annotations

import os
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
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-q",
            "-p", "consentry.devstack.pytest_plugin", "-p", "no:cacheprovider",
            "--rootdir", str(suite), str(suite),
        ],
        cwd=suite,
        env={  # not as one of the workers of the run this test is in
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
            "RECORD_DIR": str(records),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
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
