"""Packaging: asyncflow is distributed as `asyncflow-anyio` (the name `asyncflow` on PyPI belongs to an
unrelated 2020 project) and imported as `asyncflow`; the sdist and wheel build cleanly, and the wheel
installed into a fresh virtual environment runs the quick start. What asyncflow imports when it loads
must be declared: the test environment installs more than a plain `pip install asyncflow-anyio` does
(trio brought in sniffio here once, and hid a missing dependency)."""

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPORT_NAMES = {"attrs": {"attr", "attrs"}}  # distribution -> the modules it provides
# modules of optional extras, imported only on first use (`asyncflow.task_runners.DaskTaskRunner`): the
# package they import at module level is the extra's own
EXTRA_MODULES = {"asyncflow/_runners/dask.py": ("dask", "distributed"), "asyncflow/_runners/ray.py": ("ray", "ray"),
                 "asyncflow/mypy.py": ("mypy", "mypy")}  # (the mypy plugin: loaded by mypy only)


def _declared() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    names = {re.match(r"\s*\"([A-Za-z0-9_.-]+)", line).group(1).lower()
             for line in block.splitlines() if line.strip().startswith('"')}
    modules = set()
    for name in names:
        modules |= IMPORT_NAMES.get(name, {name.replace("-", "_")})
    return modules


def _module_level_imports() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in (ROOT / "asyncflow").rglob("*.py"):
        if str(path.relative_to(ROOT)) in EXTRA_MODULES:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are optional extras
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _extra(name: str) -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(rf"^{name} = \[(.*?)\]", text, re.S | re.M).group(1)
    return {re.match(r"\s*\"([A-Za-z0-9_.-]+)", part).group(1).lower().replace("-", "_")
            for part in block.split(",") if part.strip().startswith('"')}


def test_every_module_level_import_is_stdlib_asyncflow_or_a_declared_dependency():
    declared = _declared()
    ui = _extra("ui")  # the web UI's modules (asyncflow/server/_*.py, loaded only by `server start`)
    undeclared = {name: where for name, where in _module_level_imports().items()
                  if name not in sys.stdlib_module_names and name != "asyncflow" and name not in declared
                  and name != "__future__"
                  and not (name in ui and where.startswith("asyncflow/server/_"))}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


DISTRIBUTION = "asyncflow-anyio"


def test_the_distribution_is_asyncflow_anyio_and_its_version_is_the_package_version():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "asyncflow-anyio"$', text, re.M)
    assert 'dynamic = ["version"]' in text and 'path = "asyncflow/__init__.py"' in text


def _install_lines() -> list[tuple[str, str]]:
    lines = []
    paths = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py"),
             *(ROOT / "examples").rglob("*.md"),
             *(ROOT / "asyncflow").rglob("*.py"), ROOT / "pyproject.toml", ROOT / "tox.ini",
             ROOT / ".ci" / "run"]
    for path in paths:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if re.search(r"\b(pip|uv pip|pipx) install\b|\buv add\b|\bpoetry add\b", line):
                    lines.append((str(path.relative_to(ROOT)), line))
    return lines


def test_every_install_line_installs_asyncflow_anyio_or_the_checkout():
    """`pip install asyncflow` installs somebody else's project."""
    assert _install_lines()
    wrong = [(where, line) for where, line in _install_lines()
             if re.search(r"""install\s+(-\S+\s+)*["']?asyncflow(?![-\w])""", line)]
    assert not wrong, f"install lines naming the wrong distribution: {wrong}"


def test_the_readme_quick_start_is_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and "examples/quickstart.py" in commands[0] and "pytest" in commands[1]


@pytest.mark.timeout(300)
def test_the_sdist_and_wheel_build_cleanly_and_the_wheel_runs_the_quick_start_in_a_fresh_venv(tmp_path):
    """What a user gets: build both archives (the wheel from the sdist, so the sdist is complete), check
    them with twine, install the wheel by itself into a new virtual environment (its dependencies from
    the package index, with the pip configuration the README's quick start uses) and run the quick
    start there, away from the checkout."""
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCFLOW_", "PYTHONPATH"))}
    env["ASYNCFLOW_HOME"] = str(tmp_path / "home")

    def run(*command: str | Path, cwd: Path = ROOT, timeout: float = 180) -> str:
        proc = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    assert "warning" not in built.lower(), built
    wheel, = dist.glob("asyncflow_anyio-*-py3-none-any.whl")
    sdist, = dist.glob("asyncflow_anyio-*.tar.gz")
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "asyncflow/py.typed" in names and "asyncflow/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "docs/", "bench/"))]

    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, timeout=240)
    work = tmp_path / "elsewhere"  # not the checkout: `import asyncflow` must find the installed package
    work.mkdir()
    (work / "quickstart.py").write_text((ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8"))
    out = run(python, "quickstart.py", cwd=work, timeout=60)
    assert "Finished in state Completed()" in out and "second lookup Cached" in out, out
    check = ("import asyncflow, importlib.metadata as m; "
             f"print(asyncflow.__file__, m.version({DISTRIBUTION!r}) == asyncflow.__version__)")
    where = run(python, "-c", check, cwd=work)
    assert str(venv) in where and where.strip().endswith("True"), where
    assert "Version:" in run(venv / "bin" / "asyncflow", "version", cwd=work)


def test_the_web_ui_is_an_optional_extra_loaded_only_when_served():
    """`asyncflow.server` imports without the extra `ui`; nothing else imports its modules when it loads."""
    assert _extra("ui") == {"starlette", "uvicorn", "jinja2"}
    init = ast.parse((ROOT / "asyncflow" / "server" / "__init__.py").read_text())
    assert not [n.module for n in init.body if isinstance(n, ast.ImportFrom) and n.level == 0
                and n.module.split(".")[0] not in sys.stdlib_module_names]
    for path in (ROOT / "asyncflow").rglob("*.py"):
        if "server" in path.parts:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                assert "server" not in (node.module or ""), f"{path} imports the web UI when it loads"

def test_the_modules_of_optional_extras_import_only_their_extras_package_and_are_declared():
    text = (ROOT / "pyproject.toml").read_text()
    declared = _declared()
    for relative, (extra, package) in EXTRA_MODULES.items():
        assert re.search(rf'^{extra} = \[\s*"{package}', text, re.M), f"extra {extra!r} does not install {package}"
        for node in ast.parse((ROOT / relative).read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                assert (name in sys.stdlib_module_names or name in declared
                        or name in ("asyncflow", package, "__future__")), (relative, name)
