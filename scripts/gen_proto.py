"""Regenerate the protobuf and gRPC code in supervisor/v1/ from proto/.

Run from anywhere: ``python scripts/gen_proto.py``. With ``--out DIR`` the code
is written below DIR instead (the staleness test compares the two).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ["supervisor/v1/supervisor.proto"]


def generate(out: pathlib.Path) -> None:
    """Run protoc with the Python, gRPC and mypy stub plugins into ``out``."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    (out / "supervisor" / "v1").mkdir(parents=True, exist_ok=True)
    bindir = pathlib.Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
