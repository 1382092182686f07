"""Prism as an installed package: a wheel built from the checkout, installed into a fresh venv.

The new venv sees the project venv's dependencies through a ``.pth`` file naming the project
venv's site-packages. A plain path line adds that folder only: the ``.pth`` files inside it,
among them the editable install's (which puts the checkout's ``platform/`` on ``sys.path``),
are not processed, so every ``prism`` import resolves to the installed wheel.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from prism.bench.quality.bench import TEXT_PATH as QUALITY_TEXT
from prism.config import DEPLOYMENTS_DIR
from prism.engine.cpu_kernels import SOURCES as KERNEL_SOURCES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("generation_pb2.py", "generation_pb2.pyi", "generation_pb2_grpc.py")
# Not passed on: a PYTHONPATH could bring the checkout back, and with bytecode writing off
# an import that would write into the package could not be seen.
DROPPED_VARIABLES = {"PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV"}

Listing = dict[str, tuple[int, int]]


@dataclass
class InstalledPrism:
    """The wheel installed into a fresh venv; commands run in ``cwd``, outside the checkout."""

    venv: Path
    site_packages: Path
    cwd: Path
    env: dict[str, str]
    listing_after_install: Listing

    @property
    def package(self) -> Path:
        return self.site_packages / "prism"

    def run(self, *command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str) -> str:
        """Run ``code`` with the new venv's Python; returns its standard output."""
        result = self.run(self.venv / "bin" / "python", "-c", code)
        assert result.returncode == 0, result.stderr
        return result.stdout


def listing(folder: Path) -> Listing:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``python -m build`` makes from the checkout (build folder kept out of it)."""
    folder = tmp_path_factory.mktemp("wheel")
    # setuptools reads extra settings from $DIST_EXTRA_CONFIG: fresh build and egg-info
    # folders, so no stale file of the checkout's build/ ends up in the wheel and the build
    # writes nothing into the checkout.
    settings = folder / "build.cfg"
    settings.write_text(
        f"[build]\nbuild_base = {folder / 'build'}\n[egg_info]\negg_base = {folder}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", folder / "dist"],
        cwd=ROOT,
        env={**os.environ, "DIST_EXTRA_CONFIG": str(settings)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (built,) = (folder / "dist").glob("prism_serve-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledPrism:
    folder = tmp_path_factory.mktemp("installed")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    env = {name: value for name, value in os.environ.items() if name not in DROPPED_VARIABLES}
    # Installed before the .pth below exists, so pip sees an empty venv. --compile is pip's
    # default, made explicit: imports then find every module's bytecode and write none.
    pip = [sys.executable, "-m", "pip", "--python", python]
    install = subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", "--no-index", "--compile", wheel],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    project_site_packages = sysconfig.get_path("purelib")
    (site_packages / "prism-dependencies.pth").write_text(f"{project_site_packages}\n")
    return InstalledPrism(venv, site_packages, folder, env, listing(site_packages / "prism"))


def test_wheel_ships_the_profiles_the_grpc_stubs_and_the_kernel_sources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    profiles = sorted(path.name for path in DEPLOYMENTS_DIR.glob("*.yaml"))
    assert "local-cpu.yaml" in profiles
    for profile in profiles:
        assert f"prism/deployments/{profile}" in names
    for stub in STUBS:
        assert f"prism/proto/prism/v1/{stub}" in names
    assert "prism/proto/prism/v1/generation.proto" in names
    for source in KERNEL_SOURCES:
        assert f"prism/engine/kernels/{source.name}" in names
    assert f"prism/bench/quality/{QUALITY_TEXT.name}" in names


def test_installed_metadata_does_not_require_grpcio_tools(installed: InstalledPrism) -> None:
    (dist_info,) = installed.site_packages.glob("prism_serve-*.dist-info")
    requires = metadata.Distribution.at(dist_info).requires or []

    names = {re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0] for requirement in requires}
    assert "grpcio" in names
    for requirement in requires:
        if requirement.startswith("grpcio-tools"):
            assert 'extra == "dev"' in requirement, requirement


def test_installed_prism_runs_from_site_packages_and_writes_nothing_there(
    installed: InstalledPrism,
) -> None:
    paths = installed.python(
        "import sys, prism, prism.serving.app, prism.proto.stubs\n"
        "from prism.config import DEFAULT_PROFILE, load_config\n"
        "load_config(DEFAULT_PROFILE)\n"
        "print(prism.__file__, DEFAULT_PROFILE, *sys.path, sep='\\n')\n"
    ).splitlines()
    module, default_profile, *sys_path = map(Path, paths)
    assert module.is_relative_to(installed.package), module
    assert default_profile == installed.package / "deployments" / "local-cpu.yaml"
    # The project venv's editable install was not loaded: the checkout is not importable.
    assert all(not path.is_relative_to(ROOT / "platform") for path in sys_path), sys_path

    generated = installed.run(
        installed.venv / "bin" / "prism",
        "generate",
        "What is the capital of France?",
        "--max-tokens",
        "16",
    )
    assert generated.returncode == 0, generated.stderr
    assert "Paris" in generated.stdout

    helped = installed.run(installed.venv / "bin" / "prism", "serve", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout

    assert listing(installed.package) == installed.listing_after_install
