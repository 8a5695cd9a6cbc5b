"""The README's Python examples, run as written (each in its own interpreter) against the
running stack."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from consentry.devstack.services import DEV_API_KEY
from consentry.sdk import AsyncConsentry, Retry

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


async def run(code: str, env: dict[str, str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, f"{code}\n{err.decode()}"
    return out.decode()


async def test_readme_examples_work_as_written(
    readme_env: dict[str, str], preferences_url: str, tmp_path: Path
) -> None:
    blocks = readme_python_blocks()
    assert len(blocks) == 5
    # The preferences service learns of the tenant through the tenant topic: wait for it, as
    # a product would only call it once deployed.
    async with AsyncConsentry(
        DEV_API_KEY, preferences_url=preferences_url, retry=Retry(retries=100, cap=0.5)
    ) as api:
        await api.preferences("someone")
    env = {**os.environ, **readme_env}
    # Independent examples (different subjects): run side by side.
    consents, errors, rights, events, traces = await asyncio.gather(
        *(run(block, env, tmp_path) for block in blocks)
    )
    assert consents.startswith("given ")
    assert "['withdrawn', 'no-consent']" in consents
    assert errors.startswith("422 validation-error [")
    assert "completed True" in rights
    assert events.startswith("applied ")
    assert (tmp_path / "consent-events.sqlite").exists()
    assert traces.startswith("traced ")
