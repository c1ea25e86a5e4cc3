"""The benchmark command runs (its figures are never asserted: benchmarks are not tests)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_command_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "-s", "a", "c_sync", "-n", "20", "-r", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a. sync flow calls a sync task in sequence (N=20)" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["scenarios"]) == {"a", "c_sync"}
    assert data["scenarios"]["a"]["asyncflow"]["per_task_us"]["median"] > 0


def test_the_no_loss_benchmark_finds_every_run_in_the_store(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "-s", "l", "-n", "300", "-r", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())["scenarios"]["l"]["asyncflow"]
    for name in ("submitted", "sequential"):
        assert figures[f"{name}_missing_task_runs"]["median"] == 0
        assert figures[f"{name}_missing_states"]["median"] == 0


def test_the_web_ui_benchmark_runs(tmp_path):
    import pytest

    pytest.importorskip("starlette")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ui.py"), "--runs", "200", "--tasks", "120", "--repeats", "1",
         "--home", str(tmp_path / "home")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asyncflow server start: first answer" in result.stdout
    assert "/runs (the newest 50)" in result.stdout


def test_the_benchmark_sets_each_store_side_by_side_and_prints_the_issue_targets(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "-s", "a", "q", "r", "o", "p", "-n", "40", "-r", "1",
         "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())["scenarios"]
    assert data["a"]["asyncflow+memory"]["per_task_us"]["median"] > 0  # the memory store's run beside the default
    assert "asyncflow+memory" not in data["q"]  # q is about the SQLite store itself
    assert data["q"]["asyncflow"]["bytes_per_task_run"]["median"] > 0
    assert data["q"]["asyncflow"]["writer_cpu_per_task_run_us"]["median"] >= 0
    assert data["p"]["asyncflow"]["wall_n_over_ideal"]["median"] >= 1  # no flow ends before its 0.1 s sleep
    assert "default ÷ memory" in result.stdout
    for row in ("default store ÷ memory store", "bytes in the store per task run", "last tenth ÷ first tenth",
                "10×N vs N concurrent flows"):
        assert row in result.stdout


def test_the_cold_start_benchmark_reports_each_start_over_import_anyio_timed_in_turn(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "-s", "g", "-r", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ours = json.loads(out.read_text())["scenarios"]["g"]["asyncflow"]
    assert ours["import_over_anyio"]["median"] > 0 and ours["script_over_anyio"]["median"] > 0
    assert "import asyncflow ÷ import anyio (g)" in result.stdout
    assert "one-flow script, wall, ÷ import anyio (g)" in result.stdout
