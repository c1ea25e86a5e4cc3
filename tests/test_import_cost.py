"""`import asyncflow` loads what defining and running a flow needs, and nothing else: the client, the
CLI, the process runner, the memory store, result persistence, pickling, ctypes, attrs and asyncio
(with its ssl, socket and subprocess) are imported when first used. Checked in fresh interpreters, by module
names, not by time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Each one is imported on first use; none is needed to define a flow or run it on the default store.
HEAVY = {
    "asyncio", "ssl", "socket", "subprocess", "concurrent.futures.process", "pickle", "cloudpickle", "ctypes",
    "tempfile", "shutil", "bz2", "lzma", "cattrs",
    "asyncflow.client", "asyncflow.cli", "asyncflow.server", "asyncflow._store.memory", "asyncflow._store.reads",
    "asyncflow._store.sqlite", "asyncflow._runners.process", "asyncflow._caching", "asyncflow._results",
    # concurrency limits (and sqlite3, which only they and the store need), transactions, OpenSSL's md5,
    # and anyio's thread hops, portals and checkpoints (with concurrent.futures and typing_extensions)
    "sqlite3", "asyncflow._limits", "asyncflow._transactions", "hashlib", "_hashlib", "anyio.to_thread",
    "anyio.from_thread", "anyio.lowlevel", "concurrent.futures", "typing_extensions",
    "pathlib",  # (with urllib.parse and ipaddress: the first setting read imports it)
    # the records on the import path are hand-written slots classes; attrs is for the modules above
    "attrs", "attr",
}
# A sync flow calling a sync task on the SQLite store (the default) still needs none of these: a task
# that sets no caching option has the default policy, looked up when read, and persists nothing.
NOT_FOR_A_SYNC_FLOW = {
    "asyncio", "ssl", "subprocess", "cloudpickle", "pickle", "ctypes", "tempfile", "shutil", "bz2", "lzma",
    "asyncflow.client", "asyncflow.cli", "asyncflow.server", "asyncflow._store.memory", "asyncflow._store.reads",
    "asyncflow._runners.process",
    # a run without tags waits for no concurrency slot; no transaction encloses it; its task key and
    # flow version are md5s without OpenSSL; a sync flow hops no thread and starts no loop
    "asyncflow._limits.tags", "asyncflow._limits.acquire", "asyncflow._transactions", "hashlib", "_hashlib",
    "anyio.to_thread", "anyio.from_thread", "anyio.lowlevel", "concurrent.futures",
    "asyncflow._caching",  # (not _results: the store's background retention pass may prune lock files)
    "attrs", "attr",  # (parameters are searched for attrs instances by their class's `__attrs_attrs__`)
}


def loaded_after(code: str, tmp_path, watched: set[str]) -> list[str]:
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted(m for m in sys.modules if m in {sorted(watched)!r})))
    """)
    env = {**os.environ, "ASYNCFLOW_HOME": str(tmp_path / "home")}
    env.pop("ASYNCFLOW_STORE", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_asyncflow_loads_no_heavy_module(tmp_path):
    assert loaded_after("import asyncflow", tmp_path, HEAVY) == []


def test_a_sync_flow_on_the_default_store_loads_no_heavy_module(tmp_path):
    code = """
        import asyncflow

        @asyncflow.task
        def hello():
            return 1

        @asyncflow.flow
        def main():
            return hello()

        assert main() == 1
    """
    assert loaded_after(code, tmp_path, NOT_FOR_A_SYNC_FLOW) == []


def test_the_store_writer_process_imports_the_store_and_not_the_engine(tmp_path):
    # the writer process starts the way writer_pipe.WriterChild starts it: the package without its
    # __init__; what it imports is most of its start (~40 ms before it can take over the writing)
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "asyncflow")
    code = f"""
        import sys, types
        package = types.ModuleType("asyncflow"); package.__path__ = [{package!r}]
        sys.modules["asyncflow"] = package
        from asyncflow._store.writer_child import main
    """
    engine = {"inspect", "random", "asyncio", "anyio", "asyncflow._flows", "asyncflow._tasks",
              "asyncflow._engine.task_run", "asyncflow._logging", "asyncflow._settings"}
    assert loaded_after(code, tmp_path, engine | {"asyncflow._store.sqlite"}) == ["asyncflow._store.sqlite"]


