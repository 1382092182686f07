"""``make setup`` recovers from an interrupted run instead of failing from then on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pip_works(venv: Path) -> bool:
    check = subprocess.run([venv / "bin" / "python", "-m", "pip", "--version"], check=False)
    return check.returncode == 0


def test_a_venv_left_without_pip_is_made_anew(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # What Ctrl-C leaves while the venv is being created: a Python, but no pip yet.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    assert not pip_works(venv)

    subprocess.run(
        ["make", "--no-print-directory", "venv", f"VENV={venv}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        check=True,
    )

    assert pip_works(venv)
