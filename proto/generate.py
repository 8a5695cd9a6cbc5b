"""Generate Python code (and mypy stubs) for every .proto under proto/ into proto/gen/python.

Run by `make proto`. The output is a PEP 420 namespace tree (`consentry.<domain>.v1`), so it
sits beside the service packages without any `__init__.py`. Generated code is not committed.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
OUT = PROTO_ROOT / "gen" / "python"


def main() -> int:
    """Regenerate all protobuf modules; return protoc's exit status."""
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "consentry").rglob("*.proto")
    )
    if not sources:
        print("no .proto files found", file=sys.stderr)
        return 1
    shutil.rmtree(OUT / "consentry", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--mypy_out={OUT}",
        *sources,
    ]
    status = protoc.main(args)
    if status == 0:
        print(f"generated {len(sources)} proto file(s) into {OUT.relative_to(PROTO_ROOT.parent)}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
