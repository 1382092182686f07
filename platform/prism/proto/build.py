"""Generate the Python stubs of Prism's ``.proto`` files with grpcio-tools.

``make setup`` runs this (``python -m prism.proto.build``); :func:`ensure_stubs` runs it again
whenever a ``.proto`` file is newer than its stubs, so the stubs never drift from the
definitions. Nothing generated is kept in git.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``prism`` package: protoc's include root, so generated modules
import each other as ``prism.proto.prism.v1...``."""
PROTO_DIR = Path(__file__).resolve().parent
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def _outputs(proto: Path) -> list[Path]:
    stem = proto.with_suffix("")
    return [stem.with_name(stem.name + suffix) for suffix in SUFFIXES]


def stale(proto: Path) -> bool:
    """True if a stub of ``proto`` is missing or older than it."""
    mtime = proto.stat().st_mtime
    return any(not out.is_file() or out.stat().st_mtime < mtime for out in _outputs(proto))


def generate(proto: Path) -> None:
    """Run protoc on one file, writing its stubs beside it (atomically, file by file)."""
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    relative = proto.relative_to(SOURCE_ROOT)
    with tempfile.TemporaryDirectory() as scratch:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{SOURCE_ROOT}",
                f"-I{include}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(relative),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {relative} (exit {status})")
        for out in _outputs(proto):
            temporary = out.with_name(f".{out.name}.tmp")
            shutil.copyfile(Path(scratch) / out.relative_to(SOURCE_ROOT), temporary)
            temporary.replace(out)


def ensure_stubs() -> None:
    """Generate the stubs of every ``.proto`` file whose stubs are missing or stale."""
    for proto in proto_files():
        if stale(proto):
            generate(proto)


def main() -> None:
    for proto in proto_files():
        generate(proto)
        print(f"generated the stubs of {proto.relative_to(SOURCE_ROOT)}")


if __name__ == "__main__":
    main()
