"""scripts/bootstrap, run on a copy of itself with stand-ins for the interpreters it finds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checkout(tmp_path: Path) -> Path:
    """A folder laid out like the repository, with only what bootstrap reads."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "bootstrap", root / "scripts" / "bootstrap")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _pyenv_shims(folder: Path) -> None:
    """What pyenv puts on PATH for versions that are installed but not selected: shims that complain."""
    for version in ("3.13", "3.12"):
        _script(
            folder / f"python{version}",
            f'echo "pyenv: python{version}: command not found" >&2\n'
            f'echo "The \\`python{version}\' command exists in these Python versions:" >&2\nexit 127',
        )
    os.symlink(sys.executable, folder / "python3.11")


def _bootstrap(root: Path, shims: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    env.pop("PYTHON", None)
    return subprocess.run(
        [str(root / "scripts" / "bootstrap")], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_probing_for_an_interpreter_says_nothing_about_pyenv_shims(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _pyenv_shims(tmp_path / "shims")
    os.symlink(sys.executable, _venv_python_path(root))
    (root / ".venv" / ".dealstream-installed").touch()  # installed already: bootstrap only probes
    done = _bootstrap(root, tmp_path / "shims")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_the_venv_gets_current_pip_setuptools_and_wheel(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _pyenv_shims(tmp_path / "shims")
    calls = root / "calls.txt"
    _script(_venv_python_path(root), f'echo "$@" >> "{calls}"')  # records what bootstrap asks the venv to do
    done = _bootstrap(root, tmp_path / "shims")
    assert done.returncode == 0, done.stderr
    assert "pyenv" not in done.stderr
    upgrade = calls.read_text().splitlines()[0].split()
    assert upgrade[:2] == ["-m", "pip"] and "install" in upgrade and "-U" in upgrade
    assert {"pip", "setuptools", "wheel"} <= set(upgrade)


def _venv_python_path(root: Path) -> Path:
    path = root / ".venv" / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
