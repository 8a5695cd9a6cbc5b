"""How `make test`'s xdist workers share the suite out (ADR 0015)."""

from __future__ import annotations

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
