"""Every ```python block in docs/ and README.md runs, as written, or says why it cannot.

Each block runs alone as a script (`python -c`, so `if __name__ == "__main__":` holds) in a fresh
subprocess, with its own temporary working directory and `ASYNCFLOW_HOME`. A failure names the page and
line of the block, with the end of its output.

A block that cannot run alone says so in an HTML comment on the line just before its fence (mkdocs
leaves it out of the page; the block still renders as Python):

- `<!-- docs-example: fragment - REASON -->`: not run (a part of a program, shown to compare
  with something). Keep these few; prefer a block that runs.
- `<!-- docs-example: file NAME -->`: also saved as NAME in the working directory of every later block
  of the same page (the tutorial's `api.py`, which the later blocks import).
- `<!-- docs-example: needs NAME -->`: NAME is an optional extra in NEEDS (`dask`, `ray`); the block
  runs only where the extra's module imports, and then it must pass. Under `ASYNCFLOW_REQUIRE_<NAME>`
  (set by CI, as for the runners' own tests) a missing module is a failure, not a skip.

All blocks run up front in a few threads (each one is a separate process, mostly waiting for imports),
so the whole file takes about as long as its slowest few blocks.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
BLOCK_TIMEOUT = 90.0  # seconds per block; the slowest (a Dask LocalCluster) takes a few under load
NEEDS = {"dask": "distributed", "ray": "ray"}  # marker name -> the module the block needs
MARKER = re.compile(r"^<!--\s*docs-example:\s*(?P<kind>fragment|file|needs)\b\s*(?P<arg>.*?)\s*-->$")
FRAGMENT_REASON = re.compile(r"^-\s*\S")  # "fragment - why it cannot run"


@dataclass
class Block:
    page: str  # relative to the repository
    line: int  # line of the opening fence (1-based)
    code: str
    kind: str | None = None  # None (runs), "fragment", "file", "needs"
    arg: str = ""
    files: dict[str, str] = field(default_factory=dict)  # earlier "file" blocks of the page

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def extract(page: Path) -> list[Block]:
    """The ```python blocks of a page, with the marker (if any) on the line before each fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    files: dict[str, str] = {}
    rel = page.relative_to(ROOT).as_posix()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{rel}:{i + 1}: a ```python fence that is never closed"
            block = Block(rel, i + 1, "\n".join(lines[i + 1:end]) + "\n", files=dict(files))
            match = MARKER.match(lines[i - 1].strip()) if i else None
            if match:
                block.kind, block.arg = match["kind"], match["arg"]
                assert block.kind != "needs" or block.arg in NEEDS, (
                    f"{rel}:{i}: 'needs {block.arg}' is not one of {sorted(NEEDS)}")
            elif i and "docs-example" in lines[i - 1]:
                raise AssertionError(f"{rel}:{i}: malformed docs-example marker {lines[i - 1]!r}")
            if block.kind == "file":
                files[block.arg] = block.code
            blocks.append(block)
            i = end
        i += 1
    return blocks


BLOCKS = [block for page in PAGES for block in extract(page)]


@dataclass
class Outcome:
    returncode: int | None  # None: timed out
    output: str
    seconds: float


def run_block(block: Block) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="docs-example-") as tmp:
        for name, code in block.files.items():
            (Path(tmp) / name).write_text(code, encoding="utf-8")
        env = dict(os.environ, ASYNCFLOW_HOME=str(Path(tmp) / "home"), PYTHONUNBUFFERED="1")
        env.pop("ASYNCFLOW_STORE", None)
        env.pop("ASYNCFLOW_LOCAL_STORAGE_PATH", None)
        started = time.monotonic()
        try:
            result = subprocess.run([sys.executable, "-c", block.code], cwd=tmp, env=env, capture_output=True,
                                    text=True, timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return Outcome(None, out, time.monotonic() - started)
        return Outcome(result.returncode, result.stdout + result.stderr, time.monotonic() - started)


def missing_module(block: Block) -> str | None:
    if block.kind == "needs" and importlib.util.find_spec(NEEDS[block.arg]) is None:
        return NEEDS[block.arg]
    return None


def runnable(block: Block) -> bool:
    return block.kind != "fragment" and missing_module(block) is None


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """Every runnable block's outcome, run in parallel once for the module."""
    todo = [block for block in BLOCKS if runnable(block)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([block.where for block in todo], pool.map(run_block, todo), strict=True))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_the_docs_python_block_runs(block: Block, outcomes: dict[str, Outcome]):
    if block.kind == "fragment":
        assert FRAGMENT_REASON.match(block.arg), (
            f"{block.where}: a fragment marker says why the block cannot run: "
            f"<!-- docs-example: fragment - REASON -->, got {block.arg!r}")
        pytest.skip(f"{block.where} is a fragment: {block.arg[1:].strip()}")
    module = missing_module(block)
    if module is not None:
        if os.environ.get(f"ASYNCFLOW_REQUIRE_{block.arg.upper()}"):
            pytest.fail(f"{block.where} needs {module!r}, which ASYNCFLOW_REQUIRE_{block.arg.upper()} says is "
                        f"installed, but it does not import")
        pytest.skip(f"{block.where} needs {module!r}, which is not installed")
    outcome = outcomes[block.where]
    assert outcome.returncode is not None, (
        f"{block.where}: the block did not finish within {BLOCK_TIMEOUT:.0f} s; its output:\n"
        f"{outcome.output[-3000:]}")
    assert outcome.returncode == 0, (
        f"{block.where}: the block exited with {outcome.returncode}; its output ends:\n{outcome.output[-3000:]}")


def test_every_page_s_blocks_are_found_and_fragments_are_few():
    """The extractor sees the blocks (a changed fence style would silently test nothing), and the
    fragments stay an exception."""
    assert len(BLOCKS) >= 60
    fragments = [block.where for block in BLOCKS if block.kind == "fragment"]
    assert len(fragments) <= 6, f"too many blocks marked as fragments: {fragments}"
    pages_with_blocks = {block.page for block in BLOCKS}
    assert {"README.md", "docs/tutorial.md", "docs/calling-rules.md"} <= pages_with_blocks


def test_a_marker_not_on_the_line_before_a_python_fence_is_an_error():
    """A marker that would silently mark nothing (a blank line or another fence after it) fails here."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if "docs-example:" in line and line.strip().startswith("<!--"):
                following = lines[number].strip() if number < len(lines) else ""
                assert following == "```python", (
                    f"{page.relative_to(ROOT)}:{number}: a docs-example marker must be on the line just "
                    f"before a ```python fence; the next line is {following!r}")
                assert MARKER.match(line.strip()), f"{page.relative_to(ROOT)}:{number}: malformed {line!r}"
