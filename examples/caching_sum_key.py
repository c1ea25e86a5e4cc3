"""Seed: flow and task configuration tutorial, "Cache key function" — a custom key: the sum of the inputs.

The seed runs `test_caching` with [2,2], [2,2] (cached), [1,3] (same sum: cached) and [2,3] (runs); this
script does the same four calls in one process. The "expensive" sleep is shortened from 3 s to 0.3 s.
"""
from asyncflow import flow, task
from datetime import timedelta
import time

def cache_key_from_sum(context, parameters):
    print(parameters)
    return sum(parameters["nums"])

@task(cache_key_fn=cache_key_from_sum, cache_expiration=timedelta(minutes=1))
def cached_task(nums):
    print('running an expensive operation')  
    time.sleep(0.3)
    return sum(nums)

@flow
def test_caching(nums):
    cached_task(nums)

if __name__ == "__main__":
    test_caching([2,2])
    test_caching([2,2])
    test_caching([1,3])
    test_caching([2,3])
