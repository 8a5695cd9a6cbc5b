"""The README's quick-start commands, run as written (with curl) against the running stack."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl_commands() -> list[str]:
    """Every `curl` command in the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("curl "):
                commands.append(command.strip())
    return commands


async def run(command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, f"{command}\n{err.decode()}"
    return out.decode()


async def test_readme_quick_start_works_as_written(
    relay: Worker, stack: DevStack, dev_policy: str
) -> None:
    assert shutil.which("curl"), "the README's examples use curl"
    ports = {
        "http://127.0.0.1:8001": stack.api_url("consent"),
        "http://127.0.0.1:8002": stack.api_url("audit"),
        "http://127.0.0.1:8003": stack.api_url("preferences"),
    }
    commands = []
    for documented in readme_curl_commands():
        for default, actual in ports.items():
            documented = documented.replace(default, actual)  # noqa: PLW2901
        commands.append(documented)
    publish, give, read, check, verify, entries, *preferences = commands
    # The stack's dev policy fixture published the same version first (so the other tests
    # may run in any order): the README's publish answers that it exists.
    published = json.loads(await run(publish))
    assert published.get("version") == dev_policy or published["type"].endswith(
        "policy-version-exists"
    )
    before = json.loads(await run(verify))["entries"]

    given, listed = json.loads(await run(give)), json.loads(await run(read))
    assert (given["purpose"], given["status"]) == ("performance", "given")
    assert given["receipt"].count(".") == 2
    assert listed["consents"][0]["purpose"] == "performance"
    assert json.loads(await run(check)) == {"allowed": False, "reason": "no-consent"}

    # "A moment later the decision is in the audit chain, which anyone can verify."
    async with asyncio.timeout(90):
        while (report := json.loads(await run(verify)))["entries"] == before:
            await asyncio.sleep(0.2)
    assert report["ok"] is True
    page = json.loads(await run(entries.replace("?limit=10", f"?after_seq={before}&limit=10")))
    # (the dev policy's own event may land in the chain just before it)
    assert listed["subject_ref"] in [entry["subject_ref"] for entry in page["entries"]]
    assert len(json.loads(await run(entries))["entries"]) == min(10, report["entries"])

    # "Preferences and one-click unsubscribe": the topic, the marketing consent, joining
    # (409 until the consent has reached the preferences service), the link, one click.
    topic, marketing, join, link, click, read_preferences = preferences
    async with asyncio.timeout(60):  # the tenant reaches the preferences service first
        while "tenant-not-provisioned" in (created := await run(topic)):
            await asyncio.sleep(0.2)
    assert json.loads(created)["category"] == "marketing"
    assert json.loads(await run(marketing))["status"] == "given"
    async with asyncio.timeout(90):
        while "marketing-consent-required" in (joined := await run(join)):
            await asyncio.sleep(0.2)
    joined_news = [t for t in json.loads(joined)["topics"] if t["topic"] == "product-news"]
    assert joined_news[0]["channels"] == {"email": True}
    headers = json.loads(await run(link))["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith(f"<{stack.api_url('preferences')}/u/")
    assert "unsubscribed" in (await run(click)).lower()
    after = json.loads(await run(read_preferences))
    news = [t for t in after["topics"] if t["topic"] == "product-news"]
    assert news[0]["channels"] == {"email": False}