def test_lazy_public_names_resolve_to_their_modules(tmp_path):
    code = """
        import asyncflow, asyncflow.task_runners as runners, asyncflow._store as store
        from asyncflow import get_client
        from asyncflow.client import get_client as client_get_client
        from asyncflow.task_runners import ProcessPoolOptions, ProcessPoolTaskRunner
        from asyncflow._runners import process
        from asyncflow._store import MemoryStore
        from asyncflow._store.memory import MemoryStore as memory_store
        from asyncflow import transaction
        from asyncflow.transactions import transaction as transactions_transaction
        assert transaction is transactions_transaction and asyncflow.transaction is transaction
        assert get_client is client_get_client and asyncflow.get_client is get_client
        assert ProcessPoolTaskRunner is process.ProcessPoolTaskRunner
        assert ProcessPoolOptions is process.ProcessPoolOptions
        assert MemoryStore is memory_store
        assert "transaction" in dir(asyncflow) and "get_client" in dir(asyncflow)
        assert "ProcessPoolTaskRunner" in dir(runners)
        try:
            asyncflow.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("asyncflow.no_such_name did not raise")
    """
    assert loaded_after(code, tmp_path, {"asyncflow.client", "asyncflow._runners.process", "asyncflow._store.memory"}
                        ) == ["asyncflow._runners.process", "asyncflow._store.memory", "asyncflow.client"]


def test_an_asyncio_loop_started_after_import_is_seen(tmp_path):
    """asyncflow asks whether an asyncio loop runs without importing asyncio; a loop started after
    `import asyncflow` (asyncio imported later by the user) is still seen: a task called in it runs
    on that loop, not in a nested one."""
    code = """
        import asyncflow
        from asyncflow._engine.loop import in_async_context
        assert not in_async_context()
        import asyncio

        @asyncflow.task
        async def where():
            return asyncio.get_running_loop()

        @asyncflow.flow
        async def main():
            assert in_async_context()
            return await where() is asyncio.get_running_loop()

        assert asyncio.run(main()) is True
        assert not in_async_context()
    """
    assert loaded_after(code, tmp_path, {"asyncio"}) == ["asyncio"]


def test_task_keys_and_cache_keys_are_the_md5_digests_hashlib_gives():
    """The built-in md5 that keeps OpenSSL off the import path gives hashlib's digests: task keys and
    cache keys stay what earlier versions stored."""
    import hashlib

    from asyncflow._digest import md5

    for data in (b"", b"hello|hello", "é|ü".encode() * 1000):
        assert md5(data).hexdigest() == hashlib.md5(data).hexdigest()
        digest, reference = md5(), hashlib.md5()
        digest.update(data[:3]), reference.update(data[:3])
        digest.update(data[3:]), reference.update(data[3:])
        assert digest.digest() == reference.digest()


def test_the_default_cache_policy_is_looked_up_when_read(tmp_path):
    code = """
        import sys
        import asyncflow

        @asyncflow.task
        def plain():
            return 1

        assert "asyncflow._caching" not in sys.modules
        from asyncflow.cache_policies import DEFAULT
        assert plain.cache_policy is DEFAULT and plain.caching.policy is DEFAULT
        assert plain.with_options(name="copy").cache_policy is DEFAULT
    """
    assert loaded_after(code, tmp_path, {"asyncflow._caching"}) == ["asyncflow._caching"]


def test_an_attrs_parameter_is_resolved_with_attrs_imported_only_then(tmp_path):
    """Parameters are searched for futures inside attrs instances without `import attrs` in asyncflow:
    a class is recognised by its `__attrs_attrs__`, and attrs is imported when one is met."""
    code = """
        import sys
        import asyncflow

        @asyncflow.task
        def one():
            return 1

        @asyncflow.task
        def read(box):
            return box.value

        @asyncflow.flow
        def main():
            assert "attrs" not in sys.modules and "attr" not in sys.modules
            import attrs

            @attrs.frozen
            class Box:
                value: object

            return read(Box(one.submit()))

        assert main() == 1
    """
    assert loaded_after(code, tmp_path, {"attrs"}) == ["attrs"]
