"""The image's Dockerfile agrees with the project and the chart it is deployed by."""

from __future__ import annotations

import re
import sys
import tomllib

import ray
import yaml

from support.kube import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_base_image_has_the_ray_and_python_prism_pins() -> None:
    match = re.search(r"^ARG RAY_IMAGE=rayproject/ray:([\d.]+)-py(\d)(\d+)-gpu$", DOCKERFILE, re.M)
    assert match, "the Dockerfile's default base image is not a rayproject/ray GPU tag"
    version, major, minor = match.groups()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"ray[serve]=={version}" in project["project"]["dependencies"]
    assert version == ray.__version__
    assert (int(major), int(minor)) == sys.version_info[:2]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["rayVersion"] == version


def test_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    copied = [
        source
        for line in DOCKERFILE.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
        if not source.startswith("--")
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_image_converts_the_embedded_model_and_builds_the_grpc_stubs() -> None:
    steps = " ".join(DOCKERFILE.split())
    # Installing Prism runs setup.py's build hook, which generates the stubs; the image's
    # last step imports them.
    assert "COPY --chown=ray:users setup.py ./" in steps
    assert "import prism.serving.app, prism.proto.stubs" in steps
    assert "prism convert" in steps
    assert "torch==2.13.0" in steps
