"""Prism's build hook: the gRPC stubs are generated from the ``.proto`` files at build time.

Everything else is declared in ``pyproject.toml``. A wheel gets the stubs in its build folder;
an editable install writes them beside the ``.proto`` files in the checkout, where the
editable import path finds them. grpcio-tools is a build requirement (``[build-system]``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO_BUILD = Path(__file__).resolve().parent / "platform" / "prism" / "proto" / "build.py"


def _proto_build():
    """``prism.proto.build`` loaded by path: Prism itself need not be importable yet."""
    spec = importlib.util.spec_from_file_location("_prism_proto_build", PROTO_BUILD)
    assert spec is not None and spec.loader is not None, PROTO_BUILD
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithStubs(build_py):
    """``build_py`` that also generates the gRPC stubs."""

    def run(self) -> None:
        super().run()
        proto_build = _proto_build()
        out_root = proto_build.SOURCE_ROOT if self.editable_mode else Path(self.build_lib)
        for path in proto_build.generate_all(out_root):
            self.announce(f"generated {path}", level=2)


setup(cmdclass={"build_py": BuildPyWithStubs})
