"""What asyncflow imports when it loads must be declared: the test environment installs more than a
plain `pip install asyncflow` does (trio brought in sniffio here once, and hid a missing dependency)."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_NAMES = {"attrs": {"attr", "attrs"}}  # distribution -> the modules it provides


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
