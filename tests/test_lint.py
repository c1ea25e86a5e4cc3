"""The code, the tests, the benchmarks and the examples pass ruff with the project's configuration
(pyproject.toml: 120 columns, enforced, and the SIM, RUF and ASYNC families among others), so a lint
error fails the suite, in CI too, instead of piling up."""

import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the config test needs tomli (pip's own dependencies usually bring it)
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_in_the_code_tests_bench_and_examples():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "asyncflow", "tests", "bench",
                             "examples"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lint_config_enforces_the_line_length_and_the_rule_families_it_names():
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert {"E", "SIM", "RUF", "ASYNC"} <= set(lint["select"])
    assert "E501" not in lint.get("ignore", []), "the line length is enforced, not ignored"
    assert "per-file-ignores" not in lint, "targeted '# noqa: CODE - reason' only, no per-file blanket ignores"
