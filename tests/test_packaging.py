"""What asyncflow imports when it loads must be declared: the test environment installs more than a
plain `pip install asyncflow` does (trio brought in sniffio here once, and hid a missing dependency)."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_NAMES = {"attrs": {"attr", "attrs"}}  # distribution -> the modules it provides
# modules of optional extras, imported only on first use (`asyncflow.task_runners.DaskTaskRunner`): the
# package they import at module level is the extra's own
EXTRA_MODULES = {"asyncflow/_runners/dask.py": ("dask", "distributed"), "asyncflow/_runners/ray.py": ("ray", "ray")}


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


def test_every_module_level_import_is_stdlib_asyncflow_or_a_declared_dependency():
    declared = _declared()
    undeclared = {name: where for name, where in _module_level_imports().items()
                  if name not in sys.stdlib_module_names and name != "asyncflow" and name not in declared
                  and name != "__future__"}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


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
                assert name in sys.stdlib_module_names or name in declared or name in ("asyncflow", package,
                                                                                          "__future__"), (relative, name)
