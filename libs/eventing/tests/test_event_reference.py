"""docs/event-reference.md is generated from proto/ and the catalogue: a change to either
without regenerating it fails here, naming the command that fixes it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from consentry.eventing import catalogue

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gen_event_catalogue.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_event_catalogue", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_event_reference_is_current() -> None:
    generator = _generator()
    expected: str = generator.generate()
    committed = generator.OUTPUT.read_text() if generator.OUTPUT.exists() else ""
    assert committed == expected, (
        "docs/event-reference.md is stale: run `make docs` "
        "(uv run --frozen python scripts/gen_event_catalogue.py) and commit the result"
    )


def test_every_event_type_and_each_field_comment_is_in_it() -> None:
    text = _generator().generate()
    for event_type in catalogue.CATALOGUE.values():
        assert f"### `{event_type.name}`" in text
        assert f"`{event_type.topic}`" in text
    # A field's comment comes from the .proto source (SourceCodeInfo), not the gencode.
    assert (
        "| 6 | `subject_version` | `uint64` | Per-subject version, increasing by one with every"
        in text
    )
    assert "| `consentry.audit.entry_appended.v1`" not in text  # linked, not bare
    assert "`<tenant_id>/chain`" in text
    assert "`<tenant_id>/policy`" in text


def test_check_mode_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = _generator()
    output = tmp_path / "event-reference.md"
    output.write_text("# out of date\n")
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    monkeypatch.setattr(generator, "OUTPUT", output)
    assert generator.main(["--check"]) == 1
    assert "run `make docs`" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
