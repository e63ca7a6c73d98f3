#!/usr/bin/env python3
"""Set up and run jaxrobust on a fresh machine with nothing but Python >= 3.11.

    python3 dev.py run    # venv + install, then the whole study on the embedded quick config
    python3 dev.py test   # venv + install with test extras, then the test suite (pytest)

Both create ./.venv on first use and reuse it afterwards. Extra arguments after `run` go to
`jaxrobust reproduce` (e.g. `python3 dev.py run --workdir runs/other train.epochs=5`); after
`test` they go to pytest (e.g. `python3 dev.py test -k attack`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv(extras: str) -> Path:
    """Creates .venv if needed and installs the package (editable) with `extras`."""
    python = BIN / ("python.exe" if os.name == "nt" else "python")
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extras}]" if extras else "."
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", spec], check=True, cwd=ROOT)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        python = ensure_venv("")
        if not any(a.startswith("--workdir") for a in rest):
            rest = ["--workdir", "runs/quick"] + rest
        if not any(a.startswith("--config") for a in rest):
            rest = ["--config", "configs/quick.py"] + rest
        return subprocess.run([str(python), "-m", "jaxrobust.cli", "reproduce", *rest], cwd=ROOT).returncode
    python = ensure_venv("test,tfds")
    return subprocess.run([str(python), "-m", "pytest", "-q", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
