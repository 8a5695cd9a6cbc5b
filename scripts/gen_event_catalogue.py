"""Generate docs/event-reference.md: every event type, its topic, key and message, each field
with its type and the comment it has in the .proto file.

Two sources, so the reference cannot drift from either: the catalogue
(`consentry.eventing.catalogue`: ce_type -> topic -> message class, and the check that fixes
the CloudEvents subject, hence the Kafka key), and the .proto files themselves, compiled by
protoc into a descriptor set *with source info* (the generated Python code drops comments).

    uv run --frozen python scripts/gen_event_catalogue.py           # rewrite the file (`make docs`)
    uv run --frozen python scripts/gen_event_catalogue.py --check   # exit 1 if it is stale

libs/eventing/tests/test_event_reference.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from consentry.eventing import catalogue

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUTPUT = ROOT / "docs" / "event-reference.md"
COMMAND = "make docs"

# The CloudEvents subject (the key's second half) each check function enforces. A check not
# listed here fails the generation: say which subject the new event type is keyed by.
SUBJECT_REF = "<subject_ref>"
SUBJECT_BY_CHECK = {
    "_check_decision": SUBJECT_REF,
    "_check_capture": SUBJECT_REF,
    "_check_reconsent": SUBJECT_REF,
    "_check_subject_event": SUBJECT_REF,
    "_check_preferences_updated": SUBJECT_REF,
    "_check_unsubscribed": SUBJECT_REF,
    "_check_suppressed": SUBJECT_REF,
    "_check_subject_request": SUBJECT_REF,
    "_check_chain_event": catalogue.AUDIT_CHAIN_SUBJECT,
    "_check_policy": catalogue.POLICY_SUBJECT,
    "_check_directory": catalogue.TENANT_SUBJECT,
    "_check_request": catalogue.REQUESTS_SUBJECT,
}

# descriptor.proto field numbers used in SourceCodeInfo paths.
_MESSAGE_TYPE, _ENUM_TYPE = 4, 5  # in FileDescriptorProto
_FIELD, _NESTED_TYPE, _NESTED_ENUM = 2, 3, 4  # in DescriptorProto
_ENUM_VALUE = 2  # in EnumDescriptorProto

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32",
    _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_UINT32: "uint32",
    _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64",
    _F.TYPE_SINT32: "sint32",
    _F.TYPE_SINT64: "sint64",
}


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: str  # the full name of a message or enum, or a scalar's name
    label: str  # "", "repeated", "optional" or "map<K, V>" (then `type` is V)
    comment: str


@dataclass(frozen=True)
class Message:
    name: str  # full name, e.g. consentry.consent.v1.ConsentGiven
    file: str
    comment: str
    fields: tuple[Field, ...]
    map_entry: bool


@dataclass(frozen=True)
class Enum:
    name: str
    file: str
    comment: str
    values: tuple[tuple[str, int, str], ...]  # name, number, comment


def descriptor_set(sources: Iterable[str]) -> descriptor_pb2.FileDescriptorSet:
    """The .proto files compiled by protoc (grpcio-tools) with their comments."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "descriptors.pb"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                "--include_source_info",
                "--include_imports",
                f"--descriptor_set_out={out}",
                *sources,
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed ({status})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(location: descriptor_pb2.SourceCodeInfo.Location | None) -> str:
    """A leading (else trailing) comment as one line of Markdown table text."""
    if location is None:
        return ""
    text = location.leading_comments or location.trailing_comments
    return " ".join(text.split()).replace("|", "\\|")


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in (_F.TYPE_MESSAGE, _F.TYPE_ENUM):
        return field.type_name.lstrip(".")
    return _SCALARS[field.type]


