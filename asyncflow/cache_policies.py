"""Cache policies (Prefect's `prefect.cache_policies`): how a task run's cache key is computed.

    @task(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(hours=1))
    @task(cache_policy=INPUTS - "debug")     # every input but `debug`
"""

from ._caching import DEFAULT as DEFAULT
from ._caching import FLOW_PARAMETERS as FLOW_PARAMETERS
from ._caching import INPUTS as INPUTS
from ._caching import NO_CACHE as NO_CACHE
from ._caching import RUN_ID as RUN_ID
from ._caching import TASK_SOURCE as TASK_SOURCE
from ._caching import CacheKeyFnPolicy as CacheKeyFnPolicy
from ._caching import CachePolicy as CachePolicy
from ._caching import CompoundCachePolicy as CompoundCachePolicy
from ._caching import FlowParameters as FlowParameters
from ._caching import Inputs as Inputs
from ._caching import NoCache as NoCache
from ._caching import RunId as RunId
from ._caching import TaskSource as TaskSource

__all__ = [
    "DEFAULT", "FLOW_PARAMETERS", "INPUTS", "NO_CACHE", "RUN_ID", "TASK_SOURCE", "CacheKeyFnPolicy", "CachePolicy",
    "CompoundCachePolicy", "FlowParameters", "Inputs", "NoCache", "RunId", "TaskSource",
]
