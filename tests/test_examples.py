"""Every script in examples/ runs to completion and prints what its seed document promises.

Each example runs as a subprocess (``sys.executable``, cwd = examples/, so ``import _local_api`` works),
offline, with stdout and stderr merged and unbuffered so prints and log lines keep their order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
FLOW_COMPLETED = "Finished in state Completed("


@dataclass
class Example:
    script: str
    contains: list[str] = field(default_factory=list)  # substrings that must appear (any order)
    in_order: list[str] = field(default_factory=list)  # substrings that must appear in this order
    counts: dict[str, int] = field(default_factory=dict)  # substring -> exact number of occurrences
    line_counts: dict[str, int] = field(default_factory=dict)  # whole (stripped) line -> exact number
    absent: list[str] = field(default_factory=lambda: ["Traceback"])
    env: dict[str, str] = field(default_factory=dict)


EXAMPLES = [
    # --- the project's main example ---
    Example(
        "quickstart.py",
        contains=[
            "Created flow run",
            "Retry 1/1 will start immediately",
            "fetched inventory-service on attempt 2",
            "Finished in state Cached(",
            "slow_lookup: first run Completed, second run Cached (function executed 1x)",
            "flaky_fetch returned 'data from inventory-service'",
            "squares: [1, 4, 9, 16, 25], total: 55",
        ],
        in_order=["Summary: total=55, fetched='data from inventory-service', second lookup Cached", FLOW_COMPLETED],
        counts={"Created task run 'square-": 5},
        absent=["Traceback", "ERROR"],
    ),
    # --- seed 000: tasks documentation ---
    Example(
        "repo_info.py",
        in_order=[
            "Created flow run", "for flow 'get-repo-info'",
            "Created task run 'get_url-0' for task 'get_url'",
            "Task run 'get_url-0' - Finished in state Completed()",
            "- PrefectHQ/prefect repository statistics 🤓:",
            "- Stars 🌠 : 12157",
            "- Forks 🍴 : 1251",
            FLOW_COMPLETED,
        ],
    ),
    Example("sync_task.py",
            contains=["Hello, I'm a task", "Task run 'print_message-0' - Finished in state Completed()"]),
    Example("async_task.py",
            in_order=["Hello, I'm an async task", "Task run 'print_message-0' - Finished in state Completed()"]),
    Example("class_methods.py", in_order=[
        "instance method called on MyClass", "Task run 'my_instance_method-0' - Finished in state Completed()",
        "class method called on MyClass", "Task run 'my_class_method-0' - Finished in state Completed()",
        "static method called", "Task run 'my_static_method-0' - Finished in state Completed()",
    ]),
    Example(
        "generator_task.py",
        in_order=["Created task run 'generator-0'", "Task run 'consumer-9' - Finished in state Completed()",
                  "Task run 'generator-0' - Finished in state Completed()"],
        line_counts={str(i): 1 for i in range(10)},
        counts={"Finished in state Completed()": 11},
    ),
    Example("generator_returned.py", in_order=[
        "Generator consumed!", "Task run 'f-0' - Finished in state Completed()", "f() returned [1, 2, 3]"]),
    Example("generator_yielded.py", in_order=[
        "got the generator; consuming it now", "Generator consumed!", "values: [1, 2, 3]"]),
    Example(
        "repo_info_issues.py",
        contains=["- PrefectHQ/prefect repository statistics 🤓:", "- Stars 🌠 : 12157", "- Forks 🍴 : 1251",
                  "- Average open issues per user 💌 : 2.27"],
        counts={"Created task run 'get_url-": 8, "Task run 'get_url-": 8},
        in_order=["Average open issues per user", FLOW_COMPLETED],
    ),
    Example(
        "repo_info_concurrent.py",
        contains=["- PrefectHQ/prefect repository statistics 🤓:", "- Stars 🌠 : 12157", "- Forks 🍴 : 1251",
                  "- Average open issues per user 💌 : 2.27"],
        counts={"Created task run 'get_url-": 8, "Task run 'get_url-": 8},
        in_order=["Average open issues per user", FLOW_COMPLETED],
    ),
    Example("task_name_description.py", contains=[
        "Created task run 'hello-task-0' for task 'hello-task'", "- Hello, I'm a task",
        "task name: hello-task; description: This task says hello.", FLOW_COMPLETED]),
    Example("task_run_name_template.py", contains=["Created task run 'hello-marvin-on-", "' for task 'My Example Task'",
                                                   FLOW_COMPLETED]),
    Example("task_run_name_function.py", contains=["-is-a-lovely-day' for task 'My Example Task'", FLOW_COMPLETED]),
    Example("task_run_name_runtime.py", contains=[
        "Created task run 'my-flow-my-example-task-with-marvin-and-100' for task 'my-example-task'", FLOW_COMPLETED]),
    Example("task_tags_decorator.py", contains=["Hello, I'm a task", "task run tags: ['test']", FLOW_COMPLETED]),
    Example("tags_context.py", contains=["Hello, I'm a task", "task run tags: ['test']", FLOW_COMPLETED]),
    # Only defines the task, as in the seed (sync timeouts are not enforced yet): it must import cleanly.
    Example("task_timeout.py", in_order=["I will execute", "Task run exceeded timeout of 1 second(s)",
                                         "Finished in state TimedOut("], absent=["Traceback", "I will not execute"]),
    Example("delay_task.py", in_order=["delayed task run", "Scheduled()", "sent 'Welcome!' to user@example.com"]),
    Example("web_service.py", in_order=["3 signups answered in", "Completed - welcome email sent to user0@example.org",
                                        "Completed - welcome email sent to user2@example.org"]),
    Example(
        "retry_task.py",
        in_order=["Retry 1/2 will start 0.1 second(s) from now", "Retry 2/2 will start 0.1 second(s) from now",
                  "Task run 'get_data_task-0' - Finished in state Completed()",
                  "got 'hello from the brittle service' on attempt 3", FLOW_COMPLETED],
        counts={"Created task run": 1},
        absent=[],  # the failed attempts are logged with their tracebacks
    ),
    Example(
        "retry_manual_backoff.py",
        in_order=["Retry 1/3 will start 0.1 second(s) from now", "Retry 2/3 will start 0.2 second(s) from now",
                  "Retry 3/3 will start 0.4 second(s) from now", "succeeded on attempt 4",
                  "delays between attempts:", FLOW_COMPLETED],
        absent=[],
    ),
    Example(
        "retry_condition.py",
        in_order=["Retry 1/1 will start", "status 503: 2 attempt(s), flow finished in state Failed",
                  "status 404: 1 attempt(s), flow finished in state Failed"],
        counts={"Retry 1/1 will start": 1},
        absent=[],
    ),
    Example(
        "retry_exponential_backoff.py",
        in_order=["delays: [0.05, 0.1, 0.2]", "Retry 1/3 will start 0.05 second(s) from now",
                  "Retry 2/3 will start 0.1 second(s) from now", "succeeded on attempt 3", FLOW_COMPLETED],
        absent=[],
    ),
    Example("retry_jitter.py", in_order=["Retry 1/3 will start", "Retry 2/3 will start", "succeeded on attempt 3",
                                         FLOW_COMPLETED], absent=[]),
    Example(
        "retry_global_defaults.py",
        in_order=["Retry 1/2 will start 0.1 second(s) from now", "Retry 2/2 will start 0.1 second(s) from now",
                  "succeeded on attempt 3", "never_retried ran 1 time(s) and finished in state Failed", FLOW_COMPLETED],
        absent=[],
    ),
    # --- seed 001: tasks concepts page ---
    Example("explain_tasks.py", in_order=[
        "Task run 'explain_tasks-0' - run any python code here!",
        "Task run 'explain_tasks-0' - but maybe just a little bit",
        "Task run 'explain_tasks-0' - Finished in state Completed()"]),
    Example("add_integers.py", contains=["Task run 'add_integers-0' - Finished in state Completed()",
                                         "add_integers(1, 2) = 3"]),
    Example("add_integers_submit.py", in_order=["- future.result() = 3", FLOW_COMPLETED]),
    Example("dataclass_resolution.py", in_order=[
        "- init_count before task = 1", "- init_count inside task = 2", "- adjusted_rate = 100.0", FLOW_COMPLETED]),
    Example("quote_dataclass.py", in_order=["- adjusted_rate = 150.0", FLOW_COMPLETED]),
    Example("opaque_future.py", in_order=["- adjusted_rate = 150.0", FLOW_COMPLETED]),
    # --- seed 003: flow and task configuration tutorial ---
    Example("flow_name.py", in_order=["for flow 'My Example Flow'", "running 'My Example Flow'", FLOW_COMPLETED,
                                      "flow name: My Example Flow"]),
    Example("flow_description.py", contains=["flow description: An example flow for a tutorial.", FLOW_COMPLETED]),
    Example("flow_docstring_description.py",
            contains=["flow description: An example flow for a tutorial.", FLOW_COMPLETED]),
    Example("flow_version.py", contains=["flow version: tutorial_02", FLOW_COMPLETED]),
    Example("flow_version_git_sha.py", contains=["flow version: 0123abc", FLOW_COMPLETED],
            env={"GIT_COMMIT_SHA": "0123abc"}),
    Example("task_name_description_flow.py", contains=[
        "for task 'My Example Task'", "doing some work",
        "task name: My Example Task; description: An example task for a tutorial.", FLOW_COMPLETED]),
    Example("task_tags_flow.py", contains=["task run tags: ['tag-test', 'tutorial']", FLOW_COMPLETED]),
    Example(
        "retries_failure.py",
        in_order=["Retry 1/2", "Retry 2/2", "Retries are exhausted", "Task run 'failure-0' - Finished in state Failed(",
                  "flow finished in state Failed("],
        line_counts={"running": 3},
        counts={"Created task run": 1},
        absent=[],
    ),
    Example(
        "caching_task_input_hash.py",
        in_order=["Saying hello Marvin", "Task run 'hello_task-0' - Finished in state Completed()",
                  "Task run 'hello_task-0' - Finished in state Cached(",
                  "Saying hello Trillian", "Task run 'hello_task-0' - Finished in state Completed()"],
        counts={"Saying hello Marvin": 1, "Saying hello Trillian": 1, "Finished in state Cached(": 1,
                "Created flow run": 3},
    ),
    Example(
        "caching_sum_key.py",
        in_order=["{'nums': [2, 2]}", "running an expensive operation", "Finished in state Completed()",
                  "{'nums': [2, 2]}", "Finished in state Cached(",
                  "{'nums': [1, 3]}", "Finished in state Cached(",
                  "{'nums': [2, 3]}", "running an expensive operation", "Finished in state Completed()"],
        counts={"running an expensive operation": 2, "Finished in state Cached(": 2, "Created flow run": 4},
    ),
    Example("sequential_task_runner.py", in_order=[
        "for flow 'My Example Flow'", "Task run 'first_task-0' - Finished in state Completed()",
        "Task run 'second_task-0' - Finished in state Completed()", "add: 10, square: 100", FLOW_COMPLETED]),
]


def _run(example: Example, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the example in a process of its own (the 60 s timeout is a hang guard; how fast examples run is
    the benchmark suite's business, not a test's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_") and k != "GIT_COMMIT_SHA"}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", ASYNCFLOW_HOME=str(home), **example.env)
    return subprocess.run(
        [sys.executable, example.script], cwd=EXAMPLES_DIR, env=env, timeout=60,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.script.removesuffix(".py") for e in EXAMPLES])
def test_example(example: Example, tmp_path: Path) -> None:
    proc = _run(example, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"{example.script} exited with {proc.returncode}:\n{out}"
    for text in example.contains:
        assert text in out, f"{text!r} not in the output of {example.script}:\n{out}"
    position = 0
    for text in example.in_order:
        found = out.find(text, position)
        assert found >= 0, f"{text!r} not found (in order) after offset {position} in {example.script}:\n{out}"
        position = found + len(text)
    for text, expected in example.counts.items():
        assert out.count(text) == expected, f"{text!r} appears {out.count(text)}x, expected {expected}x:\n{out}"
    lines = [line.strip() for line in out.splitlines()]
    for line, expected in example.line_counts.items():
        assert lines.count(line) == expected, (
            f"line {line!r} appears {lines.count(line)}x, expected {expected}x:\n{out}")
    for text in example.absent:
        assert text not in out, f"{text!r} unexpectedly in the output of {example.script}:\n{out}"


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {e.script for e in EXAMPLES}


def test_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    missing = [e.script for e in EXAMPLES if f"`{e.script}`" not in readme]
    assert not missing, f"examples/README.md does not mention {missing}"