def collect(
    files: descriptor_pb2.FileDescriptorSet,
) -> tuple[dict[str, Message], dict[str, Enum]]:
    """Every message and enum of every file, by full name, with their comments."""
    messages: dict[str, Message] = {}
    enums: dict[str, Enum] = {}
    for file in files.file:
        where = {tuple(loc.path): loc for loc in file.source_code_info.location}

        def add_enum(
            enum: descriptor_pb2.EnumDescriptorProto,
            path: tuple[int, ...],
            prefix: str,
            file_name: str,
            where: dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location] = where,
        ) -> None:
            values = tuple(
                (value.name, value.number, _comment(where.get((*path, _ENUM_VALUE, i))))
                for i, value in enumerate(enum.value)
            )
            name = f"{prefix}.{enum.name}"
            enums[name] = Enum(name, file_name, _comment(where.get(path)), values)

        def add_message(
            message: descriptor_pb2.DescriptorProto,
            path: tuple[int, ...],
            prefix: str,
            file_name: str,
            where: dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location] = where,
        ) -> None:
            name = f"{prefix}.{message.name}"
            for i, nested in enumerate(message.nested_type):
                add_message(nested, (*path, _NESTED_TYPE, i), name, file_name)
            for i, nested_enum in enumerate(message.enum_type):
                add_enum(nested_enum, (*path, _NESTED_ENUM, i), name, file_name)
            fields = []
            for i, field in enumerate(message.field):
                label = ""
                if field.label == _F.LABEL_REPEATED:
                    label = "repeated"
                elif field.proto3_optional:
                    label = "optional"
                fields.append(
                    Field(
                        field.name,
                        field.number,
                        _field_type(field),
                        label,
                        _comment(where.get((*path, _FIELD, i))),
                    )
                )
            messages[name] = Message(
                name,
                file_name,
                _comment(where.get(path)),
                tuple(fields),
                message.options.map_entry,
            )

        for i, message in enumerate(file.message_type):
            add_message(message, (_MESSAGE_TYPE, i), file.package, file.name)
        for i, enum in enumerate(file.enum_type):
            add_enum(enum, (_ENUM_TYPE, i), file.package, file.name)
    return messages, enums


def _anchor(name: str) -> str:
    return name.lower().replace(".", "-")


def _is_ours(name: str) -> bool:
    return name.startswith("consentry.")


def _type_text(field: Field, messages: dict[str, Message]) -> str:
    """`string`, `repeated` [`X`](#x), `map<string, X>`: ours link to their section."""
    entry = messages.get(field.type)
    if entry is not None and entry.map_entry:  # map<K, V> is a repeated nested *Entry message
        key, value = entry.fields[0], entry.fields[1]
        return f"map<{_type_text(key, messages)}, {_type_text(value, messages)}>"
    text = (
        f"[`{field.type}`](#{_anchor(field.type)})" if _is_ours(field.type) else f"`{field.type}`"
    )
    return f"{field.label} {text}" if field.label else text


def _referenced(
    roots: Iterable[str], messages: dict[str, Message], enums: dict[str, Enum]
) -> Iterator[str]:
    """Our messages and enums reachable from `roots` (excluding them), in first-use order."""
    seen = set(roots)
    queue = list(roots)
    while queue:
        message = messages[queue.pop(0)]
        for field in message.fields:
            name = field.type
            if name in seen or not _is_ours(name):
                continue
            seen.add(name)
            if name in messages:
                queue.append(name)
            if name in enums or not messages[name].map_entry:
                yield name


def _field_table(message: Message, messages: dict[str, Message]) -> list[str]:
    if not message.fields:
        return ["No fields.", ""]
    lines = ["| # | field | type | meaning |", "|---|---|---|---|"]
    lines.extend(
        f"| {f.number} | `{f.name}` | {_type_text(f, messages)} | {f.comment} |"
        for f in message.fields
    )
    return [*lines, ""]


def _key(event_type: catalogue.EventType) -> str:
    check = event_type.validate.__name__ if event_type.validate else ""
    if check not in SUBJECT_BY_CHECK:
        raise SystemExit(
            f"{event_type.name}: its check {check or '(none)'} is not in SUBJECT_BY_CHECK of "
            "scripts/gen_event_catalogue.py: add which CloudEvents subject it enforces"
        )
    return f"`<tenant_id>/{SUBJECT_BY_CHECK[check]}`"


