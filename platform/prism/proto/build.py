"""Generate the Python stubs of Prism's ``.proto`` files with grpcio-tools.

The stubs are build outputs, never generated at import and never kept in git: building the
package (a wheel, or an editable install) runs :func:`generate_all` through ``setup.py``, and a
checkout regenerates them in place with ``python -m prism.proto.build`` (``make setup`` runs
it; run it again after editing a ``.proto`` file).

This module imports only the standard library at load time, so ``setup.py`` can load it by
path before Prism's dependencies are installed; grpcio-tools is needed only to generate.
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


def outputs(proto: Path, out_root: Path = SOURCE_ROOT) -> list[Path]:
    """The stubs of ``proto`` under ``out_root`` (a folder that holds ``prism/``)."""
    stem = out_root / proto.relative_to(SOURCE_ROOT).with_suffix("")
    return [stem.with_name(stem.name + suffix) for suffix in SUFFIXES]


def generate(proto: Path, out_root: Path = SOURCE_ROOT) -> list[Path]:
    """Run protoc on one file, writing its stubs under ``out_root`` (atomically, file by file).

    ``out_root`` mirrors the source tree: the checkout's ``platform/`` (the default, stubs
    beside their ``.proto``) or a build's ``build_lib``. Returns the files written.
    """
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    relative = proto.relative_to(SOURCE_ROOT)
    written = outputs(proto, out_root)
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
        for out in written:
            out.parent.mkdir(parents=True, exist_ok=True)
            temporary = out.with_name(f".{out.name}.tmp")
            shutil.copyfile(Path(scratch) / out.relative_to(out_root), temporary)
            temporary.replace(out)
    return written


def generate_all(out_root: Path = SOURCE_ROOT) -> list[Path]:
    """Generate the stubs of every ``.proto`` file under ``out_root``; returns the files."""
    return [out for proto in proto_files() for out in generate(proto, out_root)]


def main() -> None:
    for proto in proto_files():
        generate(proto)
        print(f"generated the stubs of {proto.relative_to(SOURCE_ROOT)}")


if __name__ == "__main__":
    main()
