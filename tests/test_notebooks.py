"""asyncflow in a real IPython kernel (Jupyter): the kernel runs every cell on its event loop's thread.

A cell without `await` is sync code: a sync flow called there returns its value. A cell with top-level
`await` is async code: it awaits flows and tasks. (SPEC §2, the calling rule by the caller's frame.)
"""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("ipykernel")
jupyter_client_manager = pytest.importorskip("jupyter_client.manager")

pytestmark = pytest.mark.timeout(90)


class Kernel:
    """A kernel of this environment's Python, through a kernel spec of its own (a machine-wide
    `python3` spec could name another interpreter)."""

    def __init__(self, home: str, specs: str) -> None:
        spec_dir = os.path.join(specs, "kernels", "asyncflow-test")
        os.makedirs(spec_dir)
        with open(os.path.join(spec_dir, "kernel.json"), "w", encoding="utf-8") as file:
            json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "asyncflow test", "language": "python"}, file)
        env = dict(os.environ, ASYNCFLOW_HOME=home, PYTHONWARNINGS="default")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("JUPYTER_PATH", specs)
            self.manager, self.client = jupyter_client_manager.start_new_kernel(
                kernel_name="asyncflow-test", startup_timeout=60, env=env)

    def run(self, code: str) -> tuple[str, str, list[str]]:
        """Run a cell: (stdout, stderr, errors), waiting until the kernel is idle again."""
        msg_id = self.client.execute(code)
        out, err, errors = [], [], []
        while True:
            msg = self.client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"]["text/plain"] + "\n")
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out), "".join(err), errors

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(str(tmp_path_factory.mktemp("asyncflow-home")), str(tmp_path_factory.mktemp("jupyter")))
    try:
        out, _, errors = k.run("import sys; print(sys.executable)")
        assert not errors and out.strip() == sys.executable  # the kernel runs this environment's asyncflow
        yield k
    finally:
        k.close()


DEFINE = """
import asyncio, threading
from asyncflow import flow, task

@task
def add(a, b):
    return a + b

@task
async def mul(a, b):
    await asyncio.sleep(0)
    return a * b

@flow
def total(n):
    futures = [mul.submit(i, 2) for i in range(n)]
    return add(1, 2) + sum(f.result() for f in futures)

@flow
async def atotal(n):
    return await add(n, 1) + await mul(n, 3)

print("loop running in the cell's thread:", asyncio._get_running_loop() is not None)
"""


def test_a_cell_without_await_gets_the_value_of_a_sync_flow(kernel):
    out, _, errors = kernel.run(DEFINE)
    assert not errors and "loop running in the cell's thread: True" in out
    out, _, errors = kernel.run('print("sync cell:", total(3))\nstate = total(2, return_state=True)\n'
                                'print("state:", state.result())')
    assert not errors, errors
    assert "sync cell: 9" in out and "state: 5" in out


def test_a_cell_with_top_level_await_awaits_flows_tasks_and_state_results(kernel):
    kernel.run(DEFINE)
    out, _, errors = kernel.run('print("await cell:", await atotal(2))\n'
                                'state = await atotal(1, return_state=True)\n'
                                'print("awaited state:", await state.result())\n'
                                'print("sync flow awaited:", await total(1))')
    assert not errors, errors
    assert "await cell: 9" in out and "awaited state: 5" in out and "sync flow awaited: 3" in out


def test_an_unawaited_async_flow_in_a_cell_warns_naming_it(kernel):
    kernel.run(DEFINE)
    _, err, errors = kernel.run("pending = atotal(2)\ndel pending")
    assert not errors, errors
    assert "coroutine 'atotal() [an asyncflow flow called without await" in err and "`await atotal(...)`" in err
