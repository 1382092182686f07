"""The image's Dockerfile agrees with the project and the chart it is deployed by."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml

from support.kube import BIN, CHART, ROOT

DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERFILE = DOCKERFILE_PATH.read_text(encoding="utf-8")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DEPENDENCIES = PROJECT["project"]["dependencies"]
HADOLINT = BIN / "hadolint"
HADOLINT_THRESHOLD = "info"
"""Errors, warnings and infos fail; a deliberate exception is an inline ``hadolint ignore``."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    @property
    def words(self) -> list[str]:
        return self.arguments.split()


@dataclass(frozen=True)
class Stage:
    name: str | None
    instructions: tuple[Instruction, ...]

    def of(self, keyword: str) -> list[Instruction]:
        return [step for step in self.instructions if step.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def parse_stages(text: str) -> list[Stage]:
    """The build stages, each from its FROM on (the ARGs before the first FROM left out)."""
    stages: list[tuple[str | None, list[Instruction]]] = []
    for step in parse_instructions(text):
        if step.keyword == "FROM":
            words = step.words
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append((name, []))
        elif stages:
            stages[-1][1].append(step)
    return [Stage(name, tuple(steps)) for name, steps in stages]


def global_args(text: str) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for step in parse_instructions(text):
        if step.keyword == "FROM":
            break
        if step.keyword == "ARG":
            name, _, default = step.arguments.partition("=")
            args[name] = default
    return args


def stage_args(stage: Stage) -> dict[str, str]:
    return {
        name: default
        for name, _, default in (step.arguments.partition("=") for step in stage.of("ARG"))
    }


STAGES = parse_stages(DOCKERFILE)
FINAL = STAGES[-1]


def copy_sources(step: Instruction) -> list[str]:
    return [word for word in step.words[:-1] if not word.startswith("--")]


def copy_stage(step: Instruction) -> str | None:
    """The stage a ``COPY --from=<stage>`` copies from; None for the build context."""
    for word in step.words:
        if word.startswith("--from="):
            return word.removeprefix("--from=")
    return None


def shell_commands(stage: Stage) -> list[str]:
    """The commands of the stage's RUN instructions, split at ``&&``."""
    return [command.strip() for step in stage.of("RUN") for command in step.arguments.split("&&")]


def pip_installs(stage: Stage) -> list[str]:
    return [command for command in shell_commands(stage) if command.startswith("pip install")]


def test_base_image_has_the_ray_and_python_prism_pins() -> None:
    base = global_args(DOCKERFILE)["RAY_IMAGE"]
    match = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)-cpu", base)
    assert match, f"the default base image {base} is not a rayproject/ray CPU tag"
    version, major, minor = match.groups()
    assert f"ray[serve]=={version}" in DEPENDENCIES
    assert version == ray.__version__
    assert (int(major), int(minor)) == sys.version_info[:2]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["rayVersion"] == version
    froms = [step.words[0] for step in parse_instructions(DOCKERFILE) if step.keyword == "FROM"]
    assert set(froms) == {"${RAY_IMAGE}"}, "every stage must start from the same Ray image"


def test_default_build_takes_torch_from_a_cpu_index_only() -> None:
    """No CUDA in the default image: a CPU base, and torch alone from the CPU wheel index."""
    index = stage_args(FINAL)["TORCH_INDEX_URL"]
    assert re.fullmatch(r"https://\S+/whl/cpu", index), index
    torch_installs = [command for command in pip_installs(FINAL) if "torch" in command]
    assert torch_installs == [
        "pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url=$TORCH_INDEX_URL} "
        "-r requirements/torch.txt"
    ]
    others = [command for command in pip_installs(FINAL) if "TORCH_INDEX_URL" not in command]
    assert others and all("index-url" not in command for command in others)


def test_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    named = [stage.name for stage in STAGES]
    copied: list[str] = []
    for position, stage in enumerate(STAGES):
        for step in stage.of("COPY"):
            source_stage = copy_stage(step)
            if source_stage is None:
                copied += copy_sources(step)
            else:
                assert source_stage in named[:position], f"COPY from unknown stage: {step}"
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_dependency_layer_is_keyed_only_on_the_dependency_list() -> None:
    """Nothing from the build context comes before the dependencies are installed.

    The requirements stage reads pyproject.toml alone; the final stage copies its output, and
    only that, before the RUN that installs torch and the dependencies.
    """
    requirements = next(stage for stage in STAGES if stage.name == "requirements")
    assert [copy_sources(step) for step in requirements.of("COPY")] == [["pyproject.toml"]]
    steps = list(FINAL.instructions)
    install = next(
        index for index, step in enumerate(steps) if "-r requirements/all.txt" in step.arguments
    )
    copies_before = [step for step in steps[:install] if step.keyword in ("COPY", "ADD")]
    assert [copy_stage(step) for step in copies_before] == ["requirements"]


def test_requirements_stage_writes_the_project_dependencies(tmp_path: Path) -> None:
    """The stage's commands, run here on a copy of pyproject.toml, list exactly its
    dependencies, and torch's pin apart."""
    requirements = next(stage for stage in STAGES if stage.name == "requirements")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for step in requirements.of("RUN"):
        command = step.arguments.replace("/tmp/", f"{tmp_path}/")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
        subprocess.run(["sh", "-c", command], check=True, env=env, timeout=60)
    listed = (tmp_path / "requirements" / "all.txt").read_text(encoding="utf-8").splitlines()
    assert listed == DEPENDENCIES
    torch = (tmp_path / "requirements" / "torch.txt").read_text(encoding="utf-8").splitlines()
    assert torch == [pin for pin in DEPENDENCIES if pin.startswith("torch==")] == ["torch==2.13.0"]


def test_prism_is_installed_as_a_package_not_in_editable_mode() -> None:
    installs = pip_installs(FINAL)
    assert "pip install --no-cache-dir --no-deps ." in installs
    assert not any(re.search(r"\s(-e|--editable)\b", command) for command in installs)


def test_image_converts_the_embedded_model_and_builds_the_grpc_stubs() -> None:
    steps = " ".join(DOCKERFILE.split())
    # Installing Prism runs setup.py's build hook, which generates the stubs; the image's
    # last step imports them from the installed package.
    assert any("setup.py" in copy_sources(step) for step in FINAL.of("COPY"))
    assert "import prism.serving.app, prism.proto.stubs" in steps
    assert "prism convert" in steps


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", HADOLINT_THRESHOLD, "-"],
        input=DOCKERFILE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
