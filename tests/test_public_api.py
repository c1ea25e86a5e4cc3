"""The public surface is explicit: these names, at Prefect's import paths, and nothing private leaks."""

import importlib

import pytest

import asyncflow

PUBLIC = {
    "asyncflow": {"Flow", "State", "Task", "allow_failure", "flow", "get_client", "get_run_logger", "tags", "task",
                  "transaction", "unmapped"},
    "asyncflow.client": {"AsyncflowClient", "Change", "LogRecord", "ObjectAlreadyExists", "ObjectNotFound", "Page",
                         "RunFilter", "StateCount", "SyncAsyncflowClient", "TaskRunTimeline", "Timeline", "get_client"},
    "asyncflow.client.orchestration": {"AsyncflowClient", "SyncAsyncflowClient", "get_client"},
    "asyncflow.client.schemas": {"ConcurrencyLimit", "ConcurrencyLimitCreate", "GlobalConcurrencyLimitCreate",
                                 "GlobalConcurrencyLimitResponse", "GlobalConcurrencyLimitUpdate"},
    "asyncflow.client.schemas.actions": {"ConcurrencyLimitCreate", "GlobalConcurrencyLimitCreate",
                                         "GlobalConcurrencyLimitUpdate"},
    "asyncflow.client.schemas.objects": {"ConcurrencyLimit"},
    "asyncflow.client.schemas.responses": {"GlobalConcurrencyLimitResponse"},
    "asyncflow.cache_policies": {"DEFAULT", "FLOW_PARAMETERS", "INPUTS", "NO_CACHE", "RUN_ID", "TASK_SOURCE",
                                 "CacheKeyFnPolicy", "CachePolicy", "CompoundCachePolicy", "FlowParameters", "Inputs",
                                 "NoCache", "RunId", "TaskSource"},
    "asyncflow.transactions": {"AsyncTransaction", "CommitMode", "IsolationLevel", "Transaction", "TransactionState",
                               "atransaction", "get_transaction", "transaction"},
    "asyncflow.tasks": {"Task", "exponential_backoff", "task", "task_input_hash"},
    "asyncflow.locking": {"FileSystemLockManager", "LockManager", "MemoryLockManager"},
    "asyncflow.locking.memory": {"MemoryLockManager"},
    "asyncflow.locking.filesystem": {"FileSystemLockManager"},
    "asyncflow.locking.protocol": {"LockManager"},
    "asyncflow.flows": {"Flow", "flow"},
    "asyncflow.logging": {"disable_run_logger", "get_logger", "get_run_logger"},
    "asyncflow.context": {"FlowRunContext", "TaskRunContext", "get_run_context", "tags"},
    "asyncflow.futures": {"DoneAndNotDoneFutures", "PrefectFuture", "TaskRunFuture", "TaskRunFutureList",
                          "as_completed",
                          "wait"},
    "asyncflow.task_runners": {"Capabilities", "ConcurrentTaskRunner", "Outcome", "ProcessPoolOptions",
                               "ProcessPoolTaskRunner", "RunSnapshot", "RunnerOptions", "SequentialTaskRunner",
                               "TaskRunner", "ThreadPoolOptions", "ThreadPoolTaskRunner", "UnpicklableWorkError",
                               "WorkItem", "WorkerDiedError"},
    "asyncflow.utilities.annotations": {"BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"},
    "asyncflow.concurrency": {"AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError"},
    "asyncflow.concurrency.sync": {"AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError",
                                   "concurrency", "rate_limit"},
    "asyncflow.concurrency.asyncio": {"AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError",
                                      "concurrency", "rate_limit"},
    "asyncflow.testing": {"FakeClock", "VirtualTimeLoop", "fake_clock", "isolated_home", "isolated_store",
                          "state_names", "temporary_settings"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_exactly_the_declared_ones(module_name):
    module = importlib.import_module(module_name)
    assert set(module.__all__) == PUBLIC[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_states_module_has_every_state_constructor():
    from asyncflow import states

    for name in ["State", "StateType", "Completed", "Failed", "Crashed", "Cancelled", "Pending", "Running",
                 "Scheduled", "Retrying", "AwaitingRetry", "TimedOut", "Cached"]:
        assert name in states.__all__


def test_runtime_modules_expose_run_attributes():
    from asyncflow.runtime import flow_run, task_run

    assert {"id", "name", "flow_name", "parameters", "tags"} <= set(dir(flow_run))
    assert {"id", "name", "task_name", "parameters", "tags", "run_count"} <= set(dir(task_run))


def test_version_is_a_string():
    assert isinstance(asyncflow.__version__, str)