def render(messages: dict[str, Message], enums: dict[str, Enum]) -> str:
    """The whole Markdown document."""
    types = sorted(catalogue.CATALOGUE.values(), key=lambda t: (t.topic, t.name))
    lines = [
        "<!-- Generated by scripts/gen_event_catalogue.py from proto/ and",
        "     consentry.eventing.catalogue. Do not edit: run `make docs`. -->",
        "",
        "# Event reference",
        "",
        "Every event type consentry publishes, generated from the catalogue",
        "(`libs/eventing/src/consentry/eventing/catalogue.py`) and the comments in `proto/`.",
        "The envelope (CloudEvents headers, dead letters) and how to read a topic are in",
        "[events.md](events.md). The key is `<tenant_id>/<ce_subject>`: `<subject_ref>` is",
        "the pseudonymous subject reference, other subjects are fixed words that keep a",
        "tenant's whole history of that kind in order on one partition.",
        "",
        "| `ce_type` | topic | key | message |",
        "|---|---|---|---|",
    ]
    for t in types:
        full = t.message.DESCRIPTOR.full_name
        lines.append(
            f"| [`{t.name}`](#{_anchor(t.name)}) | `{t.topic}` | {_key(t)} "
            f"| [`{full}`](#{_anchor(full)}) |"
        )
    lines.append("")
    lines += ["## Events", ""]
    for t in types:
        message = messages[t.message.DESCRIPTOR.full_name]
        lines += [
            f'<a id="{_anchor(t.name)}"></a><a id="{_anchor(message.name)}"></a>',
            "",
            f"### `{t.name}`",
            "",
            f"Topic `{t.topic}`, key {_key(t)}, message `{message.name}` (`proto/{message.file}`).",
            "",
        ]
        if message.comment:
            lines += [message.comment, ""]
        lines += _field_table(message, messages)
    roots = [t.message.DESCRIPTOR.full_name for t in types]
    shared = list(_referenced(roots, messages, enums))
    # Messages not published as events (the stored audit entry) are documented too.
    others = [
        name
        for name in sorted([*messages, *enums])
        if _is_ours(name)
        and name not in roots
        and name not in shared
        and not (name in messages and messages[name].map_entry)
    ]
    lines += ["## Messages and enums used by the events", ""]
    lines += _definitions(shared, messages, enums)
    if others:
        lines += ["## Other messages", "", "Defined in `proto/` but not an event's payload.", ""]
        lines += _definitions(others, messages, enums)
    return "\n".join(lines).rstrip() + "\n"


def _definitions(
    names: Iterable[str], messages: dict[str, Message], enums: dict[str, Enum]
) -> list[str]:
    """A section per message or enum: its comment and its fields or values."""
    lines: list[str] = []
    for name in names:
        lines += [f'<a id="{_anchor(name)}"></a>', "", f"### `{name}`", ""]
        if name in enums:
            enum = enums[name]
            lines += [f"Enum in `proto/{enum.file}`.", ""]
            if enum.comment:
                lines += [enum.comment, ""]
            lines += ["| value | name | meaning |", "|---|---|---|"]
            lines += [f"| {number} | `{value}` | {text} |" for value, number, text in enum.values]
            lines.append("")
            continue
        message = messages[name]
        lines += [f"Message in `proto/{message.file}`.", ""]
        if message.comment:
            lines += [message.comment, ""]
        lines += _field_table(message, messages)
    return lines


def generate() -> str:
    """The reference as it should be, from the .proto files and the catalogue today."""
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "consentry").rglob("*.proto")
    )
    messages, enums = collect(descriptor_set(sources))
    return render(messages, enums)


def main(argv: list[str] | None = None) -> int:
    """Write docs/event-reference.md, or with --check say whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is stale: run `{COMMAND}` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(catalogue.CATALOGUE)} event types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
