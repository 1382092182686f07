"""``prism.proto.stubs`` only imports the generated stubs, and says how to make missing ones."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest

GENERATED = ("prism.proto.prism.v1.generation_pb2", "prism.proto.prism.v1.generation_pb2_grpc")


class HideStubs(MetaPathFinder):
    """Finds nothing for the generated modules, as if they had never been generated."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name in GENERATED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_missing_stubs_are_an_import_error_that_says_how_to_generate_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (*GENERATED, "prism.proto.stubs"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [HideStubs(), *sys.meta_path])

    with pytest.raises(ImportError, match=r"make setup.*python -m prism\.proto\.build"):
        importlib.import_module("prism.proto.stubs")
