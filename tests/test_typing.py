"""The types match the docs: mypy (with asyncflow's plugin) and pyright check tests/typing/check_api.py,
which asserts the type of every documented call and marks the misuses that must stay errors; mypy checks
the package itself. Each runs as a subprocess, as a user or CI would run it, and must report no error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    """One cache for this file's mypy runs: the package is analysed once, not twice."""
    return str(tmp_path_factory.mktemp("mypy-cache"))


def test_mypy_infers_the_documented_types_and_rejects_the_misuses(mypy_cache):
    done = _run([sys.executable, "-m", "mypy", "--config-file", str(TYPING / "mypy.ini"),
                 "--cache-dir", mypy_cache, str(TYPING / "check_api.py")], ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_pyright_infers_the_documented_types_and_rejects_the_misuses():
    done = _run([sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "-p",
                 str(TYPING / "pyrightconfig.json")], TYPING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors" in done.stdout


def test_the_package_type_checks_with_mypy(mypy_cache):
    done = _run([sys.executable, "-m", "mypy", "--cache-dir", mypy_cache, "asyncflow"], ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_typed_calls_run_as_typed(tmp_path):
    done = _run([sys.executable, str(TYPING / "check_api.py")], ROOT,
                ASYNCFLOW_HOME=str(tmp_path / "home"), ASYNCFLOW_LOGGING_LEVEL="WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["43", "None"]
